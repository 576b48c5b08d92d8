"""The caption folder data set (`--data folder:PATH`): the Hugging Face image-folder layout, its metadata in JSON
lines or CSV, its split folders, and bad rows and missing images named."""

import json
from pathlib import Path

import pytest
from PIL import Image

from vlm.data.catalog import build_dataset, parse_data_spec
from vlm.data.errors import AnnotationError, MissingImagesError
from vlm.data.folder import CaptionFolder, split_folder


def images(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6), (200, 30, 30)).save(folder / name)
    return folder


def jsonl(folder: Path, *rows) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_reads_metadata_jsonl_with_text_or_captions_and_keeps_other_columns(tmp_path):
    folder = jsonl(
        images(tmp_path, "a.png", "sub/b.jpg"),
        {"file_name": "a.png", "text": "  a red  square ", "scene": {"objects": []}},
        {"file_name": "sub/b.jpg", "captions": ["one", "two"]},
        {"file_name": "a.png", "text": "another caption of a"},
    )
    train = CaptionFolder(folder, mode="train")
    assert [(s.image_id, s.target) for s in train] == [
        ("a.png", "a red square"),
        ("a.png", "another caption of a"),
        ("sub/b.jpg", "one"),
        ("sub/b.jpg", "two"),
    ]
    assert Path(train[2].image) == tmp_path / "sub" / "b.jpg" and train[2].source == "folder"
    assert train[0].meta == {"scene": {"objects": []}} and train[2].meta == {}
    evaluation = CaptionFolder(folder, mode="eval")
    assert [s.references for s in evaluation] == [["a red square", "another caption of a"], ["one", "two"]]


def test_reads_metadata_csv_with_the_same_columns(tmp_path):
    folder = images(tmp_path, "a.png", "b.png")
    (folder / "metadata.csv").write_text(
        'file_name,text,captions\na.png,"a dog, on a mat",\nb.png,,"[""first"", ""second""]"\n'
    )
    dataset = CaptionFolder(folder, mode="eval")
    assert [(s.image_id, s.references) for s in dataset] == [
        ("a.png", ["a dog, on a mat"]),
        ("b.png", ["first", "second"]),
    ]


@pytest.mark.parametrize(
    "rows, message",
    [
        (['{"file_name": "a.png", "text": "ok"}', "{not json"], "metadata.jsonl: line 2: not valid JSON"),
        ([{"file_name": "a.png", "text": "ok"}, {"text": "no file"}], "line 2: no 'file_name'"),
        ([{"file_name": "a.png"}], "line 1: no 'text' or 'captions' for a.png"),
        ([{"file_name": "a.png", "text": "  "}], "line 1: 'text' should be a non-empty string"),
        ([{"file_name": "a.png", "captions": "not a list"}], "line 1: 'captions' should be a non-empty list"),
        ([{"file_name": "a.png", "captions": []}], "line 1: 'captions' should be a non-empty list"),
        ([{"file_name": "a.png", "text": "x", "captions": ["y"]}], "line 1: both 'text' and 'captions'"),
        (["", '["a.png", "text"]'], "line 2: should be an object"),
    ],
)
def test_bad_jsonl_rows_are_named_by_line(tmp_path, rows, message):
    folder = jsonl(images(tmp_path, "a.png"), *rows)
    with pytest.raises(AnnotationError, match=message.replace("(", r"\(").replace("[", r"\[")):
        CaptionFolder(folder)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,caption\na.png,x\n", "line 1: the header needs file_name and text"),
        ("file_name,text\na.png,fine\nb.png\n", "line 3: 'text' should be|line 3: no 'text'"),
        ("file_name,text\na.png,x,extra\n", "line 2: 3 cells for 2 columns"),
        ("file_name,captions\na.png,[oops\n", "line 2: 'captions' should be a JSON list"),
    ],
)
def test_bad_csv_rows_are_named_by_line(tmp_path, text, message):
    folder = images(tmp_path, "a.png", "b.png")
    (folder / "metadata.csv").write_text(text)
    with pytest.raises(AnnotationError, match=message):
        CaptionFolder(folder)


def test_missing_images_are_named_or_skipped(tmp_path):
    folder = jsonl(
        images(tmp_path, "a.png"), {"file_name": "a.png", "text": "x"}, {"file_name": "gone.png", "text": "y"}
    )
    with pytest.raises(MissingImagesError, match=r"1 of 2 images named by .*metadata.jsonl are missing.*gone.png"):
        CaptionFolder(folder)
    with pytest.warns(UserWarning, match="gone.png"):
        dataset = CaptionFolder(folder, on_missing="skip")
    assert [s.image_id for s in dataset] == ["a.png"] and dataset.num_skipped == 1


def test_a_folder_without_metadata_or_with_two_metadata_files_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metadata.jsonl or metadata.csv"):
        CaptionFolder(images(tmp_path, "a.png"))
    jsonl(tmp_path, {"file_name": "a.png", "text": "x"})
    (tmp_path / "metadata.csv").write_text("file_name,text\na.png,x\n")
    with pytest.raises(AnnotationError, match="both metadata.jsonl and metadata.csv"):
        CaptionFolder(tmp_path)


def test_splits_are_subfolders_and_validation_falls_back_to_test(tmp_path):
    for split in ("train", "test"):
        jsonl(images(tmp_path / split, f"{split}.png"), {"file_name": f"{split}.png", "text": f"a {split} image"})
    assert split_folder(tmp_path, "train") == tmp_path / "train"
    assert split_folder(tmp_path, "val") == tmp_path / "test"
    (tmp_path / "validation").mkdir()
    assert split_folder(tmp_path, "val") == tmp_path / "validation"
    [(name, weight)] = parse_data_spec(f"folder:{tmp_path}:2")
    assert (name, weight) == (f"folder:{tmp_path}", 2.0)
    assert [s.target for s in build_dataset(name, "test")] == ["a test image"]


def test_a_folder_without_split_folders_is_training_data(tmp_path):
    jsonl(images(tmp_path, "a.png"), {"file_name": "a.png", "text": "x"})
    assert split_folder(tmp_path, "train") == tmp_path
    with pytest.warns(UserWarning, match="validating on the training images"):
        assert split_folder(tmp_path, "val") == tmp_path
    with pytest.raises(FileNotFoundError, match="no test/ folder"):
        split_folder(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="caption folder not found"):
        split_folder(tmp_path / "nowhere", "train")
