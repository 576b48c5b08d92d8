"""vlm/experiments/race.py: training for a wall-clock budget, with accuracy checks that do not count as training time."""

import pytest
import torch
from helpers import ColourSamples, tiny_model

from vlm.data.catalog import texts_of
from vlm.data.transforms import build_transform
from vlm.experiments.race import AccuracyCheck, BudgetRun, spread_subset, time_schedule, train_for_budget
from vlm.model.tokenizer import Tokenizer
from vlm.training.loop import TrainConfig, TrainingData, build_optimizer


def colour_data() -> TrainingData:
    train_set = ColourSamples(64, seed=0)
    return TrainingData(
        train_parts=[train_set],
        val=ColourSamples(8, seed=1),
        tokenizer=Tokenizer.build(texts_of(train_set)),
        train_transform=build_transform(32, train=True),
        eval_transform=build_transform(32, train=False),
    )


def test_the_schedule_warms_up_then_decays_over_the_budget():
    config = TrainConfig(max_steps=1000, warmup_steps=100, min_lr_ratio=0.1)
    assert time_schedule(0.0, config) == pytest.approx(1 / 1000)  # warm-up: the first 10% of the time
    assert time_schedule(0.1, config) == pytest.approx(1.0)
    assert time_schedule(0.55, config) == pytest.approx(0.55, abs=0.01)  # half way down the cosine
    assert time_schedule(1.0, config) == pytest.approx(0.1)
    assert time_schedule(1.5, config) == pytest.approx(0.1)  # the last step may end after the budget


class FakeClock:
    """Each reading is 0.125 s after the previous one (a step's time); `wait` jumps ahead (a check's time)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.125
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds


def test_checks_run_on_schedule_and_their_time_is_not_training_time():
    data = colour_data()
    model = tiny_model(data.tokenizer)
    config = TrainConfig(batch_size=8, num_workers=0, warmup_steps=1, max_steps=10)
    clock = FakeClock()
    accuracies = iter([0.5, 0.96, 0.97])

    def slow_check(model: torch.nn.Module) -> float:
        clock.wait(10.0)
        return next(accuracies)

    run = BudgetRun("ours", 0, budget_s=0.75)
    train_for_budget(model, build_optimizer(model, config), data, config, 40, 0.75, slow_check, 0.25, run, clock)
    assert [(check.seconds, check.step) for check in run.checks] == [(0.25, 2), (0.5, 4), (0.75, 6)]
    assert run.steps == 6 and run.images == 48
    assert run.seconds_to(0.95) == 0.5
    assert model.training  # a check leaves the model in eval mode; training goes on in train mode


def test_time_to_target_is_none_when_no_check_reaches_it():
    run = BudgetRun("peer", 10, 5.0, checks=[AccuracyCheck(1.0, 3, 0.5), AccuracyCheck(2.0, 6, 0.94)])
    assert run.seconds_to(0.95) is None
    assert run.seconds_to(0.9) == 2.0


def test_a_subset_is_spread_over_the_whole_set():
    subset = spread_subset(list(range(100)), 4)
    assert [subset[i] for i in range(len(subset))] == [0, 25, 50, 75]
    assert len(spread_subset(list(range(3)), 10)) == 3
