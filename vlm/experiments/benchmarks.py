"""Speed measurements: the machine's matrix-multiply ceiling, the training step (time, counted FLOPs, peak memory),
and generation (ms per caption with and without the key/value cache, any batch size and precision).

Random weights are enough (speed does not depend on what the weights say). In generation the end token is
forbidden until every caption has exactly `new_tokens` tokens, so every path does the same work.
`scripts/bench_generation.py` prints the generation numbers; `scripts/bench.py` prints all of them, for our model
and for its peer (`vlm/experiments/peer.py`).
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from vlm.data.mixture import MixtureDataset, MixtureSampler, TokenizedDataset, training_loader
from vlm.inference.generate import GenerationConfig, generate
from vlm.model.config import VLMConfig, get_preset
from vlm.model.tokenizer import Tokenizer
from vlm.model.vision_language_model import VisionLanguageModel
from vlm.runtime import autocast, autocast_dtype
from vlm.training.loop import TrainConfig, TrainingData, apply_gradients, build_optimizer

# Enough words for a tokenizer the size of a small caption vocabulary (the embedding table and output layer are
# part of every decoding step, so their size should be realistic).
BENCH_TEXTS = [
    "a small red circle to the left of a large blue square",
    "two green triangles above a yellow star and three purple hexagons below an orange diamond",
    "is there a gray cross? what color is the shape? how many shapes are there? yes no",
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def seconds_per_call(
    function: Callable[[], object],
    repeats: int,
    device: torch.device,
    warmup: int = 1,
    statistic: Callable[[list[float]], float] = statistics.median,
) -> float:
    """Median wall time of `function()` over `repeats` calls, after `warmup` calls (allocations, kernel choice,
    compilation); `statistic=min` gives the best call instead."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistic(times)


def alternating_seconds(
    functions: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = 1
) -> dict[str, float]:
    """Median wall time of each function, called in turn (a, b, a, b, ...) rather than one after the other, so that
    a slow spell of a shared machine falls on all of them alike and their ratios stay steady."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_ in range(warmup + repeats):
        for name, function in functions.items():
            seconds = seconds_per_call(function, 1, device, warmup=0)
            if round_ >= warmup:
                times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}


# ---------------------------------------------------------------------------------------------------------------
# The ceiling: what the machine's matrix multiply reaches at the shapes the model multiplies


@dataclass
class MatmulSpeed:
    name: str  # the part of the model with this shape
    dtype: str
    rows: int  # (rows, inner) @ (inner, cols); rows may be fewer than the model's where the dtype is slow
    inner: int
    cols: int
    gflops: float


def model_matmul_shapes(config: VLMConfig, batch_size: int, text_tokens: int) -> list[tuple[str, int, int, int]]:
    """(name, rows, inner, cols) of the model's largest matrix multiplies in a training step: the MLPs and the
    attention input projection, with every position of the batch as a row."""
    vision, decoder = config.vision, config.decoder
    slots = batch_size * (config.num_image_tokens + text_tokens)
    return [
        ("vision MLP", batch_size * vision.num_patches, vision.width, round(vision.width * vision.mlp_ratio)),
        ("decoder qkv", slots, decoder.width, 3 * decoder.width),
        ("decoder MLP", slots, decoder.width, round(decoder.width * decoder.mlp_ratio)),
    ]


def matmul_gflops(
    rows: int,
    inner: int,
    cols: int,
    dtype: torch.dtype,
    device: str | torch.device = "cpu",
    seconds: float = 0.3,
    max_call_s: float = 0.1,
) -> tuple[float, int]:
    """GFLOP/s of (rows, inner) @ (inner, cols) in `dtype`, its best call over about `seconds` (a ceiling is what the
    machine can do, so a call slowed by another process should not lower it). Returns it with the rows used: where
    one call would take longer than `max_call_s` (bf16 on a CPU without bf16 instructions runs far slower than
    float32) the rows are cut so that it does not, which leaves the rate per row as it was."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)

    def rate(rows: int, calls: int) -> float:
        left = torch.randn(rows, inner, generator=generator).to(device, dtype)
        right = torch.randn(inner, cols, generator=generator).to(device, dtype)
        elapsed = seconds_per_call(lambda: torch.mm(left, right), calls, device, statistic=min)
        return 2 * rows * inner * cols / elapsed

    probe_rows = min(rows, 64)
    probe = rate(probe_rows, 1)
    rows = max(probe_rows, min(rows, int(max_call_s * probe / (2 * inner * cols))))
    calls = max(3, min(100, int(seconds * probe / (2 * rows * inner * cols))))
    return rate(rows, calls) / 1e9, rows


