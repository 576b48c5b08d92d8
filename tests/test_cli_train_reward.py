import json

import pytest
from helpers import tiny_model

from vlm.cli import train_reward
from vlm.data.shapes import ShapesDataset
from vlm.model.checkpoint import save_model
from vlm.model.tokenizer import Tokenizer
from vlm.posttrain.reward import load_reward_model


@pytest.fixture(scope="module")
def shapes_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    tokenizer = Tokenizer.build(ShapesDataset("val", num_images=50).texts())
    save_model(directory, tiny_model(tokenizer), tokenizer)
    return directory


def test_trains_a_reward_model_and_reports_accuracy_per_kind(shapes_checkpoint, tmp_path, capsys):
    argv = ["--checkpoint", str(shapes_checkpoint), "--out-dir", str(tmp_path), "--device", "cpu"]
    argv += ["--train-samples", "8", "--eval-samples", "6", "--max-steps", "2", "--batch-size", "4"]
    train_reward.main(argv)
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    kinds = {"colour", "shape", "count", "relation", "other_image", "wrong_answer"}
    assert set(metrics["pairwise_accuracy"]) == kinds | {"all"} and set(metrics["held_out_pairs"]) == kinds
    assert all(f"  {kind}" in out for kind in kinds)
    model, _ = load_reward_model(tmp_path / "model")
    assert model.backbone.config.vision.image_size == 32


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-steps", "0"], "--max-steps must be at least 1, got 0"),
        (["--data", "pictures"], "unknown data set 'pictures'"),
        (["--checkpoint", "nowhere"], "checkpoint folder 'nowhere' does not exist"),
    ],
)
def test_user_mistakes_exit_2_with_a_message(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_reward.main(argv + ["--out-dir", str(tmp_path)])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
