import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from helpers import ColourSamples, killed_after_checkpoint, tiny_model, tiny_tokenizer
from safetensors.torch import load_file

import vlm.data.mixture as mixture_module
import vlm.training.loop as train_module
from vlm.data.batch import encode_packed
from vlm.data.catalog import texts_of
from vlm.data.mixture import MixtureSampler, TokenizedDataset
from vlm.data.packing import group_by_image
from vlm.data.transforms import build_transform
from vlm.model.checkpoint import load_model
from vlm.model.config import get_preset
from vlm.model.tokenizer import Tokenizer
from vlm.training.budget import planned_step_count
from vlm.training.loop import TrainConfig, TrainingData, TrainingDiverged, lr_factor, train


def colour_data(count: int = 64) -> TrainingData:
    train_set, val_set = ColourSamples(count, seed=0), ColourSamples(16, seed=1)
    return TrainingData(
        train_parts=[train_set],
        val=val_set,
        tokenizer=Tokenizer.build(texts_of(train_set)),
        train_transform=build_transform(32, train=True),
        eval_transform=build_transform(32, train=False),
    )


def quick_config(tmp_path: Path, **overrides) -> TrainConfig:
    settings = dict(
        out_dir=str(tmp_path / "run"),
        max_steps=12,
        batch_size=8,
        warmup_steps=2,
        eval_every=4,
        log_every=1,
        val_batches=1,
        num_workers=0,
        dtype="float32",
        lr_decoder=3e-3,
        lr_projector=3e-3,
        lr_encoder=3e-3,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def caption_data() -> TrainingData:
    """`colour_data` with its captions alone, every one three tokens long: batches of equal size hold equally many
    target tokens, so the token mean of a batch is the mean of its halves' token means."""
    data = colour_data()
    data.train_parts = [[sample for sample in ColourSamples(64) if sample.question is None]]
    assert {len(data.tokenizer.encode(sample.target)) for sample in data.train_parts[0]} == {3}
    return data


# The run that tests/ddp_worker.py makes on each of two processes, with batches of DDP_BATCH per process.
DDP_SETTINGS = dict(max_steps=6, eval_every=3, log_every=1)
DDP_BATCH = 4


def losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in records if "train_loss" in r]


def test_tiny_model_loss_falls_and_run_folder_is_complete(tmp_path):
    config = quick_config(tmp_path, max_steps=60, eval_every=20)
    state = train(get_preset("tiny"), config, colour_data())
    run = tmp_path / "run"
    assert state.step == 60
    curve = losses(run)
    assert len(curve) == 60 and sum(curve[-5:]) / 5 < 0.5 * sum(curve[:5]) / 5
    for name in (
        "config.json",
        "metrics.jsonl",
        "curves.png",
        "model/model.safetensors",
        "checkpoints/last/optimizer.safetensors",
    ):
        assert (run / name).is_file(), name
    model, _ = load_model(run / "model")
    resolved = json.loads((run / "config.json").read_text())  # what the model card and a resumed run read
    expected = {"model": model.config.to_dict(), "train": asdict(config), "world_size": 1}
    assert resolved == json.loads(json.dumps(expected))  # tuples as JSON lists


def test_each_validation_is_logged_with_the_step_and_the_generation_metrics(tmp_path, capsys):
    """Every eval_every steps and at the end: the validation loss and what on_validate returns for that step, in
    one metrics.jsonl record and one printed line."""
    seen = []

    def on_validate(model, step):
        seen.append(step)
        return {"val_answer_accuracy": step / 100}

    train(
        get_preset("tiny"), quick_config(tmp_path, max_steps=10, eval_every=4), colour_data(), on_validate=on_validate
    )
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "val_loss" in r]
    assert seen == [4, 8, 10]
    assert [(r["step"], r["val_answer_accuracy"]) for r in validations] == [(4, 0.04), (8, 0.08), (10, 0.1)]
    assert all(r["val_loss"] > 0 for r in validations)
    printed = [line for line in capsys.readouterr().out.splitlines() if "val_loss=" in line]
    assert printed == [
        f"step={r['step']} val_loss={r['val_loss']:.4g} val_answer_accuracy={r['val_answer_accuracy']:.4g}"
        for r in validations
    ]


