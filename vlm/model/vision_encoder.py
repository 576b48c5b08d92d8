"""Image -> patch embeddings: a timm Vision Transformer built from `VisionConfig`.

Returns one embedding per patch, (B, N, Dv); class/register tokens, if the architecture has them, are dropped.
Weights start random (`pretrained=False` semantics); a local weights file can be loaded, never a download.
Optionally the ViT's one-layer patch projection is replaced by a small convolutional stem, which makes a ViT
trained from scratch on little data learn shapes much faster for little more compute
(Xiao et al. 2021, "Early convolutions help transformers see better"; ours: docs/results.md, "The recipe").
"""

from __future__ import annotations

import math
from pathlib import Path

import timm
import torch
from torch import nn

from vlm.model.config import VisionConfig


def conv_stem(patch_size: int, width: int, channel_mult: int = 1) -> nn.Sequential:
    """(B, 3, H, W) -> (B, width, H / patch_size, W / patch_size): stride-2 3x3 convolutions, one per halving,
    doubling channels up to channel_mult * width / 2, then a 1x1 projection. Same output as the patch projection
    it replaces."""
    halvings = round(math.log2(patch_size))
    if 2**halvings != patch_size:
        raise ValueError(f"vision.stem='conv' needs a power-of-two vision.patch_size, got {patch_size}")
    channels = [3] + [max(8, channel_mult * width // 2 ** (halvings - i + 1)) for i in range(1, halvings + 1)]
    layers: list[nn.Module] = []
    for in_channels, out_channels in zip(channels[:-1], channels[1:]):
        # No normalisation: per-image norms (GroupNorm) erase the colour information the captions need, and
        # BatchNorm would tie an image's features to its batch; the ViT's LayerNorms follow.
        layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.GELU()]
    layers.append(nn.Conv2d(channels[-1], width, 1))
    # Without norms, PyTorch's default conv init shrinks the signal at every layer: the stem's output came out far
    # weaker than the ViT's position embeddings, so every image looked alike to the decoder and training sat at the
    # language prior for a long time. He init keeps each layer's output at the scale of its input.
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu" if layer.kernel_size[0] == 3 else "linear")
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class VisionEncoder(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        weights = config.weights_file
        if weights is not None and config.stem != "patch":
            raise ValueError(
                f"vision.weights_file {weights!r} holds a patch projection; vision.stem={config.stem!r} would replace "
                "it with untrained convolutions: set vision.stem=patch"
            )
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
        if config.stem == "conv":
            self.vit.patch_embed.proj = conv_stem(config.patch_size, config.width, config.stem_channel_mult)
        elif config.stem != "patch":
            raise ValueError(f"vision.stem must be 'patch' or 'conv', got {config.stem!r}")
        if config.freeze:
            self.vit.requires_grad_(False)

    @property
    def num_patches(self) -> int:
        return self.vit.patch_embed.num_patches

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # images: (B, 3, H, W) -> (B, num_prefix + N, Dv) -> (B, N, Dv)
        features = self.vit.forward_features(images)
        return features[:, self.vit.num_prefix_tokens :]
