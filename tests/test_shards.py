import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vlm.cli.make_shards import main as make_shards
from vlm.data.catalog import texts_of
from vlm.data.coco import CocoCaptions
from vlm.data.errors import AnnotationError
from vlm.data.images import load_image
from vlm.data.shards import ShardCaptions, ShardStream, write_shards
from vlm.data.transforms import build_transform
from vlm.model.tokenizer import Tokenizer
from vlm.training.loop import Distributed, TrainConfig, TrainState, shard_loader


def coco_photos(root: Path, images: int = 8, captions: int = 3) -> tuple[Path, Path]:
    """A COCO-format set of small distinct JPEGs (and one PNG); image i has captions "image i says c"."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    entries, annotations = [], []
    for image_id in range(images):
        name = f"{image_id:03d}." + ("png" if image_id == 1 else "jpg")
        Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(image_dir / name)
        entries.append({"id": image_id, "file_name": name})
        annotations += [
            {"id": len(annotations), "image_id": image_id, "caption": f"image {image_id} says {c}"}
            for c in range(captions)
        ]
    annotation_file = root / "captions.json"
    annotation_file.write_text(json.dumps({"images": entries, "annotations": annotations}))
    return annotation_file, image_dir


@pytest.fixture
def coco(tmp_path) -> tuple[Path, Path]:
    return coco_photos(tmp_path / "coco")


@pytest.fixture
def shards(tmp_path, coco) -> tuple[Path, CocoCaptions]:
    """8 images of 3 captions as 4 shards of 2 images (6 captions each), and the files' training samples."""
    write_shards(CocoCaptions(*coco, mode="eval"), tmp_path / "shards", "train", shard_size=2)
    return tmp_path / "shards", CocoCaptions(*coco, mode="train")


def rows(samples) -> Counter:
    return Counter((sample.image_id, sample.target) for sample in samples)


def test_shards_give_the_same_samples_and_image_bytes_as_the_files_they_were_written_from(shards, coco):
    folder, files = shards
    assert len(list(folder.glob("train-*.tar"))) == 4
    for mode in ("train", "eval"):
        from_shards, from_files = ShardCaptions(folder, "train", mode), CocoCaptions(*coco, mode=mode)
        assert len(from_shards) == len(from_files)
        for shard_sample, file_sample in zip(from_shards, from_files):
            assert (shard_sample.image_id, shard_sample.target) == (file_sample.image_id, file_sample.target)
            assert shard_sample.references == file_sample.references
            assert shard_sample.image == Path(file_sample.image).read_bytes()
            assert np.array_equal(np.asarray(load_image(shard_sample.image)), np.asarray(load_image(file_sample.image)))
    assert sorted(ShardCaptions(folder, "train").texts()) == sorted(files.texts())


def streamed(stream: ShardStream, workers: int, batch_size: int) -> list[tuple]:
    """(image id, caption, draw seed) of every draw, in the order a DataLoader with `workers` workers gives them."""
    loader = DataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=list, drop_last=True)
    return [(sample.image_id, sample.target, seed) for batch in loader for sample, seed in batch]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_streamed_epoch_takes_every_caption_once_with_its_image_s_captions_together(shards, workers):
    folder, files = shards
    stream = ShardStream(folder)
    stream.configure(batch_size=3, seed=1, workers=workers)
    stream.set_epoch(0)
    draws = streamed(stream, workers, 3)
    assert len(draws) == len(stream) == 24
    assert Counter(draw[:2] for draw in draws) == rows(files)
    assert len({draw[2] for draw in draws}) == 24  # every draw its own augmentation seed
    for start in range(0, 24, 3):  # a worker reads an image's three captions one after another
        assert len({image_id for image_id, _, _ in draws[start : start + 3]}) == 1
    stream.set_epoch(1)
    assert [draw[:2] for draw in streamed(stream, workers, 3)] != [draw[:2] for draw in draws]  # reshuffled


