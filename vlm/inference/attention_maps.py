"""Which part of the image each generated token looked at: attention maps over the image-token grid, and a figure
that lays them over the image.

The maps come from one teacher-forced pass over [image; prompt; generated tokens] after generation, with the
decoder's explicit-attention opt-in: under causal attention that pass sees exactly what each generation step saw,
so the generation loop itself stays untouched (and any strategy, beam or sampling, can be explained).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from vlm.data.transforms import center_square
from vlm.model.vision_language_model import VisionLanguageModel

METHODS = ("mean", "rollout")


@dataclass
class AttendedText:
    """A generated text with one attention map per generated token (the end token excluded)."""

    text: str
    tokens: list[str]  # each generated token as text
    maps: torch.Tensor  # (n_tokens, side, side) over the image-token grid; each map sums to 1


def combine_layers(weights: Sequence[torch.Tensor], method: str = "mean") -> torch.Tensor:
    """Per-layer attention weights [(H, S, S)] * L -> one (S, S) matrix: which slot each query slot draws on.

    "mean": the weights averaged over heads and layers. "rollout" (Abnar & Zuidema 2020): head-averaged weights
    with the residual connection added as an identity, 0.5 A + 0.5 I, multiplied through the layers, so a query
    that reads an image token through another slot still credits the image token."""
    if method not in METHODS:
        raise ValueError(f"attention method must be one of {', '.join(METHODS)}, got {method!r}")
    per_layer = torch.stack([w.float().mean(dim=0) for w in weights])  # (L, S, S)
    if method == "mean":
        return per_layer.mean(dim=0)
    identity = torch.eye(per_layer.shape[-1], device=per_layer.device)
    rollout = identity
    for layer in per_layer:
        rollout = (0.5 * layer + 0.5 * identity) @ rollout  # rows still sum to 1
    return rollout


@torch.no_grad()
def token_attention_maps(
    model: VisionLanguageModel,
    image: torch.Tensor,
    prompt: Sequence[int],
    generated: Sequence[int],
    method: str = "mean",
    image_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n_generated, side, side) maps over the image-token grid for one image (3, H, W), a prompt and the tokens
    generated after it; `image_tokens` (1, N_img, D), if the image was already encoded, saves encoding it again. Map j is the attention of the slot that predicted generated[j] (the last prompt token for
    j = 0), restricted to the image tokens and renormalised there to sum to 1. Image token i covers the
    `reduction x reduction` block of patches at row i // side, column i % side (see vlm/model/projector.py)."""
    num_image = model.num_image_tokens
    side = math.isqrt(num_image)
    if not generated:
        return torch.zeros(0, side, side)
    was_training = model.training
    model.eval()
    try:
        input_ids = torch.tensor([list(prompt) + list(generated)], device=image.device)  # (1, T)
        weights: list[torch.Tensor] = []
        image_tokens = model.encode_images(image[None]) if image_tokens is None else image_tokens
        model.text_hidden_states(image_tokens, input_ids, attention_weights=weights)
    finally:
        model.train(was_training)
    combined = combine_layers([w[0] for w in weights], method)  # (S, S), S = N_img + T
    first = num_image + len(prompt) - 1  # the slot whose output is the first generated token
    to_image = combined[first : first + len(generated), :num_image]  # (n_generated, N_img)
    to_image = to_image / to_image.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return to_image.reshape(len(generated), side, side).cpu()  # row-major image-token grid, as the projector


def save_attention_figure(
    path: str | Path, images: Sequence[Image.Image], attended: Sequence[AttendedText], titles: Sequence[str]
) -> None:
    """One row per (image, text): the image as the model saw it (centre square), titled, then one panel per
    generated token with its map laid over the image. Image tokens are drawn as blocks (no smoothing), so the
    figure shows the resolution the model really attends at; all panels share one colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 1 + max((len(a.tokens) for a in attended), default=0)
    # One colour scale for the whole figure, so a diffuse map looks dimmer than a focused one.
    brightest = max((float(a.maps.max()) for a in attended if len(a.tokens)), default=1.0)
    figure, axes = plt.subplots(len(attended), columns, figsize=(1.6 * columns, 1.9 * len(attended)), squeeze=False)
    for row, (image, item, title) in enumerate(zip(images, attended, titles)):
        picture = center_square(image.convert("RGB"))
        axes[row, 0].imshow(picture, extent=(0, 1, 1, 0))
        axes[row, 0].set_title(textwrap.fill(title, 24), fontsize=7, loc="left")
        for column in range(1, columns):
            axis = axes[row, column]
            if column <= len(item.tokens):
                axis.imshow(picture, extent=(0, 1, 1, 0))
                axis.imshow(
                    item.maps[column - 1].numpy(),
                    extent=(0, 1, 1, 0),
                    cmap="inferno",
                    alpha=0.6,
                    interpolation="nearest",
                    vmin=0.0,
                    vmax=brightest,
                )
                token = item.tokens[column - 1]
                axis.set_title(token.strip() or repr(token), fontsize=8)
        for axis in axes[row]:
            axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
