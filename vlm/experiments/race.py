"""Training for a wall-clock budget rather than a number of steps, checking easy-VQA accuracy as it goes: the
benchmark's second comparison. Our model and its peer (`vlm/experiments/peer.py`) each train for the same time on the same
data, then answer and caption the same test sets; the checks say when each first reached a target accuracy.

The data pipeline is the training loop's (`vlm.data.mixture`), the step is `vlm.experiments.benchmarks.optimizer_step` and
the scores are `vlm.evaluation.evaluate`'s. The learning-rate schedule runs on training time, so warm-up and cosine decay
end with the budget whatever the step count turns out to be. Time spent checking is not training time.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from vlm.data.catalog import build_dataset
from vlm.data.mixture import MixtureDataset, MixtureSampler, TokenizedDataset, training_loader
from vlm.evaluation.evaluate import evaluate, quick_metrics
from vlm.experiments.benchmarks import optimizer_step
from vlm.inference.predict import Predictor
from vlm.model.config import VLMConfig
from vlm.model.vision_language_model import VisionLanguageModel
from vlm.training.loop import (
    TrainConfig,
    TrainingData,
    TrainingDiverged,
    autocast_dtype,
    build_optimizer,
    lr_factor,
    set_learning_rate,
)

SCHEDULE_STEPS = 10_000  # the budget's time, cut into this many slices for `lr_factor`


@dataclass
class AccuracyCheck:
    seconds: float  # training time so far
    step: int
    accuracy: float  # easy-VQA validation accuracy


@dataclass
class BudgetRun:
    model: str  # "ours" or "peer"
    parameters: int
    budget_s: float
    steps: int = 0
    images: int = 0
    checks: list[AccuracyCheck] = field(default_factory=list)
    test: dict[str, float] = field(default_factory=dict)  # easy_vqa_accuracy, caption_cider

    def seconds_to(self, accuracy: float) -> float | None:
        """Training time of the first check at or above `accuracy`; None if no check reached it."""
        return next((check.seconds for check in self.checks if check.accuracy >= accuracy), None)


def time_schedule(fraction: float, config: TrainConfig) -> float:
    """`vlm.training.loop.lr_factor` with time in place of steps: warm-up over the same share of the run
    (`warmup_steps / max_steps`), then cosine decay to `min_lr_ratio` at the end of the budget."""
    warmup = round(SCHEDULE_STEPS * config.warmup_steps / config.max_steps)
    scheduled = dataclasses.replace(config, max_steps=SCHEDULE_STEPS, warmup_steps=max(1, warmup))
    return lr_factor(min(SCHEDULE_STEPS, int(fraction * SCHEDULE_STEPS)), scheduled)


def train_for_budget(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainingData,
    config: TrainConfig,
    max_text_len: int,
    budget_s: float,
    check: Callable[[nn.Module], float],
    check_every_s: float,
    run: BudgetRun,
    clock: Callable[[], float] = time.perf_counter,
) -> BudgetRun:
    """Train `model` for `budget_s` seconds of training time (data loading included, checks excluded), calling
    `check(model)` every `check_every_s` seconds and at the end; fills in `run`. `clock` gives seconds."""
    if budget_s <= 0 or check_every_s <= 0:
        raise ValueError(f"budget_s and check_every_s must be positive, got {budget_s} and {check_every_s}")
    device = next(model.parameters()).device
    amp_dtype = autocast_dtype(device, config.dtype)
    dataset = TokenizedDataset(
        MixtureDataset(data.train_parts),
        data.tokenizer,
        data.train_transform if config.augment else data.eval_transform,
        max_text_len,
    )
    sampler = MixtureSampler(
        [len(part) for part in data.train_parts], config.weights or None, config.epoch_size, config.seed
    )
    loader = training_loader(dataset, sampler, config.batch_size, config.num_workers)
    elapsed, next_check, epoch = 0.0, check_every_s, 0
    model.train()
    while elapsed < budget_s:
        sampler.set_epoch(epoch)
        start = clock()
        for batch in loader:
            batch = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
            set_learning_rate(optimizer, time_schedule(elapsed / budget_s, config))
            loss = optimizer_step(model, optimizer, batch, amp_dtype, config.grad_clip)
            if not math.isfinite(float(loss)):
                raise TrainingDiverged(f"{run.model}: loss became {float(loss)} at step {run.steps + 1}")
            run.steps += 1
            run.images += len(batch["images"])
            now = clock()
            elapsed += now - start
            if elapsed >= next_check or elapsed >= budget_s:
                run.checks.append(AccuracyCheck(elapsed, run.steps, check(model)))
                model.train()
                while next_check <= elapsed:
                    next_check += check_every_s
                now = clock()  # the check's own time is not training time
            start = now
            if elapsed >= budget_s:
                break
        epoch += 1
    return run


def spread_subset(dataset: Dataset, count: int | None) -> Dataset:
    """`count` samples spread evenly over `dataset` (all if None): easy-VQA lists an image's questions together,
    so the first few hundred would cover a few dozen images only."""
    if count is None or count >= len(dataset):
        return dataset
    return Subset(dataset, [index * len(dataset) // count for index in range(count)])


def score_test_sets(predictor: Predictor, limit: int | None = None) -> dict[str, float]:
    """easy-VQA test accuracy and built-in caption (shapes) test CIDEr-D, scored by `vlm.evaluation.evaluate`."""
    questions = spread_subset(build_dataset("easy_vqa", "test"), limit)
    captions = spread_subset(build_dataset("shapes", "test"), limit)
    return {
        "easy_vqa_accuracy": evaluate(predictor, questions, toolkit=False, quiet=True)["overall"],
        "caption_cider": evaluate(predictor, captions, toolkit=False, quiet=True)["CIDEr"],
    }


def compare_under_budget(
    config: VLMConfig,
    train_config: TrainConfig,
    data: TrainingData,
    budget_s: float,
    check_every_s: float,
    check_samples: int = 300,
    test_limit: int | None = None,
    device: str | torch.device = "cpu",
    models: Sequence[str] = ("ours", "peer"),
    log: Callable[[str], None] = print,
) -> list[BudgetRun]:
    """Our model and the peer, each trained for `budget_s` seconds on `data` (same batches in the same order, same
    optimizer and precision), checked on `check_samples` easy-VQA validation questions every `check_every_s`
    seconds, then scored on the test sets (`test_limit` samples of each, spread evenly; all by default)."""

    device = torch.device(device)
    config = copy.deepcopy(config)
    config.decoder.vocab_size = data.tokenizer.vocab_size
    val_questions = spread_subset(build_dataset("easy_vqa", "val"), check_samples)
    runs = []
    for name in models:
        if name not in ("ours", "peer"):
            raise ValueError(f"unknown model {name!r}; choose ours or peer")
        log(f"{name}: training for {budget_s:g} s")
        run, model = _train_one(name, config, train_config, data, budget_s, check_every_s, val_questions, device, log)
        run.test = score_test_sets(_predictor(name, model, data, train_config, device), test_limit)
        log(f"  {name}: test {run.test}")
        runs.append(run)
    return runs


def _predictor(name: str, model: nn.Module, data: TrainingData, config: TrainConfig, device: torch.device) -> Predictor:
    from vlm.experiments.peer import PeerPredictor

    amp_dtype = autocast_dtype(device, config.dtype)
    predictor_class = PeerPredictor if name == "peer" else Predictor
    return predictor_class(model, data.tokenizer, device, None if amp_dtype == torch.float32 else amp_dtype)


def _train_one(
    name: str,
    config: VLMConfig,
    train_config: TrainConfig,
    data: TrainingData,
    budget_s: float,
    check_every_s: float,
    val_questions: Dataset,
    device: torch.device,
    log: Callable[[str], None],
) -> tuple[BudgetRun, nn.Module]:
    from vlm.experiments.peer import PeerModel, build_peer_optimizer

    torch.manual_seed(train_config.seed)
    if name == "ours":
        model: nn.Module = VisionLanguageModel(config).to(device)
        optimizer = build_optimizer(model, train_config)
    else:
        model = PeerModel(config, data.tokenizer).to(device)
        optimizer = build_peer_optimizer(model, train_config)
    run = BudgetRun(name, sum(p.numel() for p in model.parameters()), budget_s)
    started = time.perf_counter()

    def check(model: nn.Module) -> float:
        predictor = _predictor(name, model, data, train_config, device)
        accuracy = quick_metrics(predictor, [], val_questions)["val_vqa_accuracy"]
        log(f"  {name}: {run.steps} steps, {time.perf_counter() - started:.0f} s, easy-VQA val {accuracy:.3f}")
        return accuracy

    train_for_budget(model, optimizer, data, train_config, config.max_text_len, budget_s, check, check_every_s, run)
    return run, model


def format_budget_runs(runs: Sequence[BudgetRun], target: float) -> str:
    lines = [
        f"same wall-clock budget ({runs[0].budget_s:g} s of training each), then the test sets",
        f"  {'model':<5} {'params':>8} {'steps':>6} {'images':>8} {'easy-VQA acc':>12} {'caption CIDEr':>13} "
        f"{f'time to {target:.0%} easy-VQA':>22}",
    ]
    for run in runs:
        reached = run.seconds_to(target)
        when = f"{reached:.0f} s" if reached is not None else "not within budget"
        lines.append(
            f"  {run.model:<5} {run.parameters / 1e6:>7.2f}M {run.steps:>6} {run.images:>8} "
            f"{run.test['easy_vqa_accuracy']:>12.3f} {run.test['caption_cider']:>13.3f} {when:>22}"
        )
    return "\n".join(lines)