def test_packed_training_loss_falls(tmp_path):
    data = colour_data()
    data.train_parts = [ColourSamples(32, seed=0, both_tasks=True)]
    config = quick_config(tmp_path, max_steps=40, eval_every=20, packed_text_len=32)
    train(get_preset("tiny"), config, data)
    curve = losses(tmp_path / "run")
    assert len(curve) == 40 and sum(curve[-5:]) / 5 < 0.5 * sum(curve[:5]) / 5


def test_a_blind_run_trains_and_validates_on_no_image(tmp_path):
    """Blind, two data sets that differ only in their images train alike, losses and weights; seeing, they do not."""
    from PIL import ImageOps

    def with_inverted_images(samples):
        return [replace(sample, image=ImageOps.invert(sample.image)) for sample in samples]

    def run(data, blind):
        run_dir = tmp_path / f"{len(list(tmp_path.iterdir()))}"
        train(get_preset("tiny"), quick_config(run_dir, max_steps=4, eval_every=2, blind=blind), data)
        records = [json.loads(line) for line in (run_dir / "run" / "metrics.jsonl").read_text().splitlines()]
        weights = load_file(run_dir / "run" / "model" / "model.safetensors")
        return [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in records], weights

    inverted = colour_data()
    inverted.train_parts = [with_inverted_images(inverted.train_parts[0])]
    inverted.val = with_inverted_images(inverted.val)
    for blind in (True, False):
        (losses_a, weights_a), (losses_b, weights_b) = run(colour_data(), blind), run(inverted, blind)
        same = losses_a == losses_b and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
        assert same == blind, blind


def test_a_run_draws_its_parts_in_the_mixture_weights_with_epochs_of_epoch_size(tmp_path, monkeypatch):
    drawn = []  # the training order's draws, as indices into the parts one after the other

    class RecordedSampler(MixtureSampler):
        def __iter__(self):
            for index, seed in super().__iter__():
                drawn.append(index)
                yield index, seed

    monkeypatch.setattr(train_module, "MixtureSampler", RecordedSampler)
    data = colour_data()
    data.train_parts = [ColourSamples(32, seed=0), ColourSamples(32, seed=2)]
    config = quick_config(tmp_path, max_steps=24, eval_every=24, weights=[3.0, 1.0], epoch_size=16)
    state = train(get_preset("tiny"), config, data)
    share_of_first = sum(index < 32 for index in drawn) / len(drawn)
    assert len(drawn) == 24 * 8 and 0.65 < share_of_first < 0.85  # 3:1, not the parts' sizes' 1:1
    assert state.position <= 16 and state.epoch * 16 + state.position == 24 * 8


@pytest.mark.parametrize("packed_text_len", [12, 40])
def test_a_packed_run_fills_its_rows_up_to_packed_text_len(tmp_path, monkeypatch, packed_text_len):
    """An image's caption and question take 6 and 10 tokens: rows of 12 hold one, rows of 40 both (the model's own
    max_text_len, 48, would take both either way)."""
    rows = []

    def recording(*args):
        rows.append(encode_packed(*args))
        return rows[-1]

    monkeypatch.setattr(mixture_module, "encode_packed", recording)
    data = colour_data()
    data.train_parts = [ColourSamples(16, seed=0, both_tasks=True)]
    train(get_preset("tiny"), quick_config(tmp_path, max_steps=2, packed_text_len=packed_text_len), data)
    assert rows and {int(row.segment_ids.max()) + 1 for row in rows} == {1 if packed_text_len == 12 else 2}
    assert max(len(row.input_ids) for row in rows) <= packed_text_len


def test_loss_mean_sample_weighs_each_sample_alike_and_token_each_token(tmp_path):
    """Captions ("a red picture") and one-word answers in one batch, targets of different lengths: the mean over
    samples and the mean over tokens of the same first step's losses differ."""
    first = {}
    for loss_mean in ("token", "sample"):
        train(get_preset("tiny"), quick_config(tmp_path / loss_mean, max_steps=1, loss_mean=loss_mean), colour_data())
        first[loss_mean] = losses(tmp_path / loss_mean / "run")[0]
    assert abs(first["token"] - first["sample"]) > 1e-3, first


