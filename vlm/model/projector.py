"""Patch embeddings -> image tokens in the decoder's width, optionally fewer of them.

Every image token is a decoder position, so the projector first merges each `reduction x reduction` block of
patches into one token: pixel shuffle concatenates their features (nothing lost, as in Idefics3/nanoVLM), average
pooling means them. An MLP then maps the result to the decoder width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlm.model.config import ProjectorConfig


def pixel_shuffle(patches: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, N, D) on a square grid -> (B, N / factor**2, D * factor**2): each factor x factor block becomes one token."""
    if factor == 1:
        return patches
    batch, num_patches, dim = patches.shape
    side = math.isqrt(num_patches)
    assert side * side == num_patches and side % factor == 0, (num_patches, factor)
    blocks = side // factor
    grid = patches.view(batch, blocks, factor, blocks, factor, dim)  # (B, rows, r, cols, r, D)
    grid = grid.permute(0, 1, 3, 2, 4, 5)  # (B, rows, cols, r, r, D)
    return grid.reshape(batch, blocks * blocks, factor * factor * dim)


def average_pool(patches: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, N, D) on a square grid -> (B, N / factor**2, D): each factor x factor block is averaged."""
    if factor == 1:
        return patches
    batch, num_patches, dim = patches.shape
    side = math.isqrt(num_patches)
    assert side * side == num_patches and side % factor == 0, (num_patches, factor)
    grid = patches.transpose(1, 2).reshape(batch, dim, side, side)  # (B, D, side, side)
    pooled = F.avg_pool2d(grid, factor)  # (B, D, side/r, side/r)
    return pooled.flatten(2).transpose(1, 2)  # (B, N/r^2, D)


class Projector(nn.Module):
    def __init__(self, config: ProjectorConfig, vision_width: int, decoder_width: int):
        super().__init__()
        self.config = config
        in_width = vision_width * config.reduction**2 if config.mode == "pixel_shuffle" else vision_width
        hidden = round(decoder_width * config.hidden_mult)
        # Exact GELU, as in the decoder's MLP (faster than the tanh approximation on CPUs).
        self.mlp = nn.Sequential(nn.Linear(in_width, hidden), nn.GELU(), nn.Linear(hidden, decoder_width))

    def reduce(self, patches: torch.Tensor) -> torch.Tensor:
        if self.config.mode == "pixel_shuffle":
            return pixel_shuffle(patches, self.config.reduction)
        return average_pool(patches, self.config.reduction)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        # (B, N, Dv) -> (B, N / r^2, D)
        return self.mlp(self.reduce(patches))
