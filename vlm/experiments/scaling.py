"""Predictable scaling: train a ladder of small models, fit final validation loss against training compute with a
power law plus a constant, L(C) = a (C / C0)^-b + c, and predict a larger model's loss before training it.

Compute is counted in FLOPs from the model's shapes (`training_flops`), so models of different widths, depths and
step counts fall on one axis. The fit is a small hand-written least squares (scipy is not a dependency): for a
fixed exponent b the model is linear in (a, c), so b is searched on a grid, refined by golden section, and (a, c)
solved exactly at each b (variable projection).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vlm.data.batch import encode_text
from vlm.model.config import VLMConfig, get_preset
from vlm.model.vision_language_model import VisionLanguageModel
from vlm.training.loop import TrainConfig, TrainingData, train

RESULT_FILE = "result.json"


class LadderError(ValueError):
    """A ladder that cannot be run as asked (repeated rungs, a run folder from other settings)."""


# ---------------------------------------------------------------------------------------------------------------
# Compute


def _parameters(module: torch.nn.Module, skip: Callable[[str], bool] = lambda name: False) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if not skip(name))


def _convolution_positions(encoder: torch.nn.Module, image_size: int) -> dict[torch.nn.Conv2d, int]:
    """The output positions of each convolution of the encoder for one image: a convolutional stem's first layers
    run at finer grids than the patches."""
    positions: dict[torch.nn.Conv2d, int] = {}
    convolutions = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [
        m.register_forward_hook(lambda module, _, out: positions.__setitem__(module, out.shape[-2] * out.shape[-1]))
        for m in convolutions
    ]
    try:
        with torch.no_grad():
            encoder(torch.zeros(1, 3, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
    return positions


def flops_per_sample(config: VLMConfig, text_tokens: float, target_tokens: float) -> float:
    """Training FLOPs of one sample: 6 per weight per position it is applied at (2 forward, 4 backward), plus the
    attention products (q k^T and weights @ v, computed in full by the math kernel we use on CPUs). Embedding
    tables are lookups, not matmuls; the encoder's convolutions run at their own grids, its other weights at every
    patch; the output layer runs only at target positions, and the decoder's last block computes keys and values
    for every position but everything else for the text positions alone (see vlm/model/vision_language_model.py)."""
    model = VisionLanguageModel(config)
    vision, decoder = config.vision, config.decoder
    patches, image_tokens = vision.num_patches, config.num_image_tokens
    slots = image_tokens + text_tokens
    width = decoder.width
    convolutions = _convolution_positions(model.vision_encoder, vision.image_size)
    encoder_weights = _parameters(model.vision_encoder, skip=lambda name: "pos_embed" in name) - sum(
        _parameters(conv) for conv in convolutions
    )
    convolution_flops = sum(2 * _parameters(conv) * count for conv, count in convolutions.items())
    block_weights = _parameters(model.decoder.blocks[0])
    key_value_weights = 2 * _parameters(model.decoder.blocks[0].attention.qkv) // 3  # keys and values: 2 of q, k, v
    forward = (
        convolution_flops
        + 2 * encoder_weights * patches
        + 2 * _parameters(model.projector) * image_tokens
        + 2 * block_weights * slots * (decoder.depth - 1)
        + 2 * key_value_weights * slots
        + 2 * (block_weights - key_value_weights) * text_tokens
        + 2 * decoder.vocab_size * width * target_tokens
        + 4 * vision.depth * patches * patches * vision.width
        + 4 * (decoder.depth - 1) * slots * slots * width
        + 4 * text_tokens * slots * width
    )
    return 3.0 * forward


def training_flops(config: VLMConfig, steps: int, batch_size: int, text_tokens: float, target_tokens: float) -> float:
    return flops_per_sample(config, text_tokens, target_tokens) * steps * batch_size


def mean_text_lengths(data: TrainingData, max_text_len: int, count: int = 512) -> tuple[float, float]:
    """Mean text tokens (prompt + target + end) and target tokens per training sample, over the first `count`
    samples of each training part."""
    totals, targets = [], []
    for part in data.train_parts:
        for index in range(min(count, len(part))):
            sample = part[index]
            ids, is_target = encode_text(data.tokenizer, sample.question, sample.target, max_text_len)
            totals.append(len(ids))
            targets.append(sum(is_target))
    return float(np.mean(totals)), float(np.mean(targets))


# ---------------------------------------------------------------------------------------------------------------
# The fit


@dataclass
class PowerLawFit:
    """L(C) = a (C / reference)^-b + c; `reference` keeps the numbers readable (the ladder's smallest compute)."""

    a: float
    b: float
    c: float
    reference: float
    residual: float = 0.0  # sum of squared errors on the fitted points

    def predict(self, compute: float | np.ndarray) -> float | np.ndarray:
        return self.a * (np.asarray(compute, dtype=float) / self.reference) ** -self.b + self.c


def _solve_linear(log_ratio: np.ndarray, loss: np.ndarray, b: float) -> tuple[float, float, float]:
    """Best (a, c) for a fixed b, with c >= 0 (a cross-entropy cannot fall below zero); returns (error, a, c)."""
    basis = np.exp(-b * log_ratio)  # (C / C0)^-b
    design = np.stack([basis, np.ones_like(basis)], axis=1)  # (n, 2)
    (a, c), *_ = np.linalg.lstsq(design, loss, rcond=None)
    if c < 0:
        a, c = float(basis @ loss / (basis @ basis)), 0.0
    error = float(np.sum((a * basis + c - loss) ** 2))
    return error, float(a), float(c)


def fit_power_law(
    compute: Sequence[float], loss: Sequence[float], max_exponent: float = 3.0, grid: int = 600
) -> PowerLawFit:
    """Least-squares fit of L = a (C / C0)^-b + c to points (compute, loss); b in (0, max_exponent]."""
    x, y = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise ValueError(f"a power law plus a constant needs at least 3 (compute, loss) points, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0)):
        raise ValueError("compute must be positive and losses finite")
    if np.ptp(x) == 0:
        raise ValueError("every point has the same compute: the exponent cannot be fitted")
    reference = float(x.min())
    log_ratio = np.log(x / reference)

    def error(b: float) -> float:
        return _solve_linear(log_ratio, y, b)[0]

    exponents = np.linspace(max_exponent / grid, max_exponent, grid)
    errors = [error(b) for b in exponents]
    best = int(np.argmin(errors))
    low, high = exponents[max(best - 1, 0)], exponents[min(best + 1, grid - 1)]
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(80):  # golden-section search between the best grid point's neighbours
        left, right = high - golden * (high - low), low + golden * (high - low)
        if error(left) < error(right):
            high = right
        else:
            low = left
    b = (low + high) / 2
    residual, a, c = _solve_linear(log_ratio, y, b)
    return PowerLawFit(a=a, b=b, c=c, reference=reference, residual=residual)


# ---------------------------------------------------------------------------------------------------------------
# The ladder


@dataclass
class Rung:
    preset: str
    steps: int

    @property
    def name(self) -> str:
        return f"{self.preset}-{self.steps}"


def parse_ladder(spec: str) -> list[Rung]:
    """ "scale-xs:300,scale-s:400" -> rungs (preset names from vlm/model/config.py, optimizer steps)."""
    rungs = []
    for item in spec.split(","):
        preset, sep, steps = item.strip().partition(":")
        if not sep or not steps.strip().isdigit() or int(steps) < 1:
            raise ValueError(f"rung {item.strip()!r} in {spec!r} is not PRESET:STEPS (e.g. scale-s:400)")
        get_preset(preset)  # an unknown name says which exist
        rungs.append(Rung(preset, int(steps)))
    return rungs


@dataclass
class RungResult:
    preset: str
    steps: int
    parameters: int
    flops: float
    val_loss: float  # validation loss after the last step
    seconds: float


def rung_flops(rung: Rung, base: TrainConfig, data: TrainingData) -> float:
    config = get_preset(rung.preset)
    config.decoder.vocab_size = data.tokenizer.vocab_size
    text_tokens, target_tokens = mean_text_lengths(data, config.max_text_len)
    return training_flops(config, rung.steps, base.batch_size * base.grad_accum, text_tokens, target_tokens)


def train_rung(rung: Rung, base: TrainConfig, data: TrainingData, out_dir: Path, device: str = "auto") -> RungResult:
    """Train one rung in out_dir/<preset>-<steps> (resuming an interrupted one) and return its final validation
    loss; a rung that finished before is read back from its result.json instead of trained again."""
    run_dir = out_dir / rung.name
    if (run_dir / RESULT_FILE).is_file():
        return RungResult(**json.loads((run_dir / RESULT_FILE).read_text()))
    model_config = get_preset(rung.preset)
    model_config.decoder.vocab_size = data.tokenizer.vocab_size
    # Validation only at the end: the final loss is the point, and it must not pick an earlier "best" model.
    config = replace(base, out_dir=str(run_dir), max_steps=rung.steps, eval_every=rung.steps)
    resume = (run_dir / "checkpoints" / "last").is_dir()
    state = train(model_config, config, data, resume=resume, device=device)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    result = RungResult(
        preset=rung.preset,
        steps=rung.steps,
        parameters=_parameters(VisionLanguageModel(model_config)),
        flops=rung_flops(rung, base, data),
        val_loss=[r["val_loss"] for r in records if "val_loss" in r][-1],
        seconds=state.elapsed_s,
    )
    (run_dir / RESULT_FILE).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def predict_then_train(
    ladder: Sequence[Rung],
    target: Rung,
    base: TrainConfig,
    data_for: Callable[[VLMConfig], TrainingData],
    out_dir: str | Path,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict:
    """Train the ladder, fit, write the prediction for `target` (prediction.json) BEFORE training it, then train it
    and write scaling.json (every rung, the fit, predicted vs actual) and scaling.png. data_for(config) gives the
    training data for a model config (it may return the same object for every config of one image size)."""
    if len(ladder) < 3:
        raise LadderError(f"the ladder needs at least 3 rungs to fit a power law plus a constant, got {len(ladder)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [rung.name for rung in [*ladder, target]]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LadderError(f"rung(s) {', '.join(repeated)} appear twice in the ladder and target")
    data = {rung.name: data_for(get_preset(rung.preset)) for rung in [*ladder, target]}
    planned = {rung.name: rung_flops(rung, base, data[rung.name]) for rung in [*ladder, target]}
    span = max(planned[r.name] for r in ladder) / min(planned[r.name] for r in ladder)
    log("plan: " + ", ".join(f"{name} {flops:.3g} FLOPs" for name, flops in planned.items()))
    if span < 30:
        warnings.warn(
            f"the ladder spans {span:.1f}x in compute; at least 30x makes the exponent trustworthy", stacklevel=2
        )

    def trained(rung: Rung) -> RungResult:
        result = train_rung(rung, base, data[rung.name], out_dir, device)
        if not math.isclose(result.flops, planned[rung.name], rel_tol=1e-6):
            raise LadderError(
                f"{out_dir / rung.name} holds a run with another batch size or data ({result.flops:.4g} FLOPs, "
                f"{planned[rung.name]:.4g} planned); choose another --out-dir"
            )
        return result

    results = []
    for rung in ladder:
        results.append(trained(rung))
        log(f"{rung.name}: {results[-1].flops:.3g} FLOPs, final validation loss {results[-1].val_loss:.4f}")
    fit = fit_power_law([r.flops for r in results], [r.val_loss for r in results])
    predicted = float(fit.predict(planned[target.name]))
    prediction = {
        "target": target.name,
        "flops": planned[target.name],
        "predicted_val_loss": predicted,
        "fit": asdict(fit),
    }
    (out_dir / "prediction.json").write_text(json.dumps(prediction, indent=2) + "\n")
    log(f"fit: L = {fit.a:.4g} (C / {fit.reference:.3g})^-{fit.b:.4g} + {fit.c:.4g}")
    log(f"{target.name}: predicted final validation loss {predicted:.4f}; training it")
    actual = trained(target)
    report = {
        "ladder": [asdict(r) for r in results],
        "fit": asdict(fit),
        "target": asdict(actual),
        "predicted_val_loss": predicted,
        "actual_val_loss": actual.val_loss,
        "relative_error": (predicted - actual.val_loss) / actual.val_loss,
        "compute_span": span,
    }
    (out_dir / "scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_fit(out_dir / "scaling.png", results, fit, actual, predicted)
    log(f"{target.name}: predicted {predicted:.4f}, actual {actual.val_loss:.4f} ({report['relative_error']:+.1%})")
    return report


def plot_fit(
    path: str | Path, ladder: Sequence[RungResult], fit: PowerLawFit, target: RungResult, predicted: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compute = np.array([r.flops for r in ladder])
    curve = np.geomspace(compute.min() / 1.5, max(compute.max(), target.flops) * 1.5, 200)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(curve, fit.predict(curve), color="tab:blue", label=f"fit: {fit.a:.3g} (C/C0)^-{fit.b:.3g} + {fit.c:.3g}")
    if fit.c > 0:  # a log axis has no room for c = 0
        axis.axhline(fit.c, color="tab:blue", linestyle=":", linewidth=1, label="irreducible loss c")
    axis.scatter(compute, [r.val_loss for r in ladder], color="tab:blue", zorder=3, label="ladder (fitted)")
    for r in ladder:
        axis.annotate(r.preset, (r.flops, r.val_loss), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axis.scatter(
        [target.flops], [predicted], facecolors="none", edgecolors="tab:red", s=80, zorder=4, label="predicted"
    )
    axis.scatter([target.flops], [target.val_loss], color="tab:red", marker="*", s=120, zorder=4, label="actual")
    axis.annotate(target.preset, (target.flops, target.val_loss), textcoords="offset points", xytext=(4, -12))
    axis.set(xscale="log", yscale="log", xlabel="training compute (FLOPs)", ylabel="final validation loss")
    axis.set_title("vlm: validation loss against compute", fontsize=10)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
