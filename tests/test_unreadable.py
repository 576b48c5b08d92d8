import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_odd_images

from vlm.cli.train import main as train_main
from vlm.data.coco import CocoCaptions
from vlm.data.mixture import TokenizedDataset
from vlm.data.transforms import build_transform
from vlm.data.unreadable import ReplacingUnreadable, collate_reporting_unreadable, readable
from vlm.model.tokenizer import Tokenizer

GOOD = ["rgb.jpg", "gray.png", "cmyk.jpg", "rgba.png", "palette.png", "gray16.png", "exif_rotated.jpg"]
BAD = ["empty.jpg", "truncated.jpg", "text.jpg"]


def write_coco_split(root: Path, folder: str, odd: dict[str, Path], names: list[str], first_id: int) -> None:
    """root/annotations/captions_<folder>.json and root/<folder>/ in COCO's layout, two captions per image."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations = [], []
    for image_id, name in enumerate(names, start=first_id):
        shutil.copy(odd[name], root / folder / name)
        images.append({"id": image_id, "file_name": name})
        for caption in ("a picture of a thing", "a thing in a picture"):
            annotations.append({"id": len(annotations), "image_id": image_id, "caption": caption})
    data = {"images": images, "annotations": annotations}
    (root / "annotations" / f"captions_{folder}.json").write_text(json.dumps(data))


@pytest.fixture
def coco_with_bad_files(tmp_path) -> Path:
    """A COCO 2017 layout whose train2017 holds 7 good images and an empty, a truncated and a text file."""
    odd = make_odd_images(tmp_path / "odd")
    root = tmp_path / "coco"
    write_coco_split(root, "train2017", odd, GOOD + BAD, first_id=1)
    write_coco_split(root, "val2017", odd, GOOD[:3], first_id=100)
    return root


def train_argv(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--preset",
        "tiny",
        "--data",
        "coco",
        "--coco-root",
        str(root),
        "--max-steps",
        "10",
        "--batch-size",
        "4",
        "--eval-every",
        "10",
        "--log-every",
        "5",
        "--val-samples",
        "2",
        "--dtype",
        "float32",
        "--time-budget-min",
        "0",
        "--out-dir",
        str(out),
        *extra,
    ]


def test_training_replaces_unreadable_images_names_each_once_and_counts_them(coco_with_bad_files, tmp_path, capsys):
    out = tmp_path / "run"
    # One DataLoader worker: the failures are found in the worker process and must reach the main one.
    train_main(train_argv(coco_with_bad_files, out, "--max-unreadable-share", "0.5", "--num-workers", "1"))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    for name in BAD:
        assert captured.err.count(f"train2017/{name}:") == 1, captured.err
    assert "empty file (0 bytes)" in captured.err and "not an image file" in captured.err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "train_loss" in r][-1]
    assert last["step"] == 10 and last["unreadable_images"] == 3 and last["unreadable_reads"] >= 3
    assert "trained 10 steps" in captured.out
    assert "3 training images could not be read" in captured.out


def test_more_unreadable_images_than_the_share_allows_stop_with_one_line_and_exit_2(
    coco_with_bad_files, tmp_path, capsys
):
    # 3 bad of the 9 training images (one of the 10 is held out for validation) is over the default 1%.
    with pytest.raises(SystemExit) as exit_:
        train_main(train_argv(coco_with_bad_files, tmp_path / "run", "--num-workers", "0"))
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in error
    # How many are met before the stop depends on which bad files the first batch draws (1 to 3 of them).
    found = re.search(
        r"vlm-train: error: ([123]) of the 9 training images \((\d+\.\d)%\) could not be read, more", error
    )
    assert found and found.group(2) == f"{int(found.group(1)) / 9:.1%}"[:-1], error
    assert "--max-unreadable-share 0.01 allows" in error


def test_a_draw_whose_image_fails_takes_the_next_readable_sample_with_the_same_seed(tmp_path):
    odd = make_odd_images(tmp_path / "odd")
    root = tmp_path / "coco"
    write_coco_split(root, "train2017", odd, ["empty.jpg", "text.jpg", "rgb.jpg"], first_id=1)
    captions = CocoCaptions(root / "annotations" / "captions_train2017.json", root / "train2017", mode="eval")
    tokenizer = Tokenizer.build(captions.texts())
    tokenized = TokenizedDataset(captions, tokenizer, build_transform(16, train=True), 16)
    example, failures = ReplacingUnreadable(tokenized)[(0, 7)]
    assert [message.split(": ")[1] for message in failures] == [
        "empty file (0 bytes)",
        "not an image file (PIL cannot identify its format)",
    ]
    assert (example.image == tokenized[(2, 7)].image).all()
    batch = collate_reporting_unreadable(
        [(example, failures), ReplacingUnreadable(tokenized)[(2, 7)]], tokenizer.pad_id
    )
    assert batch["unreadable"] == failures and batch["images"].shape == (2, 3, 16, 16)


def test_validation_leaves_out_samples_whose_image_fails_with_a_warning(tmp_path):
    odd = make_odd_images(tmp_path / "odd")
    root = tmp_path / "coco"
    write_coco_split(root, "val2017", odd, ["rgb.jpg", "truncated.jpg", "gray.png"], first_id=1)
    captions = CocoCaptions(root / "annotations" / "captions_val2017.json", root / "val2017", mode="eval")
    with pytest.warns(UserWarning, match="1 of 3 validation samples of coco left out.*truncated.jpg: corrupt"):
        kept = readable(captions, "coco")
    assert [kept[i].image_id for i in range(len(kept))] == [1, 3]


def test_ranks_share_their_unreadable_files_warn_once_on_rank_0_and_stop_together(tmp_path):
    worker = Path(__file__).parent / "ddp_image_failures_worker.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker)]
    result = subprocess.run([*command, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    both = ["a.jpg: empty file (0 bytes)", "b.jpg: truncated"]
    assert rank0["messages"] == rank1["messages"] == both and rank0["reads"] == rank1["reads"] == 3
    assert len(rank0["warnings"]) == 2 and rank1["warnings"] == []
    assert rank0["stopped"] and rank1["stopped"] and rank0["total"] == rank1["total"] == 4
    assert "terminate called" not in result.stderr


def test_a_resumed_run_keeps_the_count_and_names_no_file_twice(coco_with_bad_files, tmp_path, capsys):
    out = tmp_path / "run"
    argv = train_argv(coco_with_bad_files, out, "--max-unreadable-share", "0.5", "--num-workers", "0")
    train_main([*argv, "--eval-every", "5", "--max-steps", "5"])
    first = capsys.readouterr().err
    assert all(f"train2017/{name}:" in first for name in BAD)  # all three met before the checkpoint
    train_main([*argv, "--eval-every", "5", "--resume"])
    second = capsys.readouterr()
    assert "unreadable training image" not in second.err
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "train_loss" in line][-1]
    assert last["step"] == 10 and last["unreadable_images"] == 3
    assert "3 training images could not be read" in second.out