def matmul_ceiling(
    config: VLMConfig,
    batch_size: int,
    text_tokens: int,
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    device: str | torch.device = "cpu",
) -> list[MatmulSpeed]:
    """The matrix-multiply speed at each of the model's large shapes, in each dtype; the ceiling is the best."""
    speeds = []
    for dtype in dtypes:
        for name, rows, inner, cols in model_matmul_shapes(config, batch_size, text_tokens):
            gflops, used_rows = matmul_gflops(rows, inner, cols, DTYPES[dtype], device)
            speeds.append(MatmulSpeed(name, dtype, used_rows, inner, cols, gflops))
    return speeds


def ceiling_gflops(speeds: Sequence[MatmulSpeed], dtype: str) -> float:
    return max(s.gflops for s in speeds if s.dtype == dtype)


def peak_matmul_size(device: torch.device) -> int:
    """A square large enough to fill the device: the model's own shapes leave a GPU mostly idle, and the share of
    a GPU's peak (MFU) is the figure GPU users compare."""
    return 8192 if device.type == "cuda" else 2048


def matmul_peak(
    dtypes: Sequence[str] = ("float32", "bfloat16"), device: str | torch.device = "cpu"
) -> list[MatmulSpeed]:
    """The matrix-multiply speed of one large square product in each dtype: the device's peak, as measured."""
    device = torch.device(device)
    size = peak_matmul_size(device)
    speeds = []
    for dtype in dtypes:
        gflops, rows = matmul_gflops(size, size, size, DTYPES[dtype], device)
        speeds.append(MatmulSpeed(f"square {size}", dtype, rows, size, size, gflops))
    return speeds


# ---------------------------------------------------------------------------------------------------------------
# The training step


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of tensor storage made by operations inside the mode and still alive, and their peak. Works on every
    device (the CPU allocator keeps no statistics). A storage is counted once however many views share it, and
    leaves the count when its memory is freed: PyTorch keeps a storage's Python object alive exactly as long as the
    storage, so a finalizer on it runs at the free."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(output)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in self._sizes or storage.nbytes() == 0:
                continue
            self._sizes[key] = storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key)
        return output


