import json
import runpy
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from vlm.data.batch import encode_text
from vlm.data.coco import CocoCaptions, KarpathyCaptions
from vlm.data.download import download_and_unzip
from vlm.data.errors import AnnotationError, MissingImagesError
from vlm.data.images import ImageLoadError, load_image
from vlm.data.transforms import build_transform
from vlm.model.tokenizer import Tokenizer

# Images of every mode, as a COCO image folder holds them; each gets two captions.
COCO_IMAGES = ["rgb.jpg", "gray.png", "cmyk.jpg", "rgba.png", "palette.png", "gray16.png", "exif_rotated.jpg"]


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def coco_set(root: Path, odd_images: dict[str, Path], names: list[str] = COCO_IMAGES) -> tuple[Path, Path]:
    """captions.json + images/ in COCO's layout; image i has captions "image i caption a/b"."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for image_id, name in enumerate(names, start=1):
        if name in odd_images:
            shutil.copy(odd_images[name], image_dir / name)
        images.append({"id": image_id, "file_name": name, "height": 1, "width": 1})
        for letter in "ab":
            annotations.append(
                {"id": len(annotations), "image_id": image_id, "caption": f"image {image_id} caption {letter}"}
            )
    return write_json(root / "captions.json", {"images": images, "annotations": annotations}), image_dir


def test_coco_train_mode_gives_one_sample_per_caption(tmp_path, odd_images):
    annotation_file, image_dir = coco_set(tmp_path, odd_images)
    dataset = CocoCaptions(annotation_file, image_dir, mode="train")
    assert len(dataset) == 2 * len(COCO_IMAGES) and dataset.num_skipped == 0
    sample = dataset[3]
    assert (sample.image_id, sample.target, sample.task, sample.source) == (2, "image 2 caption b", "caption", "coco")
    assert sample.references == ["image 2 caption a", "image 2 caption b"]
    assert Path(sample.image) == image_dir / "gray.png"


def test_coco_eval_mode_gives_one_sample_per_image_with_all_references(tmp_path, odd_images):
    annotation_file, image_dir = coco_set(tmp_path, odd_images)
    dataset = CocoCaptions(annotation_file, image_dir, mode="eval")
    assert len(dataset) == len(COCO_IMAGES)
    assert [s.image_id for s in dataset] == list(range(1, len(COCO_IMAGES) + 1))
    assert all(s.target == s.references[0] and len(s.references) == 2 for s in dataset)


def test_every_coco_image_loads_and_transforms(tmp_path, odd_images):
    annotation_file, image_dir = coco_set(tmp_path, odd_images)
    transform = build_transform(16, train=True)
    tensors = [transform(load_image(sample.image)) for sample in CocoCaptions(annotation_file, image_dir, "eval")]
    assert torch.stack(tensors).shape == (len(COCO_IMAGES), 3, 16, 16)


def test_captions_are_cleaned_of_stray_whitespace_and_images_without_captions_dropped(tmp_path, odd_images):
    (tmp_path / "images").mkdir()
    shutil.copy(odd_images["rgb.jpg"], tmp_path / "images" / "a.jpg")
    data = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "uncaptioned.jpg"}],
        "annotations": [{"image_id": 1, "caption": "  A dog\n on  a mat. "}],
    }
    dataset = CocoCaptions(write_json(tmp_path / "c.json", data), tmp_path / "images")
    assert [s.target for s in dataset] == ["A dog on a mat."]
    assert dataset.num_skipped == 0  # the uncaptioned image is never needed, so it need not exist


def test_broken_image_files_pass_the_start_up_check_and_fail_by_name_when_loaded(tmp_path, odd_images):
    annotation_file, image_dir = coco_set(tmp_path, odd_images, ["truncated.jpg", "empty.jpg", "text.jpg"])
    dataset = CocoCaptions(annotation_file, image_dir, mode="eval")  # existence only: no decoding at start-up
    assert len(dataset) == 3
    for sample, problem in zip(dataset, ["truncated", "empty file", "not an image"], strict=True):
        with pytest.raises(ImageLoadError, match=rf"{Path(sample.image).name}: .*{problem}"):
            load_image(sample.image)


def test_missing_images_stop_before_training_with_a_count_and_examples(tmp_path, odd_images):
    annotation_file, image_dir = coco_set(tmp_path, odd_images, ["rgb.jpg", "gone.jpg", "gray.png"])
    with pytest.raises(
        MissingImagesError, match=r"1 of 3 images named by .*captions\.json are missing, e\.g\. .*gone\.jpg"
    ):
        CocoCaptions(annotation_file, image_dir)


def test_missing_images_can_be_skipped_and_are_counted(tmp_path, odd_images):
    annotation_file, image_dir = coco_set(tmp_path, odd_images, ["rgb.jpg", "gone.jpg", "gray.png", "lost.jpg"])
    with pytest.warns(UserWarning, match=r"skipping 2 of 4 images .*gone\.jpg, .*lost\.jpg"):
        dataset = CocoCaptions(annotation_file, image_dir, mode="eval", on_missing="skip")
    assert dataset.num_skipped == 2
    assert [Path(s.image).name for s in dataset] == ["rgb.jpg", "gray.png"]


def test_a_missing_image_folder_is_named(tmp_path, odd_images):
    annotation_file, _ = coco_set(tmp_path, odd_images, ["rgb.jpg"])
    with pytest.raises(MissingImagesError, match=r"folder .*nowhere does not exist"):
        CocoCaptions(annotation_file, tmp_path / "nowhere")


GOOD_IMAGE = {"id": 1, "file_name": "rgb.jpg"}
GOOD_CAPTION = {"id": 9, "image_id": 1, "caption": "a red square"}


@pytest.mark.parametrize(
    "data, problem",
    [
        ([GOOD_IMAGE], r"the top level should be an object, got list"),
        ({"images": [GOOD_IMAGE]}, r"the top level has no 'annotations'"),
        ({"images": {}, "annotations": []}, r"the top level: 'images' should be a list, got dict"),
        ({"images": [GOOD_IMAGE, {"id": 2}], "annotations": []}, r"images\[1\] \(id 2\) has no 'file_name'"),
        (
            {"images": [{"id": 1.5, "file_name": "x.jpg"}], "annotations": []},
            r"images\[0\]: 'id' should be an integer or a string, got float",
        ),
        ({"images": [GOOD_IMAGE, GOOD_IMAGE], "annotations": []}, r"images\[1\]: image id 1 appears twice"),
        (
            {"images": [GOOD_IMAGE], "annotations": [GOOD_CAPTION, {"id": 7, "image_id": 1}]},
            r"annotations\[1\] \(id 7\) has no 'caption'",
        ),
        (
            {"images": [GOOD_IMAGE], "annotations": [{"id": 7, "image_id": 1, "caption": " \n"}]},
            r"annotations\[0\] \(id 7\): 'caption' is an empty string",
        ),
        (
            {"images": [GOOD_IMAGE], "annotations": [{"image_id": 1, "caption": 42}]},
            r"annotations\[0\]: 'caption' should be a string, got int 42",
        ),
        (
            {"images": [GOOD_IMAGE], "annotations": [{"image_id": 3, "caption": "x"}]},
            r"annotations\[0\]: 'image_id' 3 is not in 'images'",
        ),
        ({"images": [GOOD_IMAGE], "annotations": ["a caption"]}, r"annotations\[0\] should be an object, got str"),
    ],
)
def test_malformed_coco_files_name_the_file_and_the_first_bad_entry(tmp_path, odd_images, data, problem):
    (tmp_path / "images").mkdir()
    shutil.copy(odd_images["rgb.jpg"], tmp_path / "images" / "rgb.jpg")
    annotation_file = write_json(tmp_path / "bad_captions.json", data)
    with pytest.raises(AnnotationError, match=rf"bad_captions\.json: {problem}"):
        CocoCaptions(annotation_file, tmp_path / "images")


def test_a_file_that_is_not_json_is_named(tmp_path):
    (tmp_path / "captions.json").write_text('{"images": [')
    with pytest.raises(AnnotationError, match=r"captions\.json: not a valid JSON file"):
        CocoCaptions(tmp_path / "captions.json", tmp_path)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(AnnotationError, match=r"binary\.json: not a valid JSON file"):
        CocoCaptions(tmp_path / "binary.json", tmp_path)


def test_bad_arguments_are_named(tmp_path, odd_images):
    annotation_file, image_dir = coco_set(tmp_path, odd_images, ["rgb.jpg"])
    with pytest.raises(FileNotFoundError, match=r"absent\.json: annotation file not found"):
        CocoCaptions(tmp_path / "absent.json", image_dir)
    with pytest.raises(ValueError, match=r"mode must be one of 'train', 'eval', got 'test'"):
        CocoCaptions(annotation_file, image_dir, mode="test")
    with pytest.raises(ValueError, match=r"on_missing must be one of 'error', 'skip', got 'ignore'"):
        CocoCaptions(annotation_file, image_dir, on_missing="ignore")


def test_a_very_long_caption_is_kept_whole_and_cut_at_tokenization_with_the_end_token(tmp_path, odd_images):
    long_caption = " ".join(f"word{i}" for i in range(500))
    (tmp_path / "images").mkdir()
    shutil.copy(odd_images["rgb.jpg"], tmp_path / "images" / "a.jpg")
    data = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "caption": long_caption}]}
    sample = CocoCaptions(write_json(tmp_path / "c.json", data), tmp_path / "images")[0]
    assert sample.target == long_caption
    tokenizer = Tokenizer.build([long_caption])
    ids, is_target = encode_text(tokenizer, sample.question, sample.target, max_len=32)
    assert len(ids) == 32 and len(tokenizer.encode(long_caption)) > 32
    assert ids[-1] == tokenizer.eos_id and is_target[-1]


# --- Karpathy splits ---------------------------------------------------------------------------------------------


def karpathy_set(root: Path, odd_images: dict[str, Path], flickr: bool = False) -> Path:
    """A split file over 5 images: splits train, train, restval, val, test; COCO-style folders unless flickr."""
    splits = ["train", "train", "restval", "val", "test"] if not flickr else ["train", "train", "val", "test"]
    names = ["rgb.jpg", "gray.png", "cmyk.jpg", "palette.png", "exif_rotated.jpg"]
    images = []
    for index, (split, name) in enumerate(zip(splits, names)):
        folder = "" if flickr else ("val2014" if split in ("val", "test", "restval") else "train2014")
        (root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(odd_images[name], root / folder / name)
        entry = {
            "filename": name,
            "imgid": index,
            "split": split,
            "sentids": [2 * index, 2 * index + 1],
            "sentences": [{"raw": f"{split} image {index} sentence {s}.", "tokens": []} for s in range(2)],
        }
        if not flickr:
            entry.update(filepath=folder, cocoid=100 + index)
        images.append(entry)
    return write_json(root / "dataset.json", {"dataset": "flickr8k" if flickr else "coco", "images": images})


@pytest.mark.parametrize(
    "split, ids",
    [("train", [100, 101]), ("restval", [102]), ("train+restval", [100, 101, 102]), ("val", [103]), ("test", [104])],
)
def test_karpathy_splits_select_their_images(tmp_path, odd_images, split, ids):
    dataset = KarpathyCaptions(karpathy_set(tmp_path, odd_images), tmp_path, split=split, mode="eval")
    assert [s.image_id for s in dataset] == ids
    assert all(Path(s.image).is_file() and s.source == "coco" for s in dataset)
    for sample in dataset:  # references say which split and image they were written for
        image_split, _, index = sample.target.split()[:3]
        assert image_split in split.split("+")
        assert sample.references == [f"{image_split} image {index} sentence {i}." for i in range(2)]


def test_karpathy_train_mode_and_image_paths(tmp_path, odd_images):
    dataset = KarpathyCaptions(karpathy_set(tmp_path, odd_images), tmp_path, split="train+restval")
    assert len(dataset) == 6
    assert Path(dataset[4].image) == tmp_path / "val2014" / "cmyk.jpg"  # restval images live in val2014
    assert dataset[5].target == "restval image 2 sentence 1."


def test_karpathy_flickr_images_sit_in_one_folder(tmp_path, odd_images):
    dataset = KarpathyCaptions(karpathy_set(tmp_path, odd_images, flickr=True), tmp_path, split="test", mode="eval")
    (sample,) = list(dataset)
    assert (Path(sample.image), sample.image_id, sample.source) == (tmp_path / "palette.png", 3, "flickr8k")


def test_karpathy_missing_images_error_or_skip(tmp_path, odd_images):
    dataset_json = karpathy_set(tmp_path, odd_images)
    (tmp_path / "train2014" / "gray.png").unlink()
    with pytest.raises(
        MissingImagesError, match=r"1 of 2 images named by .*dataset\.json are missing, e\.g\. .*train2014.gray\.png"
    ):
        KarpathyCaptions(dataset_json, tmp_path, split="train")
    KarpathyCaptions(dataset_json, tmp_path, split="val")  # the missing image is not in val
    with pytest.warns(UserWarning, match="skipping 1 of 2"):
        dataset = KarpathyCaptions(dataset_json, tmp_path, split="train", on_missing="skip")
    assert (dataset.num_skipped, len(dataset)) == (1, 2)


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"split": "train", "sentences": []}, r"images\[0\] has no 'filename'"),
        (
            {"filename": "a.jpg", "split": "dev", "sentences": []},
            r"images\[0\] \(a\.jpg\): 'split' should be train, val, test or restval, got 'dev'",
        ),
        ({"filename": "a.jpg", "split": "train"}, r"images\[0\] \(a\.jpg\) has no 'sentences'"),
        (
            {"filename": "a.jpg", "split": "val", "sentences": [{"raw": "ok"}, {"tokens": ["a"]}]},
            r"images\[0\] \(a\.jpg\) sentences\[1\] has no 'raw'",
        ),
        (
            {"filename": "a.jpg", "split": "test", "sentences": [{"raw": ""}]},
            r"images\[0\] \(a\.jpg\) sentences\[0\]: 'raw' is an empty string",
        ),
        (
            {"filename": "a.jpg", "split": "train", "sentences": [{"raw": ["a"]}]},
            r"images\[0\] \(a\.jpg\) sentences\[0\]: 'raw' should be a string, got list \['a'\]",
        ),
        (
            {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "a"}]},
            r"images\[0\] \(a\.jpg\) has no 'imgid'",
        ),
    ],
)
def test_malformed_karpathy_files_name_the_file_and_the_first_bad_entry(tmp_path, entry, problem):
    dataset_json = write_json(tmp_path / "dataset_bad.json", {"images": [entry]})
    with pytest.raises(AnnotationError, match=rf"dataset_bad\.json: {problem}"):
        KarpathyCaptions(dataset_json, tmp_path, split="train")


def test_karpathy_rejects_an_unknown_split_name(tmp_path, odd_images):
    with pytest.raises(ValueError, match=r"split must be one of .*'train\+restval', got 'training'"):
        KarpathyCaptions(karpathy_set(tmp_path, odd_images), tmp_path, split="training")


# --- data/coco/prepare.py and the download helper -----------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_prepare_script_prints_counts_per_annotation_file_and_split(tmp_path, odd_images, capsys):
    coco_root = tmp_path / "coco"
    annotation_file, image_dir = coco_set(coco_root, odd_images, ["rgb.jpg", "gray.png", "gone.jpg"])
    (coco_root / "annotations").mkdir()
    annotation_file.rename(coco_root / "annotations" / "captions_val2017.json")
    image_dir.rename(coco_root / "val2017")
    karpathy_set(coco_root, odd_images)
    (coco_root / "dataset.json").rename(coco_root / "dataset_coco.json")
    prepare = runpy.run_path(str(REPO / "data" / "coco" / "prepare.py"))
    prepare["main"](["--root", str(coco_root)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["coco", "val2017", "2", "images", "4", "captions", "1", "missing"]
    assert lines[1].split() == ["karpathy", "coco", "train", "2", "images", "4", "captions", "0", "missing"]
    assert [line.split()[2] for line in lines[1:]] == ["train", "restval", "val", "test"]
    with pytest.raises(SystemExit, match=r"no captions_\*\.json or dataset_\*\.json under .*empty"):
        prepare["main"](["--root", str(tmp_path / "empty")])


def test_download_and_unzip_fetches_extracts_and_names_a_bad_archive(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    with zipfile.ZipFile(source / "captions.zip", "w") as archive:
        archive.writestr("annotations/captions_val2017.json", "{}")
    (source / "broken.zip").write_text("<html>not found</html>")
    target = tmp_path / "prepared"
    download_and_unzip((source / "captions.zip").as_uri(), target)
    assert (target / "annotations" / "captions_val2017.json").read_text() == "{}"
    assert not (target / "captions.zip").exists()
    with pytest.raises(ValueError, match=r"broken\.zip: not a zip archive"):
        download_and_unzip((source / "broken.zip").as_uri(), target)


def test_a_batch_decodes_each_image_once_for_all_its_captions_and_gives_the_same_examples(
    tmp_path, odd_images, monkeypatch
):
    import vlm.data.mixture as mixture_module
    from vlm.data.mixture import MixtureSampler, TokenizedDataset

    annotation_file, image_dir = coco_set(tmp_path, odd_images)
    dataset = CocoCaptions(annotation_file, image_dir, mode="train")
    tokenizer = Tokenizer.build(dataset.texts())
    tokenized = TokenizedDataset(dataset, tokenizer, build_transform(16, train=True), max_text_len=16)
    sampler = MixtureSampler([len(dataset)], seed=3, groups=[dataset.image_groups()])
    keys = list(sampler)
    assert all(keys[i][0] // 2 == keys[i + 1][0] // 2 for i in range(0, len(keys), 2))  # captions a, b together
    one_by_one = [tokenized[key] for key in keys]
    decoded = []
    monkeypatch.setattr(
        mixture_module, "load_image", lambda image, *args: decoded.append(image) or load_image(image, *args)
    )
    batch = tokenized.__getitems__(keys)
    assert sorted(decoded) == sorted(set(dataset.image_paths))  # 7 decodes for 14 captions
    for shared, alone in zip(batch, one_by_one):
        assert torch.equal(shared.image, alone.image) and torch.equal(shared.input_ids, alone.input_ids)