def test_packing_groups_the_parts_with_their_mixture_weights_and_the_sources_and_texts_asked_for(tmp_path, monkeypatch):
    calls = []

    def recording(parts, weights, sources=None, texts_per_item=0):
        calls.append((weights, sources, texts_per_item))
        return group_by_image(parts, weights, sources, texts_per_item)

    monkeypatch.setattr(train_module, "group_by_image", recording)
    data = colour_data()
    data.train_parts = [ColourSamples(16, seed=0, both_tasks=True), ColourSamples(16, seed=2, both_tasks=True)]
    config = quick_config(
        tmp_path, max_steps=1, eval_every=1, packed_text_len=32, packed_sources="colours", packed_texts=2
    )
    train(get_preset("tiny"), replace(config, weights=[3.0, 1.0]), data)
    assert calls == [([3.0, 1.0], ["colours"], 2)]


def test_the_training_set_is_transformed_with_augmentation_unless_it_is_off(tmp_path, monkeypatch):
    transforms = []
    tokenized = train_module.TokenizedDataset

    def recording(samples, tokenizer, transform, *args, **kwargs):
        transforms.append(transform)
        return tokenized(samples, tokenizer, transform, *args, **kwargs)

    monkeypatch.setattr(train_module, "TokenizedDataset", recording)
    for augment in (True, False):
        data, transforms[:] = colour_data(), []
        train(get_preset("tiny"), quick_config(tmp_path / str(augment), max_steps=1, augment=augment), data)
        assert transforms == [data.train_transform if augment else data.eval_transform, data.eval_transform]


def with_dropout(rate: float):
    config = get_preset("tiny")
    config.decoder.dropout = rate
    return config


def test_resumed_run_gives_the_same_losses_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """The crash falls mid-epoch (epochs of 40 draws, 8 per step: the step-3 checkpoint is 24 draws in) and
    dropout draws from the global RNG, so the resumed run matches only if it restores the weights, the optimizer,
    the data position and the RNG, and goes on from step 3 rather than starting over."""
    data = colour_data()
    settings = dict(batch_size=4, grad_accum=2, epoch_size=40, max_steps=8, eval_every=3)
    train(with_dropout(0.2), quick_config(tmp_path / "a", **settings), data)
    uninterrupted = losses(tmp_path / "a" / "run")

    with killed_after_checkpoint(monkeypatch, 3):
        train(with_dropout(0.2), quick_config(tmp_path / "b", **settings), data)
    metrics = tmp_path / "b" / "run" / "metrics.jsonl"
    before_crash = metrics.read_text().splitlines()
    assert json.loads(before_crash[-1])["step"] == 3

    apply_gradients, steps_taken = train_module.apply_gradients, []

    def counted(*args):
        steps_taken.append(1)
        apply_gradients(*args)

    monkeypatch.setattr(train_module, "apply_gradients", counted)
    torch.manual_seed(1234)  # the resumed process starts from another RNG state: the checkpoint must restore it
    state = train(with_dropout(0.2), quick_config(tmp_path / "b", **settings), data, resume=True)
    assert state.step == 8 and len(steps_taken) == 5  # steps 4 to 8: none done twice
    after = metrics.read_text().splitlines()
    assert after[: len(before_crash)] == before_crash  # the first process's records of steps 1-3 are kept
    records = [json.loads(line) for line in after]
    assert [r["step"] for r in records if "train_loss" in r] == list(range(1, 9))
    resumed = losses(tmp_path / "b" / "run")
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(uninterrupted), rtol=1e-5, atol=1e-6)


def test_two_accumulated_micro_batches_equal_one_batch_of_twice_the_size(tmp_path):
    """batch 4 x grad_accum 2 and batch 8 x grad_accum 1 read the same draws in the same order. The loss is a
    mean over target tokens, and the accumulated gradient is the mean of the micro-batches' means: the two equal
    the big batch's token mean only when both micro-batches hold as many target tokens (`caption_data`).
    float32, no dropout, no augmentation: what is left is float rounding."""
    data = caption_data()

    def weights_after_training(name: str, **settings) -> dict[str, torch.Tensor]:
        config = quick_config(tmp_path / name, max_steps=3, eval_every=3, augment=False, **settings)
        train(get_preset("tiny"), config, data)
        model, _ = load_model(tmp_path / name / "run" / "checkpoints" / "last")
        return model.state_dict()

    accumulated = weights_after_training("accumulated", batch_size=4, grad_accum=2)
    whole = weights_after_training("whole", batch_size=8, grad_accum=1)
    torch.testing.assert_close(accumulated, whole, rtol=0, atol=1e-4)