def test_two_processes_stream_distinct_shards_that_cover_the_set_in_equal_numbers_of_batches(shards):
    folder, files = shards
    shares = []
    for rank in (0, 1):
        stream = ShardStream(folder)
        stream.configure(batch_size=2, seed=5, rank=rank, world_size=2, workers=2)
        stream.set_epoch(3)
        shares.append(streamed(stream, 2, 2))
    assert len(shares[0]) == len(shares[1]) == 12  # DDP steps stay in lockstep
    assert not {d[:2] for d in shares[0]} & {d[:2] for d in shares[1]}
    assert Counter(d[:2] for d in shares[0] + shares[1]) == rows(files)
    assert not {d[2] for d in shares[0]} & {d[2] for d in shares[1]}  # and distinct augmentation seeds


def test_unequal_shards_give_every_process_the_same_number_of_batches(tmp_path):
    annotation_file, image_dir = coco_photos(tmp_path / "coco", images=7)
    write_shards(CocoCaptions(annotation_file, image_dir, mode="eval"), tmp_path / "shards", "train", shard_size=2)
    lengths = set()
    for rank in (0, 1):
        stream = ShardStream(tmp_path / "shards")
        stream.configure(batch_size=2, rank=rank, world_size=2, workers=2)
        stream.set_epoch(0)
        lengths.add(len(streamed(stream, 2, 2)))
    assert len(lengths) == 1


@pytest.mark.parametrize(("workers", "taken_batches"), [(2, 3), (2, 4), (0, 5), (3, 7)])
@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on a 2-core machine, on purpose
def test_a_resumed_stream_goes_on_at_the_next_draw(shards, workers, taken_batches):
    folder, _ = shards
    stream = ShardStream(folder)
    stream.configure(batch_size=2, seed=2, rank=1, world_size=2, workers=workers)
    stream.set_epoch(4)
    whole = streamed(stream, workers, 2)
    stream.set_epoch(4, start=taken_batches * 2)
    assert streamed(stream, workers, 2) == whole[taken_batches * 2 :]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on a 2-core machine, on purpose
def test_a_stream_resumes_at_the_next_draw_after_a_worker_has_run_out(tmp_path):
    annotation_file, image_dir = coco_photos(tmp_path / "coco", images=9)  # shards of 12, 12 and 3 captions
    write_shards(CocoCaptions(annotation_file, image_dir, mode="eval"), tmp_path / "shards", "train", shard_size=4)
    stream = ShardStream(tmp_path / "shards")
    stream.configure(batch_size=2, workers=3)  # a shard each: 6, 6 and 1 batches
    stream.set_epoch(0)
    whole = streamed(stream, 3, 2)
    assert len(whole) == 26
    for taken_batches in range(2, 13):  # from the third batch, the worker of the short shard has run out
        stream.set_epoch(0, start=taken_batches * 2)
        assert streamed(stream, 3, 2) == whole[taken_batches * 2 :], taken_batches


def test_too_few_shards_for_the_processes_and_a_missing_index_are_named(shards, tmp_path):
    folder, _ = shards
    with pytest.raises(AnnotationError, match="4 train shards for 8 processes"):
        ShardStream(folder).configure(batch_size=2, world_size=8)
    with pytest.raises(AnnotationError, match="no shard index"):
        ShardStream(tmp_path)
    with pytest.raises(AnnotationError, match="no 'val' shards"):
        ShardCaptions(folder, "val")


def test_make_shards_then_train_on_them_from_the_command_line(tmp_path, capsys):
    from vlm.cli.train import main as train

    annotation_file, image_dir = coco_photos(tmp_path / "coco")
    (tmp_path / "coco" / "annotations").mkdir()
    for folder in ("train2017", "val2017"):
        (tmp_path / "coco" / folder).symlink_to(image_dir)
        (tmp_path / "coco" / "annotations" / f"captions_{folder}.json").write_text(annotation_file.read_text())
    out = tmp_path / "shards"
    make_shards(["--data", "coco", "--coco-root", str(tmp_path / "coco"), "--out", str(out), "--shard-size", "3"])
    # train2017 less the image the coco loader keeps for validation (vlm/data/catalog.py)
    assert "train: 7 images, 21 captions in 3 shards" in capsys.readouterr().out
    run = tmp_path / "run"
    settings = ["--preset", "tiny", "--max-steps", "3", "--batch-size", "4", "--eval-every", "3", "--log-every", "1"]
    train([*settings, "--data", "shards", "--shards-dir", str(out), "--val-samples", "4", "--out-dir", str(run)])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2, 3] and "val_cider" in records[-1]
    with pytest.raises(SystemExit) as stop:
        make_shards(["--data", "shapes_vqa", "--out", str(out), "--splits", "val"])
    assert stop.value.code == 2 and "shards hold caption sets" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        train([*settings, "--data", "shards,shapes", "--shards-dir", str(out), "--out-dir", str(tmp_path / "mixed")])
    assert stop.value.code == 2 and "trains on the shards alone" in capsys.readouterr().err


