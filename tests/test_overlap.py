import json
import shutil
from pathlib import Path

import pytest
from conftest import make_odd_images
from test_unreadable import GOOD, write_coco_split

from vlm.cli.evaluate import main as evaluate_main
from vlm.cli.train import main as train_main
from vlm.data.catalog import DataPaths, build_dataset
from vlm.data.coco import validation_images

# COCO 2017 train holds most of the Karpathy test images (both come from COCO 2014 val): here ids 104 and 105.
COCO_TRAIN_IDS = [1, 2, 3, 4, 5, 6, 104, 105]
KARPATHY = {"test": [104, 105, 200], "val": [300, 301]}


def write_karpathy(root: Path, odd: dict[str, Path]) -> Path:
    (root / "val2014").mkdir(parents=True)
    images = []
    for split, ids in KARPATHY.items():
        for cocoid in ids:
            name = f"COCO_val2014_{cocoid:012d}.jpg"
            shutil.copy(odd["rgb.jpg"], root / "val2014" / name)
            sentences = [{"raw": "a picture of a thing"}, {"raw": "a thing in a picture"}]
            entry = {"filename": name, "filepath": "val2014", "split": split, "cocoid": cocoid, "sentences": sentences}
            images.append(entry)
    (root / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": images}))
    return root / "dataset_coco.json"


@pytest.fixture(scope="module")
def trained_on_coco_2017(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model trained on a COCO 2017 train set whose ids include Karpathy test images; the Karpathy file."""
    tmp = tmp_path_factory.mktemp("overlap")
    odd = make_odd_images(tmp / "odd")
    names = (GOOD * 2)[: len(COCO_TRAIN_IDS)]
    write_coco_split(tmp / "coco", "train2017", odd, names, first_id=1)
    annotations = tmp / "coco" / "annotations" / "captions_train2017.json"
    data = json.loads(annotations.read_text())
    for image, image_id in zip(data["images"], COCO_TRAIN_IDS):  # renumber: ids 1..6, 104, 105
        for caption in data["annotations"]:
            caption["image_id"] = image_id if caption["image_id"] == image["id"] else caption["image_id"]
        image["id"] = image_id
    annotations.write_text(json.dumps(data))
    run = tmp / "run"
    argv = ["--preset", "tiny", "--data", "coco", "--coco-root", str(tmp / "coco"), "--max-steps", "2"]
    argv += ["--batch-size", "2", "--eval-every", "2", "--val-samples", "1", "--num-workers", "0"]
    train_main(argv + ["--dtype", "float32", "--time-budget-min", "0", "--out-dir", str(run)])
    return run, write_karpathy(tmp / "karpathy", odd)


def evaluate(run: Path, karpathy: Path, split: str, *extra: str) -> int:
    argv = ["--checkpoint", str(run / "model"), "--data", "karpathy", "--split", split, "--karpathy-json"]
    argv += [str(karpathy), "--karpathy-images", str(karpathy.parent), "--builtin-only", "--max-new-tokens", "2"]
    try:
        evaluate_main(argv + ["--out", str(run / f"eval-{split}"), *extra])
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_evaluation_refuses_karpathy_test_images_that_coco_2017_train_holds(trained_on_coco_2017, capsys):
    run, karpathy = trained_on_coco_2017
    trained = set(COCO_TRAIN_IDS) - validation_images(COCO_TRAIN_IDS)
    seen = sorted(set(KARPATHY["test"]) & trained)
    assert seen  # the fixture reproduces the overlap
    assert json.loads((run / "train_images.json").read_text()) == {"coco": sorted(trained)}
    assert evaluate(run, karpathy, "test") == 2
    error = capsys.readouterr().err
    assert f"vlm-evaluate: error: {len(seen)} of the 3 images of --data karpathy --split test are among the" in error
    assert f"e.g. image ids {', '.join(map(str, seen))}: scores on them would be inflated" in error
    assert "--allow-overlap" in error and "Traceback" not in error
    assert not (run / "eval-test").exists()


def test_allow_overlap_evaluates_anyway_with_a_warning(trained_on_coco_2017, capsys):
    run, karpathy = trained_on_coco_2017
    assert evaluate(run, karpathy, "test", "--allow-overlap") == 0
    assert "evaluating on them as --allow-overlap asks" in capsys.readouterr().err
    assert (run / "eval-test" / "metrics.json").is_file()


def test_images_the_run_did_not_train_on_are_evaluated(trained_on_coco_2017, capsys):
    run, karpathy = trained_on_coco_2017
    assert evaluate(run, karpathy, "val") == 0
    assert "among the training images" not in capsys.readouterr().err
    assert (run / "eval-val" / "metrics.json").is_file()


def test_coco_validation_is_carved_from_train_and_test_is_val2017(tmp_path):
    odd = make_odd_images(tmp_path / "odd")
    write_coco_split(tmp_path, "train2017", odd, GOOD * 30, first_id=1)  # 210 images: 2 held out (1%)
    write_coco_split(tmp_path, "val2017", odd, GOOD, first_id=1000)
    paths = DataPaths(coco_root=str(tmp_path))
    ids = {split: {s.image_id for s in build_dataset("coco", split, paths, mode="eval")} for split in ("train", "val")}
    test = {s.image_id for s in build_dataset("coco", "test", paths, mode="eval")}
    assert len(ids["val"]) == 2 and not ids["val"] & ids["train"] and ids["val"] | ids["train"] == set(range(1, 211))
    assert test == set(range(1000, 1007))
    assert ids["val"] == validation_images(list(reversed(range(1, 211))))  # not the file's order that decides