def test_new_run_refuses_to_overwrite_an_existing_one(tmp_path):
    data = colour_data(16)
    train(get_preset("tiny"), quick_config(tmp_path, max_steps=4), data)
    with pytest.raises(FileExistsError, match="already holds a run; pass --resume"):
        train(get_preset("tiny"), quick_config(tmp_path, max_steps=4), data)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    data = colour_data()
    forward = train_module.VisionLanguageModel.forward
    calls = {"n": 0}

    def forward_that_blows_up(self, *args, **kwargs):
        loss = forward(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 6:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_module.VisionLanguageModel, "forward", forward_that_blows_up)
    with pytest.raises(
        TrainingDiverged, match=r"loss became nan at step 6: training stopped; the last good checkpoint"
    ):
        train(get_preset("tiny"), quick_config(tmp_path), data)
    checkpoint = tmp_path / "run" / "checkpoints" / "last"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["state"]["step"] == 4
    model, _ = load_model(checkpoint)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("grad_clip, step", [(0.0, 4.0), (1.0, 0.8)])
def test_gradients_are_clipped_to_the_global_norm_unless_the_clip_is_zero(grad_clip, step):
    """A gradient of norm 5 ((3, 4) on one parameter, 0 on the other): plain SGD with rate 1 moves the parameter by
    the gradient itself when grad_clip is 0, by the gradient scaled to norm 1 when it is 1."""
    weights = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))])
    weights[0].grad, weights[1].grad = torch.tensor([3.0, 4.0]), torch.zeros(1)
    train_module.apply_gradients(weights, torch.optim.SGD(weights.parameters(), lr=1.0), grad_clip)
    assert weights[0].detach().tolist() == pytest.approx([-0.75 * step, -step])
    assert all(w.grad is None for w in weights)  # cleared for the next step


def test_the_learning_rate_factor_scales_each_group_from_its_own_peak():
    decoder, encoder = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD(
        [{"params": [decoder], "peak_lr": 2e-3}, {"params": [encoder], "peak_lr": 5e-4}], lr=1.0
    )
    assert train_module.set_learning_rate(optimizer, 0.25) == pytest.approx(5e-4)  # the first group's, for the log
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([5e-4, 1.25e-4])


