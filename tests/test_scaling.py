import json
from pathlib import Path

import numpy as np
import pytest
from helpers import ColourSamples

from vlm.data.catalog import texts_of
from vlm.data.transforms import build_transform
from vlm.experiments import scaling
from vlm.experiments.scaling import LadderError, Rung, fit_power_law, flops_per_sample, parse_ladder, predict_then_train
from vlm.model.config import get_preset
from vlm.model.tokenizer import Tokenizer
from vlm.training.loop import RunLog, TrainConfig, TrainingData


@pytest.mark.parametrize("a, b, c", [(2.0, 0.3, 1.5), (0.8, 0.07, 0.4), (5.0, 1.2, 0.0)])
def test_power_law_fit_recovers_known_parameters(a, b, c):
    compute = np.geomspace(1e12, 1e14, 6)
    loss = a * (compute / 1e12) ** -b + c
    fit = fit_power_law(compute, loss)
    assert fit.reference == 1e12
    assert fit.a == pytest.approx(a, rel=1e-3) and fit.b == pytest.approx(b, rel=1e-3)
    assert fit.c == pytest.approx(c, abs=1e-3)
    assert fit.predict(1e15) == pytest.approx(a * 1000**-b + c, rel=1e-4)


def test_power_law_fit_through_noise_predicts_beyond_the_points():
    rng = np.random.default_rng(0)
    compute = np.geomspace(1e10, 3e11, 5)  # a 30x ladder
    truth = 1.7 * (compute / 1e10) ** -0.25 + 0.9
    fit = fit_power_law(compute, truth * (1 + rng.normal(0, 0.003, len(compute))))
    assert fit.predict(3e12) == pytest.approx(1.7 * 300**-0.25 + 0.9, rel=0.03)


@pytest.mark.parametrize(
    "compute, loss, message",
    [([1, 2], [3, 2], "at least 3"), ([1, 0, 2], [3, 2, 1], "positive"), ([2, 2, 2], [3, 2, 1], "same compute")],
)
def test_power_law_fit_rejects_points_it_cannot_fit(compute, loss, message):
    with pytest.raises(ValueError, match=message):
        fit_power_law(compute, loss)


def test_parse_ladder():
    assert parse_ladder("scale-xs:200, tiny:5") == [Rung("scale-xs", 200), Rung("tiny", 5)]
    with pytest.raises(ValueError, match="not PRESET:STEPS"):
        parse_ladder("scale-xs")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        parse_ladder("huge:10")


def test_the_default_ladder_spans_over_30x_and_default_costs_more_than_it():
    def flops(name: str, steps: int) -> float:
        return flops_per_sample(get_preset(name), 15, 12) * steps

    from vlm.cli.scaling import DEFAULT_LADDER, DEFAULT_TARGET

    ladder = [flops(r.preset, r.steps) for r in parse_ladder(DEFAULT_LADDER)]
    [target] = parse_ladder(DEFAULT_TARGET)
    assert ladder == sorted(ladder) and ladder[-1] / ladder[0] >= 30
    assert flops(target.preset, target.steps) > ladder[-1]


def test_predict_then_train_writes_the_prediction_before_the_target_and_reuses_finished_rungs(tmp_path, monkeypatch):
    monkeypatch.setattr(RunLog, "plot", lambda self: None)  # each run's curves.png: most of this test's time
    train_set = ColourSamples(32, seed=0)
    data = TrainingData(
        train_parts=[train_set],
        val=ColourSamples(8, seed=1),
        tokenizer=Tokenizer.build(texts_of(train_set)),
        train_transform=build_transform(32, train=True),
        eval_transform=build_transform(32, train=False),
    )
    base = TrainConfig(batch_size=8, warmup_steps=1, val_batches=1, num_workers=0, dtype="float32", log_every=1)
    ladder = [Rung("tiny", 1), Rung("tiny", 2), Rung("tiny", 4)]
    train, prediction_at_start = scaling.train, {}

    def train_seeing_the_prediction(model_config, config, data, **options):
        """Notes, as each run starts, the prediction on disk (None before the ladder is done)."""
        written = tmp_path / "prediction.json"
        prediction_at_start[Path(config.out_dir).name] = json.loads(written.read_text()) if written.is_file() else None
        return train(model_config, config, data, **options)

    monkeypatch.setattr(scaling, "train", train_seeing_the_prediction)
    with pytest.warns(UserWarning, match="spans 4.0x in compute"):
        report = predict_then_train(ladder, Rung("tiny", 5), base, lambda config: data, tmp_path, log=lambda _: None)
    prediction = json.loads((tmp_path / "prediction.json").read_text())
    assert prediction["predicted_val_loss"] == report["predicted_val_loss"]
    # The ladder trains before there is a prediction; the target's training starts with it written, as final.
    assert prediction_at_start == {"tiny-1": None, "tiny-2": None, "tiny-4": None, "tiny-5": prediction}
    assert prediction["target"] == "tiny-5" and prediction["flops"] == report["target"]["flops"]
    assert report["actual_val_loss"] == json.loads((tmp_path / "tiny-5" / "result.json").read_text())["val_loss"]
    assert [r["steps"] for r in report["ladder"]] == [1, 2, 4] and (tmp_path / "scaling.png").is_file()
    (tmp_path / "tiny-1" / "model" / "model.safetensors").unlink()  # a finished rung is not trained again
    with pytest.warns(UserWarning):
        again = predict_then_train(ladder, Rung("tiny", 5), base, lambda config: data, tmp_path, log=lambda _: None)
    assert again["actual_val_loss"] == report["actual_val_loss"]


def test_a_run_folder_from_other_settings_is_not_reused(tmp_path):
    train_set = ColourSamples(8, seed=0)
    data = TrainingData([train_set], train_set, Tokenizer.build(texts_of(train_set)), None, None)
    (tmp_path / "tiny-1").mkdir()
    stale = {"preset": "tiny", "steps": 1, "parameters": 1, "flops": 1.0, "val_loss": 1.0, "seconds": 1.0}
    (tmp_path / "tiny-1" / "result.json").write_text(json.dumps(stale))
    ladder = [Rung("tiny", 1), Rung("tiny", 2), Rung("tiny", 4)]
    with (
        pytest.raises(LadderError, match="tiny-1 holds a run with another batch size or data"),
        pytest.warns(UserWarning),
    ):
        predict_then_train(ladder, Rung("tiny", 5), TrainConfig(batch_size=8), lambda c: data, tmp_path, log=print)


def test_flops_per_sample_matches_the_counted_flops_of_a_training_step():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vlm.model.masks import prediction_mask
    from vlm.model.vision_language_model import VisionLanguageModel

    config = get_preset("default")
    model = VisionLanguageModel(config)
    # 16 image + 24 text tokens, 16 targets: row counts the training pass does not round up (`rounded_row_count`).
    text_tokens = 24
    input_ids = torch.randint(0, config.decoder.vocab_size, (1, text_tokens))
    attention_mask = torch.ones(1, text_tokens, dtype=torch.bool)
    target_mask = torch.arange(text_tokens).unsqueeze(0) >= 8
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 64, 64), input_ids, attention_mask, target_mask).backward()
    target_tokens = int(prediction_mask(target_mask & attention_mask).sum())
    # The analytic count includes biases and layer norms' neighbours that the counter skips: within 3%.
    assert flops_per_sample(config, text_tokens, target_tokens) == pytest.approx(counter.get_total_flops(), rel=0.03)