def tensor_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors`."""
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    autocast_dtype: torch.dtype = torch.float32,
    grad_clip: float = 1.0,
) -> torch.Tensor:
    """One step on `batch` as `vlm.training.loop.train` takes it (one process, no gradient accumulation): loss under
    autocast, backward, clipping, the optimizer's step, gradients cleared. Any model whose `forward(**batch)` is the
    loss will do (ours, or the peer). Returns the loss."""
    loss = loss_and_gradients(model, batch, autocast_dtype)
    apply_gradients(model, optimizer, grad_clip)
    return loss


def loss_and_gradients(model: nn.Module, batch: dict[str, torch.Tensor], autocast_dtype: torch.dtype) -> torch.Tensor:
    """The model's share of a training step: the loss under autocast, and its backward pass."""
    amp = autocast(next(model.parameters()).device, autocast_dtype)
    with amp:
        loss = model(**batch)
    loss.backward()
    return loss.detach()


@dataclass
class StepMeasurement:
    batch_size: int
    text_tokens: int  # real (unpadded) text tokens in the batch
    dtype: str
    seconds: float  # per step, median
    flops: float  # per step, counted: the model's forward and backward (the optimizer's step is timed, not counted)
    peak_bytes: int  # live tensors at the step's peak: weights, optimizer state, batch, activations, gradients
    parameters: int

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.text_tokens / self.seconds

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9


def count_step(step: Callable[[], object], persistent: Sequence[torch.Tensor]) -> tuple[int, int]:
    """FLOPs of one call of `step` and its peak bytes of live tensors, counting `persistent` (weights, optimizer
    state, the batch: alive before the step) once."""
    with FlopCounterMode(display=False) as flops, LiveTensorBytes() as memory:
        step()
    return flops.get_total_flops(), tensor_bytes(persistent) + memory.peak


@dataclass
class TrainingStep:
    """A model's training step, ready to time: `run()` does one step; FLOPs and peak memory already counted."""

    run: Callable[[], None]
    flops: int
    peak_bytes: int
    parameters: int

    def measurement(self, batch: dict[str, torch.Tensor], dtype: torch.dtype, seconds: float) -> StepMeasurement:
        return StepMeasurement(
            batch_size=len(batch["images"]),
            text_tokens=int(batch["attention_mask"].sum()),
            dtype="bfloat16" if dtype == torch.bfloat16 else "float32",
            seconds=seconds,
            flops=self.flops,
            peak_bytes=self.peak_bytes,
            parameters=self.parameters,
        )


def prepare_training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    autocast_dtype: torch.dtype = torch.float32,
    grad_clip: float = 1.0,
) -> TrainingStep:
    """The step on `batch` (already on the model's device), after one step to let the optimizer make its state (the
    steady state is what is measured), with its FLOPs and peak memory counted. The weights change as steps run; speed
    does not depend on them."""

    def step() -> None:
        optimizer_step(model, optimizer, batch, autocast_dtype, grad_clip)

    model.train()
    step()
    persistent = [*model.parameters(), *batch.values()]
    persistent += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    _, peak_bytes = count_step(step, persistent)
    # Utilization is the model's work per second: its forward and backward passes, not the optimizer's update
    # (Muon's orthogonalization is matrix products too, left out here; its count from the shapes is in
    # docs/performance.md, "Muon: Newton-Schulz on the Gram matrix, batched by shape").
    flops, _ = count_step(lambda: loss_and_gradients(model, batch, autocast_dtype), [])
    model.zero_grad(set_to_none=True)
    return TrainingStep(step, flops, peak_bytes, sum(p.numel() for p in model.parameters()))


def measure_training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    autocast_dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    grad_clip: float = 1.0,
) -> StepMeasurement:
    """Time, FLOPs and peak memory of one model's training step on `batch`."""
    step = prepare_training_step(model, optimizer, batch, autocast_dtype, grad_clip)
    seconds = seconds_per_call(step.run, repeats, next(model.parameters()).device)
    return step.measurement(batch, autocast_dtype, seconds)


# ---------------------------------------------------------------------------------------------------------------
# Generation


@dataclass
class GenerationTiming:
    batch_size: int
    dtype: str  # "float32" or "bfloat16" (autocast)
    new_tokens: int
    ms_cache: float  # per caption, with the key/value cache
    ms_no_cache: float  # per caption, recomputing the whole sequence at every step

    @property
    def speedup(self) -> float:
        return self.ms_no_cache / self.ms_cache


def captioning_call(
    model: nn.Module,
    tokenizer: Tokenizer,
    batch_size: int,
    use_cache: bool,
    new_tokens: int = 32,
    autocast_dtype: torch.dtype | None = None,
    generate_fn: Callable[..., list[list[int]]] = generate,
) -> Callable[[], None]:
    """A call that writes greedy captions of exactly `new_tokens` tokens for `batch_size` random images (image
    encoding included). `generate_fn` has `vlm.inference.generate.generate`'s signature (the peer's is
    `vlm.experiments.peer.peer_generate`)."""
    device = next(model.parameters()).device
    size = model.config.vision.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
    prompts = [tokenizer.caption_prompt()] * batch_size
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=use_cache)

    def run() -> None:
        outputs = generate_fn(
            model, images, prompts, tokenizer.eos_id, tokenizer.pad_id, config, autocast_dtype=autocast_dtype
        )
        assert all(len(row) == new_tokens for row in outputs)

    return run


def ms_per_caption(
    calls: dict[str, Callable[[], None]], batch_size: int, repeats: int, device: torch.device, warmup: int = 1
) -> dict[str, float]:
    """Milliseconds per caption of each `captioning_call` of `batch_size` captions, timed in alternation."""
    seconds = alternating_seconds(calls, repeats, device, warmup)
    return {name: 1000 * value / batch_size for name, value in seconds.items()}


def generation_timings(
    model: nn.Module,
    tokenizer: Tokenizer,
    batch_sizes: Sequence[int] = (1, 32),
    dtypes: Sequence[str] = ("float32",),
    new_tokens: int = 32,
    repeats: int = 3,
    generate_fn: Callable[..., list[list[int]]] = generate,
    warmup: int = 1,
) -> list[GenerationTiming]:
    """`model` timed at every batch size and dtype, with and without the cache (in alternation: the speedup of the
    cache is the figure that matters)."""
    model.eval()
    device = next(model.parameters()).device
    timings = []
    for dtype in dtypes:
        autocast_dtype = None if dtype == "float32" else DTYPES[dtype]
        for batch_size in batch_sizes:
            calls = {
                name: captioning_call(model, tokenizer, batch_size, use_cache, new_tokens, autocast_dtype, generate_fn)
                for name, use_cache in (("cache", True), ("no cache", False))
            }
            ms = ms_per_caption(calls, batch_size, repeats, device, warmup)
            timings.append(GenerationTiming(batch_size, dtype, new_tokens, ms["cache"], ms["no cache"]))
    return timings


def check_generation_fits(config: VLMConfig, tokenizer: Tokenizer, new_tokens: int, name: str) -> None:
    needed = config.num_image_tokens + len(tokenizer.caption_prompt()) + new_tokens
    if needed > config.max_positions:
        raise ValueError(
            f"{new_tokens} new tokens need {needed} positions, but preset {name!r} has {config.max_positions} "
            f"(decoder.max_text_len={config.decoder.max_text_len} after {config.num_image_tokens} image tokens)"
        )


def benchmark_generation(
    preset: str = "default",
    batch_sizes: Sequence[int] = (1, 32),
    dtypes: Sequence[str] = ("float32",),
    new_tokens: int = 32,
    device: str | torch.device = "cpu",
    repeats: int = 3,
    compile: bool = False,
) -> list[GenerationTiming]:
    """A randomly initialised model of `preset`, timed at every batch size and dtype, with and without the cache.
    compile: both paths run the decoder through torch.compile (`Decoder.compile_features`)."""
    tokenizer = Tokenizer.build(BENCH_TEXTS)
    config = get_preset(preset)
    config.decoder.vocab_size = tokenizer.vocab_size
    check_generation_fits(config, tokenizer, new_tokens, preset)
    torch.manual_seed(0)
    model = VisionLanguageModel(config).to(device)
    if compile:
        model.decoder.compile_features()
    # Compiled, the first calls also settle which sizes stay dynamic: warm up twice.
    return generation_timings(model, tokenizer, batch_sizes, dtypes, new_tokens, repeats, warmup=2 if compile else 1)


def format_timings(timings: Sequence[GenerationTiming]) -> str:
    lines = [
        f"{'batch':>5}  {'dtype':<8}  {'new tokens':>10}  {'cache ms/caption':>16}  {'no cache ms/caption':>19}  "
        f"{'cache speedup':>13}"
    ]
    for t in timings:
        lines.append(
            f"{t.batch_size:>5}  {t.dtype:<8}  {t.new_tokens:>10}  {t.ms_cache:>16.2f}  {t.ms_no_cache:>19.2f}  "
            f"{t.speedup:>12.1f}x"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Our model against its peer (vlm/experiments/peer.py): same batch, optimizer and precision


def first_training_batch(data: TrainingData, config: VLMConfig, batch_size: int, seed: int = 0) -> dict:
    """The first batch the training loop would draw from `data` (mixture order, augmentation, padding): what a
    step really sees, captions and questions of real lengths."""
    dataset = TokenizedDataset(
        MixtureDataset(data.train_parts), data.tokenizer, data.train_transform, config.max_text_len
    )
    sampler = MixtureSampler([len(part) for part in data.train_parts], seed=seed)
    return next(iter(training_loader(dataset, sampler, batch_size)))


@dataclass
class ModelSpeed:
    step: StepMeasurement
    generation: list[GenerationTiming]


@dataclass
class SpeedComparison:
    preset: str
    ceiling: list[MatmulSpeed]  # at the model's shapes
    peak: list[MatmulSpeed]  # one large square product per dtype
    ours: ModelSpeed
    peer: ModelSpeed
    peer_mlp_width: int  # GPT-2's MLP hidden width (`matched_mlp_width`)

    def share_of_ceiling(self, speed: ModelSpeed) -> float:
        return speed.step.gflops / ceiling_gflops(self.ceiling, speed.step.dtype)

    def share_of_peak(self, speed: ModelSpeed) -> float:
        """Model FLOPs utilisation: achieved GFLOP/s over the large-square matmul rate in the step's dtype."""
        return speed.step.gflops / ceiling_gflops(self.peak, speed.step.dtype)

    @property
    def images_per_s_ratio(self) -> float:
        """Ours over the peer's: above 1, ours trains faster."""
        return self.ours.step.images_per_s / self.peer.step.images_per_s

    def generation_ratio(self, batch_size: int, cache: bool = True) -> float:
        """The peer's ms per caption over ours: above 1, ours generates faster."""
        ours, peer = (
            next(t for t in speed.generation if t.batch_size == batch_size) for speed in (self.ours, self.peer)
        )
        return peer.ms_cache / ours.ms_cache if cache else peer.ms_no_cache / ours.ms_no_cache

    def to_dict(self) -> dict[str, Any]:
        """Everything measured plus the derived rates and ratios, for the JSON report."""

        def model(speed: ModelSpeed) -> dict[str, Any]:
            step = speed.step
            derived = {"images_per_s": step.images_per_s, "tokens_per_s": step.tokens_per_s, "gflops": step.gflops}
            shares = {"share_of_ceiling": self.share_of_ceiling(speed), "share_of_peak": self.share_of_peak(speed)}
            return {
                "step": {**asdict(step), **derived, **shares},
                "generation": [{**asdict(t), "cache_speedup": t.speedup} for t in speed.generation],
            }

        sizes = [t.batch_size for t in self.ours.generation]
        return {
            "preset": self.preset,
            "ceiling": [asdict(s) for s in self.ceiling],
            "ceiling_gflops": {
                d: ceiling_gflops(self.ceiling, d) for d in dict.fromkeys(s.dtype for s in self.ceiling)
            },
            "peak": [asdict(s) for s in self.peak],
            "peak_gflops": {s.dtype: s.gflops for s in self.peak},
            "ours": model(self.ours),
            "peer": {**model(self.peer), "mlp_width": self.peer_mlp_width},
            "ratios": {
                "images_per_s": self.images_per_s_ratio,
                **{f"generation_batch_{b}_cache": self.generation_ratio(b) for b in sizes},
                **{f"generation_batch_{b}_no_cache": self.generation_ratio(b, cache=False) for b in sizes},
            },
        }


def compare_speed(
    preset: str,
    config: VLMConfig,
    tokenizer: Tokenizer,
    batch: dict[str, torch.Tensor],
    train_config: TrainConfig,
    device: str | torch.device = "cpu",
    generation_batch_sizes: Sequence[int] = (1, 32),
    new_tokens: int = 32,
    repeats: int = 5,
    ceiling_dtypes: Sequence[str] = ("float32", "bfloat16"),
    peak: Sequence[MatmulSpeed] | None = None,
) -> SpeedComparison:
    """The ceiling at this config's shapes, then for our model and its peer: the training step on `batch` and
    generation, in the precision training would use (`train_config.dtype`) with the optimizer it would build, each
    timing the median of `repeats` calls alternating between the two models. `peak` is `matmul_peak()`'s result,
    measured once per run (measured here when not given)."""
    from vlm.experiments.peer import PeerModel, build_peer_optimizer, peer_generate

    device = torch.device(device)
    config.decoder.vocab_size = tokenizer.vocab_size
    check_generation_fits(config, tokenizer, new_tokens, preset)
    batch = {name: tensor.to(device) for name, tensor in batch.items()}
    amp_dtype = autocast_dtype(device, train_config.dtype)
    dtype = "bfloat16" if amp_dtype == torch.bfloat16 else "float32"
    gen_dtype = None if dtype == "float32" else amp_dtype
    ceiling = matmul_ceiling(config, len(batch["images"]), batch["input_ids"].shape[1], ceiling_dtypes, device)
    peak = list(peak) if peak is not None else matmul_peak(ceiling_dtypes, device)

    torch.manual_seed(train_config.seed)
    ours = VisionLanguageModel(config).to(device)
    torch.manual_seed(train_config.seed)
    peer = PeerModel(config, tokenizer).to(device)
    models = {
        "ours": (ours, build_optimizer(ours, train_config), generate),
        "peer": (peer, build_peer_optimizer(peer, train_config), peer_generate),
    }

    # Every timing alternates between the two models (`alternating_seconds`): the ratios are what is reported.
    steps = {
        name: prepare_training_step(model, optimizer, batch, amp_dtype, train_config.grad_clip)
        for name, (model, optimizer, _) in models.items()
    }
    step_seconds = alternating_seconds({name: step.run for name, step in steps.items()}, repeats, device)
    for model, _, _ in models.values():
        model.eval()
    timings: dict[str, list[GenerationTiming]] = {name: [] for name in models}
    for batch_size in generation_batch_sizes:
        ms = {}
        for use_cache in (True, False):
            calls = {
                name: captioning_call(model, tokenizer, batch_size, use_cache, new_tokens, gen_dtype, generate_fn)
                for name, (model, _, generate_fn) in models.items()
            }
            ms[use_cache] = ms_per_caption(calls, batch_size, repeats, device)
        for name in models:
            timings[name].append(GenerationTiming(batch_size, dtype, new_tokens, ms[True][name], ms[False][name]))
    speeds = {
        name: ModelSpeed(steps[name].measurement(batch, amp_dtype, step_seconds[name]), timings[name])
        for name in models
    }
    return SpeedComparison(preset, ceiling, peak, speeds["ours"], speeds["peer"], peer.mlp_width)


def format_ceiling(comparisons: Sequence[SpeedComparison]) -> str:
    lines = [
        "matrix multiply at the model's shapes and one large square (the peak), GFLOP/s ((rows, inner) @ (inner, "
        "cols); rows cut where slow)"
    ]
    peaks = [("peak", speed) for speed in comparisons[0].peak] if comparisons else []
    for preset, speed in [*peaks, *((c.preset, s) for c in comparisons for s in c.ceiling)]:
        lines.append(
            f"  {preset:<8} {speed.dtype:<8} {speed.name:<12} ({speed.rows:>5}, {speed.inner:>4}) @ "
            f"({speed.inner:>4}, {speed.cols:>4})  {speed.gflops:9.1f}"
        )
    return "\n".join(lines)


def format_steps(comparisons: Sequence[SpeedComparison]) -> str:
    header = (
        f"  {'preset':<8} {'model':<5} {'params':>8} {'dtype':<8} {'batch':>5} {'images/s':>9} {'tokens/s':>9} "
        f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'of ceiling':>10} {'of peak':>8} {'peak MB':>8}"
    )
    lines = ["training step (forward, backward, clipping, optimizer)", header]
    for comparison in comparisons:
        for name, speed in (("ours", comparison.ours), ("peer", comparison.peer)):
            step = speed.step
            lines.append(
                f"  {comparison.preset:<8} {name:<5} {step.parameters / 1e6:>7.2f}M {step.dtype:<8} {step.batch_size:>5} "
                f"{step.images_per_s:>9.1f} {step.tokens_per_s:>9.0f} {step.flops / 1e9:>10.2f} {step.gflops:>8.1f} "
                f"{comparison.share_of_ceiling(speed):>10.0%} {comparison.share_of_peak(speed):>8.1%} "
                f"{step.peak_bytes / 2**20:>8.0f}"
            )
        lines.append(f"  {comparison.preset:<8} ours/peer images/s: {comparison.images_per_s_ratio:.2f}x")
    return "\n".join(lines)


def format_generation(comparisons: Sequence[SpeedComparison]) -> str:
    lines = [
        "generation, ms per caption (greedy, image encoding included)",
        f"  {'preset':<8} {'model':<5} {'dtype':<8} {'batch':>5} {'new tokens':>10} {'cache':>8} {'no cache':>9}",
    ]
    for comparison in comparisons:
        for name, speed in (("ours", comparison.ours), ("peer", comparison.peer)):
            for t in speed.generation:
                lines.append(
                    f"  {comparison.preset:<8} {name:<5} {t.dtype:<8} {t.batch_size:>5} {t.new_tokens:>10} "
                    f"{t.ms_cache:>8.2f} {t.ms_no_cache:>9.2f}"
                )
        ratios = ", ".join(
            f"batch {t.batch_size} {comparison.generation_ratio(t.batch_size):.2f}x" for t in comparison.ours.generation
        )
        lines.append(f"  {comparison.preset:<8} ours/peer speed with the cache: {ratios}")
    return "\n".join(lines)