def test_the_train_config_accepts_its_settings_up_to_their_bounds_and_refuses_past_them():
    for settings in (
        dict(loss_mean="sample"),
        dict(max_unreadable_share=0.0),
        dict(max_unreadable_share=1.0),
        dict(freeze="encoder,projector"),
    ):
        TrainConfig(**settings)
    for settings, message in (
        (dict(loss_mean="samples"), "loss_mean must be"),
        (dict(max_unreadable_share=-0.01), "max_unreadable_share must be"),
        (dict(max_unreadable_share=1.01), "max_unreadable_share must be"),
        (dict(freeze="encoder,wings"), "no model part 'wings'"),
        (dict(freeze="encoder,projector,decoder"), "leaves nothing to train"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**settings)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = TrainConfig(max_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    factors = [lr_factor(step, config) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert lr_factor(100, config) == pytest.approx(0.1)


def recording_draws(monkeypatch) -> list[list[int]]:
    """Every training draw (index, sample seed) that this process loads, in order."""
    draws: list[list[int]] = []
    load = TokenizedDataset.__getitems__  # the DataLoader fetches a batch's keys at once

    def recorded(self, keys):
        draws.extend(list(key) for key in keys if isinstance(key, tuple))  # validation keys are plain indices
        return load(self, keys)

    monkeypatch.setattr(TokenizedDataset, "__getitems__", recorded)
    return draws


def unfused_optimizer(monkeypatch) -> None:
    """The optimizer tests/ddp_worker.py builds, so the one-process run differs from it by rounding alone."""
    build = train_module.build_optimizer
    monkeypatch.setattr(train_module, "build_optimizer", lambda model, config: build(model, config, fused=False))


def test_two_processes_with_torchrun_share_the_draws_and_equal_one_process_on_the_global_batch(tmp_path, monkeypatch):
    """Two processes with batches of 4 each take half of every global batch of 8 (disjoint draws), and averaging
    their gradients (DDP) trains what one process does with batches of 8 on the same draws: equal target token
    counts (`caption_data`) make the mean of the two halves' token means the whole batch's token mean."""
    worker = Path(__file__).parent / "ddp_worker.py"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(worker),
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    draws = [json.loads((tmp_path / f"rank{r}_draws.json").read_text()) for r in (0, 1)]
    assert len(draws[0]) == len(draws[1]) == DDP_SETTINGS["max_steps"] * DDP_BATCH
    assert not {tuple(d) for d in draws[0]} & {tuple(d) for d in draws[1]}  # each rank its own share
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    first = load_file(str(tmp_path / "initial.safetensors"))
    assert any(not torch.equal(first[name], rank0[name]) for name in rank0)  # it did train
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[-1])["step"] == 6  # only rank 0 logs: one record per step, not two

    unfused_optimizer(monkeypatch)
    one_process_draws = recording_draws(monkeypatch)
    config = quick_config(tmp_path / "one", batch_size=2 * DDP_BATCH, **DDP_SETTINGS)
    train(get_preset("tiny"), config, caption_data(), device="cpu")
    assert sorted(one_process_draws) == sorted(draws[0] + draws[1])  # the two shares make up the global batches
    one_process, _ = load_model(tmp_path / "one" / "run" / "checkpoints" / "last")
    torch.testing.assert_close(rank0, one_process.state_dict(), rtol=0, atol=1e-3)


class StepClock:
    """A stand-in for the `time` module whose clock moves `tick` seconds at every reading: with no logging or
    validation in between, a training step reads it twice, so each step takes exactly `tick` of training time."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_a_time_budget_plans_the_steps_that_fit_and_resumes_with_the_same_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "time", StepClock(0.5))
    settings = dict(time_budget_min=1.0, max_steps=1000, warmup_steps=5, log_every=1000, eval_every=60)
    with killed_after_checkpoint(monkeypatch, 60):
        train(get_preset("tiny"), quick_config(tmp_path, **settings), colour_data())
    # At step 50 the run had spent 50 steps of 0.5 s (and the half second before the first): 35 s of its 60 s
    # budget remained, 70 more steps of 0.5 s.
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 50, "planned_steps": 120, "seconds_per_step": 0.5} in records
    checkpoint = json.loads((tmp_path / "run" / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert checkpoint["state"]["planned_steps"] == 120
    # Resumed on a machine ten times slower, the run keeps its plan (and the schedule that ends with it).
    monkeypatch.setattr(train_module, "time", StepClock(5.0))
    state = train(get_preset("tiny"), quick_config(tmp_path, **settings), colour_data(), resume=True)
    assert state.planned_steps == state.step == 120
    final = json.loads((tmp_path / "run" / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert lr_factor(119, TrainConfig(**final["train_config"])) == pytest.approx(0.05, abs=1e-3)


def test_a_budget_larger_than_max_steps_needs_stops_at_max_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "time", StepClock(0.01))
    settings = dict(time_budget_min=10.0, max_steps=60, warmup_steps=5, log_every=1000, eval_every=1000)
    state = train(get_preset("tiny"), quick_config(tmp_path, **settings), colour_data())
    assert state.step == state.planned_steps == 60


def test_a_machine_that_slows_down_mid_run_is_planned_again_to_end_on_the_budget(tmp_path, monkeypatch):
    clock = StepClock(0.5)
    monkeypatch.setattr(train_module, "time", clock)

    def slow_down_after_step_60(model, step):
        if step == 60:
            clock.tick = 1.0
        return {}

    settings = dict(time_budget_min=1.0, max_steps=1000, warmup_steps=5, log_every=1000, eval_every=20)
    state = train(
        get_preset("tiny"), quick_config(tmp_path, **settings), colour_data(), on_validate=slow_down_after_step_60
    )
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    plans = {r["step"]: r["planned_steps"] for r in records if "planned_steps" in r}
    # Step 50: 25 s of steps and two validations of 0.5 s spent; each step to come costs 0.5 s and a twentieth of a
    # validation, and the last validation is kept aside: (60 - 26 - 0.5) / 0.525 = 63 more steps. From step 61 a step
    # takes 1 s: at step 80 (50 s of steps, 2 s of validation and 2/3 s kept for its own) the 7.33 s left hold 6 steps
    # of 1 s and 1/30 s and the last validation, so the run ends at 86, after 56 s of steps and 4 s of validation,
    # not at the 113 planned before it slowed.
    assert list(plans) == [50, 60, 80]  # at step 50 and at each validation before the end, not at every step
    assert plans[50] == 113 and plans[60] == 113 and plans[80] == 86
    assert state.step == state.planned_steps == 86


def test_planned_step_count():
    assert planned_step_count(100.0, 40.0, 50, 0.5, 10_000) == 170
    assert planned_step_count(100.0, 40.0, 50, 0.5, 80) == 80  # the cap
    assert planned_step_count(100.0, 120.0, 50, 0.5, 80) == 51  # over budget: one more step at least
    # A validation of 5 s every 10 steps and after the last: a step costs 1 s, and 5 s are kept for the last one.
    assert planned_step_count(100.0, 40.0, 50, 0.5, 10_000, validation_s=5.0, eval_every=10) == 105


@pytest.mark.parametrize("frozen", [("encoder",), ("projector", "decoder")])
def test_frozen_parts_keep_their_weights_through_training_and_the_others_change(tmp_path, monkeypatch, frozen):
    start, encoder_records_graph = {}, []
    freeze_parts = train_module.freeze_parts

    def record_then_freeze(model, parts):
        start.update({name: tensor.clone() for name, tensor in model.state_dict().items()})
        model.vision_encoder.register_forward_pre_hook(
            lambda module, inputs: encoder_records_graph.append(torch.is_grad_enabled()) if module.training else None
        )
        freeze_parts(model, parts)

    monkeypatch.setattr(train_module, "freeze_parts", record_then_freeze)
    train(get_preset("tiny"), quick_config(tmp_path, max_steps=2, eval_every=2, freeze=",".join(frozen)), colour_data())
    trained, _ = load_model(tmp_path / "run" / "model")
    for part in ("encoder", "projector", "decoder"):
        prefix = {"encoder": "vision_encoder."}.get(part, f"{part}.")
        weights = {name: tensor for name, tensor in trained.state_dict().items() if name.startswith(prefix)}
        unchanged = [torch.equal(tensor, start[name]) for name, tensor in weights.items()]
        assert all(unchanged) if part in frozen else not any(unchanged), part
    # In training steps a frozen encoder runs under no_grad; a trained one records its graph.
    assert set(encoder_records_graph) == {"encoder" not in frozen}


def test_a_new_run_starts_from_the_encoder_weights_file(tmp_path):
    """vision.weights_file (a pretrained encoder read from disk): a fresh run's encoder is the file's, not its own
    random one. Frozen, so that the trained model still holds exactly what was read."""
    from safetensors.torch import save_file

    from vlm.model.vision_encoder import VisionEncoder

    model_config = get_preset("tiny")
    # Shifted off any initialisation, so that only the file can have put these values there.
    weights = {k: v.contiguous() + 0.5 for k, v in VisionEncoder(model_config.vision).vit.state_dict().items()}
    save_file(weights, str(tmp_path / "vit.safetensors"))
    model_config.vision.weights_file = str(tmp_path / "vit.safetensors")
    train(model_config, quick_config(tmp_path, max_steps=1, eval_every=1, freeze="encoder"), colour_data())
    trained, _ = load_model(tmp_path / "run" / "model")
    for name, tensor in weights.items():
        assert torch.equal(trained.vision_encoder.vit.state_dict()[name], tensor), name
    # A resumed run takes its encoder from the checkpoint: the file may be gone by then.
    (tmp_path / "vit.safetensors").unlink()
    state = train(
        model_config, quick_config(tmp_path, max_steps=2, eval_every=1, freeze="encoder"), colour_data(), resume=True
    )
    assert state.step == 2


def test_initial_weights_that_do_not_fit_the_model_are_refused_as_the_init_from_models(tmp_path):
    from dataclasses import replace

    from vlm.model.checkpoint import CheckpointError

    tokenizer = tiny_tokenizer()
    weights = tiny_model(tokenizer).state_dict()
    weights["decoder.final_norm.weight"] = torch.ones(3)
    data = replace(colour_data(), tokenizer=tokenizer, initial_weights=weights)
    with pytest.raises(CheckpointError, match=r"^the --init-from model: tensor 'decoder.final_norm.weight' has shape"):
        train(get_preset("tiny"), quick_config(tmp_path, max_steps=1), data)


def test_a_save_that_crashes_between_its_renames_leaves_the_previous_checkpoint_for_resume(tmp_path, monkeypatch):
    """The crash itself, inside save_training_checkpoint: the old checkpoint moved aside, the new one not yet in place.
    What is left is found by last_checkpoint and holds the previous save."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    checkpoints, config = tmp_path / "run" / "checkpoints", TrainConfig(max_steps=10)
    save = train_module.save_training_checkpoint
    save(checkpoints / "last", model, tokenizer, optimizer, train_module.TrainState(step=3), config)
    rename = Path.rename

    def crash_before_the_new_one_is_in_place(self, target):
        if self.name == "last.new":
            raise OSError("the machine went down")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", crash_before_the_new_one_is_in_place)
    with pytest.raises(OSError, match="went down"):
        save(checkpoints / "last", model, tokenizer, optimizer, train_module.TrainState(step=5), config)
    monkeypatch.undo()
    found = train_module.last_checkpoint(tmp_path / "run")
    assert found is not None and not (checkpoints / "last").exists()
    assert json.loads((found / train_module.TRAINER_STATE).read_text())["state"]["step"] == 3


def test_an_image_size_set_alone_trains_a_step(tmp_path):
    from vlm.data.transforms import encoder_transform
    from vlm.model.config import apply_overrides

    config = apply_overrides(get_preset("tiny"), ["vision.image_size=224"])
    data = colour_data()
    data.train_transform = encoder_transform(config.vision, train=True)
    data.eval_transform = encoder_transform(config.vision)
    state = train(config, quick_config(tmp_path, max_steps=1, eval_every=1, batch_size=2), data)
    assert state.step == 1
    model, _ = load_model(tmp_path / "run" / "model")
    positions = model.decoder.position_embedding.num_embeddings
    assert positions == 196 + get_preset("tiny").max_text_len


def test_a_bfloat16_run_trains_and_validates_under_autocast(tmp_path):
    dtypes = set()
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: dtypes.add(out.dtype) if isinstance(module, torch.nn.Linear) else None
    )
    try:
        state = train(
            get_preset("tiny"), quick_config(tmp_path, max_steps=2, eval_every=2, dtype="bfloat16"), colour_data()
        )
    finally:
        hook.remove()
    assert state.step == 2
    assert dtypes == {torch.bfloat16}  # every matrix product of the steps and the validation ran in bfloat16


def test_clearing_an_unfinished_run_removes_its_outputs_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    (run / "checkpoints").mkdir()  # a save that never finished: no trainer state
    for name in ("metrics.jsonl", "config.json", "curves.png"):
        (run / name).write_text("x")
    (run / "notes.txt").write_text("the user's own")
    train_module.clear_unfinished_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    (run / "checkpoints" / "last").mkdir(parents=True)
    (run / "checkpoints" / "last" / train_module.TRAINER_STATE).write_text("{}")
    with pytest.raises(AssertionError, match="holds a checkpoint"):
        train_module.clear_unfinished_run(run)


def test_a_finetune_config_gives_every_part_one_rate_adamw_and_exact_steps():
    config = train_module.finetune_config(3e-5, max_steps=40, seed=2)
    assert (config.lr_decoder, config.lr_projector, config.lr_encoder) == (3e-5, 3e-5, 3e-5)
    assert config.optimizer == "adamw" and config.time_budget_min == 0.0
    assert (config.max_steps, config.seed) == (40, 2)
    assert train_module.finetune_config(1e-4, time_budget_min=5.0).time_budget_min == 5.0


def test_a_checkpoint_swap_cleans_up_and_one_interrupted_mid_swap_is_resumed_from_last_old(tmp_path):
    """The save stages into last.new (a leftover from a crash is cleared first), keeps the previous as last.old
    until the new one is in place, then removes it; a crash between the two renames leaves only last.old, which
    last_checkpoint and load_training_checkpoint fall back to, restoring weights, optimizer and RNG exactly."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95))
    sum(p.square().sum() for p in model.parameters()).backward()
    optimizer.step()
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "last.new").mkdir(parents=True)
    (checkpoints / "last.new" / "junk").write_text("a save that crashed")
    state = train_module.TrainState(step=3, epoch=1, position=7)
    config = TrainConfig(max_steps=10)
    for i in range(2):  # the second save replaces the first
        if i == 1:  # a crash after an earlier swap, before its clean-up, leaves last.old beside last
            (checkpoints / "last.old").mkdir()
            (checkpoints / "last.old" / "junk").write_text("a checkpoint already replaced")
        train_module.save_training_checkpoint(checkpoints / "last", model, tokenizer, optimizer, state, config)
        assert sorted(p.name for p in checkpoints.iterdir()) == ["last"]
        assert not (checkpoints / "last" / "junk").exists()  # the crashed save's leftovers are not carried over
    assert json.loads((checkpoints / "last" / train_module.TRAINER_STATE).read_text())["state"]["step"] == 3

    (checkpoints / "last").rename(checkpoints / "last.old")  # the crash between the two renames
    assert train_module.last_checkpoint(tmp_path / "run") == checkpoints / "last.old"
    rng = torch.get_rng_state()
    torch.manual_seed(123)
    restored = tiny_model(tokenizer, seed=2)
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=1e-3)
    loaded = train_module.load_training_checkpoint(checkpoints / "last", restored, restored_optimizer)
    assert loaded == state and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
    saved, back = optimizer.state_dict(), restored_optimizer.state_dict()
    assert back["param_groups"] == saved["param_groups"]  # betas a tuple again, nothing added
    assert all(
        torch.equal(saved["state"][i][k], back["state"][i][k]) for i in saved["state"] for k in saved["state"][i]
    )
    (checkpoints / "last.old").rename(checkpoints / "elsewhere")
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train_module.load_training_checkpoint(checkpoints / "last", restored, restored_optimizer)


def test_under_torchrun_the_process_reads_its_place_and_joins_a_gloo_group_on_cpu(monkeypatch):
    """torchrun's RANK, WORLD_SIZE and LOCAL_RANK make the Distributed record, and a CPU run joins with gloo (the
    group itself is the two-process test's; here it is recorded, not made)."""
    joined = []
    monkeypatch.setattr(train_module.dist, "init_process_group", lambda backend: joined.append(backend))
    monkeypatch.setattr(train_module.torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info, device = train_module.init_distributed("auto")
    assert (info.rank, info.world_size, info.local_rank) == (3, 4, 1)
    assert not info.is_main and info.enabled and joined == ["gloo"] and device == torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK")  # torchrun always sets it; a launcher that does not gets 0
    assert train_module.init_distributed("cpu")[0].local_rank == 0
    monkeypatch.delenv("RANK")  # not under torchrun: one process, no group
    info, _ = train_module.init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False) and len(joined) == 2


def test_under_torchrun_on_gpus_each_process_takes_its_local_gpu_and_nccl(monkeypatch):
    joined, chosen = [], []
    monkeypatch.setattr(train_module.dist, "init_process_group", lambda backend: joined.append(backend))
    monkeypatch.setattr(train_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(train_module.torch.cuda, "set_device", chosen.append)
    for name, value in (("RANK", "5"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    assert train_module.init_distributed("auto")[1] == torch.device("cuda:1")
    assert train_module.init_distributed("cpu")[1] == torch.device("cpu")  # --device cpu on a GPU machine: gloo
    assert chosen == [1] and joined == ["nccl", "gloo"]
