"""Image -> patch embeddings: a timm Vision Transformer built from `VisionConfig`.

Returns one embedding per patch, (B, N, Dv); class/register tokens, if the architecture has them, are dropped.
Weights start random (`pretrained=False` semantics); a local weights file can be loaded, never a download.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from vlm.config import VisionConfig


class VisionEncoder(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        weights = config.weights_file
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(f"vision.weights_file {weights!r} does not exist")
        self.vit = timm.create_model(
            config.timm_model,
            # With a local file, timm's own loader adapts it (position embeddings resampled to our grid).
            pretrained=weights is not None,
            pretrained_cfg_overlay=dict(file=str(weights)) if weights is not None else None,
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.width,
            depth=config.depth,
            num_heads=config.heads,
            mlp_ratio=config.mlp_ratio,
            class_token=config.class_token,
            num_classes=0,
            global_pool="",
        )
        if config.freeze:
            self.vit.requires_grad_(False)

    @property
    def num_patches(self) -> int:
        return self.vit.patch_embed.num_patches

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # images: (B, 3, H, W) -> (B, num_prefix + N, Dv) -> (B, N, Dv)
        features = self.vit.forward_features(images)
        return features[:, self.vit.num_prefix_tokens :]