def test_training_on_shards_killed_after_a_checkpoint_resumes_with_the_same_losses(shards, tmp_path, monkeypatch):
    """The crash falls mid-epoch (24 captions, 4 per step: the step-3 checkpoint is 12 draws in, 6 batches of 2
    taken from two workers in turn), so the losses match only if the stream resumes at the next draw."""
    import torch
    from helpers import killed_after_checkpoint
    from test_train import losses, quick_config

    from vlm.data.catalog import limit
    from vlm.data.transforms import build_transform
    from vlm.model.config import get_preset
    from vlm.model.tokenizer import Tokenizer
    from vlm.training.loop import TrainingData, train

    folder, _ = shards

    def data() -> TrainingData:
        stream = ShardStream(folder)
        return TrainingData(
            train_parts=[stream],
            val=limit(ShardCaptions(folder, "train"), 4),
            tokenizer=Tokenizer.build(stream.texts()),
            train_transform=build_transform(32, train=True),
            eval_transform=build_transform(32),
        )

    settings = dict(batch_size=2, grad_accum=2, max_steps=8, eval_every=3, num_workers=2)
    train(get_preset("tiny"), quick_config(tmp_path / "a", **settings), data())
    uninterrupted = losses(tmp_path / "a" / "run")
    with killed_after_checkpoint(monkeypatch, 3):
        train(get_preset("tiny"), quick_config(tmp_path / "b", **settings), data())
    # Resumed with another worker count: the run keeps the two workers its stream's order was made with.
    resumed_settings = {**settings, "num_workers": 0}
    state = train(get_preset("tiny"), quick_config(tmp_path / "b", **resumed_settings), data(), resume=True)
    assert state.step == 8 and state.stream_workers == 2
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "b" / "run")), torch.tensor(uninterrupted))


def test_a_shard_stream_trains_alone_and_unpacked(shards, tmp_path):
    from test_train import quick_config

    from vlm.model.config import get_preset
    from vlm.training.loop import TrainingData, train

    folder, samples = shards
    stream = ShardStream(folder)
    for index, (parts, packed) in enumerate((([stream, samples], 0), ([stream], 32))):
        data = TrainingData(
            train_parts=parts,
            val=samples,
            tokenizer=Tokenizer.build(stream.texts()),
            train_transform=build_transform(32, train=True),
            eval_transform=build_transform(32),
        )
        with pytest.raises(ValueError, match="a shard stream trains on its own and unpacked"):
            train(get_preset("tiny"), quick_config(tmp_path / str(index), packed_text_len=packed), data)


@pytest.mark.parametrize("blind", [False, True])
def test_the_training_loader_batches_a_stream_as_uint8_images_with_whole_batches_only(shards, tmp_path, blind):
    """vlm.training.loop.shard_loader: 24 captions in batches of 5 give 4 whole batches (the rest dropped, as DDP
    needs equal steps), images kept uint8 for the step to normalise, or zeros when blind."""
    folder, files = shards
    tokenizer = Tokenizer.build(texts_of(files))
    config = TrainConfig(out_dir=str(tmp_path / "run"), batch_size=5, seed=3, blind=blind)
    state = TrainState(stream_workers=0)
    stream = ShardStream(folder)
    loader = shard_loader(stream, tokenizer, build_transform(16, train=True), config, 32, Distributed(), True, state)
    stream.set_epoch(0)
    batches = list(loader)
    assert loader.pin_memory and loader.drop_last and loader.batch_size == 5
    assert len(batches) == 4 and all(b["images"].shape == (5, 3, 16, 16) for b in batches)
    # blind: zeros, which stand for the normalised image; otherwise uint8 pixels
    assert all(b["images"].dtype == (torch.float32 if blind else torch.uint8) for b in batches)
    assert all(bool((b["images"] == 0).all()) == blind for b in batches)
