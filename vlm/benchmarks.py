"""Timing of generation: ms per caption with and without the key/value cache, for any batch size and precision.

Random weights are enough (speed does not depend on what the weights say), so the end token is forbidden until
every caption has exactly `new_tokens` tokens and both paths do the same work. `scripts/bench_generation.py`
prints these numbers; the project benchmark (`scripts/bench.py`) reuses them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vlm.config import get_preset
from vlm.generate import GenerationConfig, generate
from vlm.model import VisionLanguageModel
from vlm.tokenizer import Tokenizer

# Enough words for a tokenizer the size of a small caption vocabulary (the embedding table and output layer are
# part of every decoding step, so their size should be realistic).
BENCH_TEXTS = [
    "a small red circle to the left of a large blue square",
    "two green triangles above a yellow star and three purple hexagons below an orange diamond",
    "is there a gray cross? what color is the shape? how many shapes are there? yes no",
]


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


def seconds_per_call(function, repeats: int, device: torch.device) -> float:
    """Median wall time of `function()` over `repeats` calls, after one warm-up call (allocations, kernel choice)."""
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
    return statistics.median(times)


def time_generation(
    model: VisionLanguageModel,
    tokenizer: Tokenizer,
    batch_size: int,
    use_cache: bool,
    new_tokens: int = 32,
    autocast_dtype: torch.dtype | None = None,
    repeats: int = 3,
) -> float:
    """Milliseconds per caption (image encoding included) for greedy captions of exactly `new_tokens` tokens."""
    device = next(model.parameters()).device
    size = model.config.vision.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
    prompts = [tokenizer.caption_prompt()] * batch_size
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=use_cache)

    def run() -> None:
        outputs = generate(
            model, images, prompts, tokenizer.eos_id, tokenizer.pad_id, config, autocast_dtype=autocast_dtype
        )
        assert all(len(row) == new_tokens for row in outputs)

    return 1000 * seconds_per_call(run, repeats, device) / batch_size


def benchmark_generation(
    preset: str = "default",
    batch_sizes: Sequence[int] = (1, 32),
    dtypes: Sequence[str] = ("float32",),
    new_tokens: int = 32,
    device: str | torch.device = "cpu",
    repeats: int = 3,
) -> list[GenerationTiming]:
    """A randomly initialised model of `preset`, timed at every batch size and dtype, with and without the cache."""
    tokenizer = Tokenizer.build(BENCH_TEXTS)
    config = get_preset(preset)
    config.decoder.vocab_size = tokenizer.vocab_size
    needed = config.num_image_tokens + len(tokenizer.caption_prompt()) + new_tokens
    if needed > config.decoder.max_positions:
        raise ValueError(
            f"{new_tokens} new tokens need {needed} positions, but preset {preset!r} has "
            f"decoder.max_positions={config.decoder.max_positions}"
        )
    torch.manual_seed(0)
    model = VisionLanguageModel(config).to(device).eval()
    timings = []
    for dtype in dtypes:
        autocast_dtype = {"float32": None, "bfloat16": torch.bfloat16}[dtype]
        for batch_size in batch_sizes:
            ms = {
                use_cache: time_generation(model, tokenizer, batch_size, use_cache, new_tokens, autocast_dtype, repeats)
                for use_cache in (True, False)
            }
            timings.append(GenerationTiming(batch_size, dtype, new_tokens, ms[True], ms[False]))
    return timings


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
