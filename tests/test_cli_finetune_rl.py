import json

import pytest
import torch
from helpers import tiny_model

from vlm.cli import finetune_rl
from vlm.data.shapes import ShapesDataset
from vlm.model.checkpoint import load_model, save_model
from vlm.model.tokenizer import Tokenizer
from vlm.posttrain.reward import RewardModel, save_reward_model

QUICK = ["--train-samples", "4", "--eval-samples", "3", "--max-steps", "1", "--batch-size", "2"]
QUICK += ["--samples-per-image", "2", "--max-new-tokens", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    model_dir, reward_dir = tmp_path_factory.mktemp("model"), tmp_path_factory.mktemp("reward")
    tokenizer = Tokenizer.build(ShapesDataset("val", num_images=50).texts())
    model = tiny_model(tokenizer)
    save_model(model_dir, model, tokenizer)
    reward_model = RewardModel(model)
    torch.nn.init.normal_(reward_model.head.weight, generator=torch.Generator().manual_seed(0))  # not indifferent
    save_reward_model(reward_dir, reward_model, tokenizer)
    return model_dir, reward_dir


@pytest.mark.parametrize("reward", ["cider", "reward-model"])
def test_finetunes_and_reports_cider_before_and_after(checkpoints, reward, tmp_path, capsys):
    model_dir, reward_dir = checkpoints
    argv = ["--checkpoint", str(model_dir), "--out-dir", str(tmp_path), "--reward", reward]
    finetune_rl.main(argv + ["--reward-model", str(reward_dir)] + QUICK)
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["before"]["images"] == metrics["after"]["images"] == 3 and metrics["reward"] == reward
    assert "before: CIDEr-D" in out and "after:  CIDEr-D" in out and "objects named correctly" in out
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert (tmp_path / "eval-after" / "report.html").is_file()
    load_model(tmp_path / "model")


def test_a_step_on_a_reward_that_tells_the_samples_apart_moves_the_weights(checkpoints, tmp_path):
    """The reward model's head is random, so the samples' advantages are not all 0. One AdamW step at lr 1e-3
    moves a weight with a gradient by about 1e-3; weight decay alone moves a weight w by 5e-5 |w|."""
    model_dir, reward_dir = checkpoints
    argv = ["--checkpoint", str(model_dir), "--out-dir", str(tmp_path), "--reward", "reward-model"]
    finetune_rl.main(argv + ["--reward-model", str(reward_dir), "--lr", "1e-3", "--warmup-steps", "1"] + QUICK)
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] != 0.0
    start, finetuned = load_model(model_dir)[0].state_dict(), load_model(tmp_path / "model")[0].state_dict()
    assert max(float((start[name] - finetuned[name]).abs().max()) for name in start) > 5e-4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "shapes_vqa"], "--data shapes_vqa is a question set"),
        (["--max-steps", "0"], "--max-steps must be at least 1, got 0"),
        (["--temperature", "0"], "--temperature must be above 0"),
        (["--reward", "reward-model", "--reward-model", "nowhere"], "checkpoint folder 'nowhere' does not exist"),
    ],
)
def test_user_mistakes_exit_2_with_a_message(checkpoints, argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        finetune_rl.main(["--checkpoint", str(checkpoints[0]), "--out-dir", str(tmp_path)] + QUICK + argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
