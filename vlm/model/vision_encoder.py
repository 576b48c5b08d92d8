"""Image -> patch embeddings: a timm Vision Transformer built from `VisionConfig`.

Returns one embedding per patch, (B, N, Dv); class/register tokens, if the architecture has them, are dropped.
Weights start random, or come from a pretrained timm ViT (`vision.pretrained`: ImageNet, CLIP, SigLIP, DINOv2...),
loaded by timm itself from its hub cache or from a local file (`vision.weights_file`).
Optionally the ViT's one-layer patch projection is replaced by a small convolutional stem, which makes a ViT
trained from scratch on little data learn shapes much faster for little more compute
(Xiao et al. 2021, "Early convolutions help transformers see better"; ours: docs/results.md, "The recipe").
"""

from __future__ import annotations

import logging
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


class EncoderWeightsError(ValueError):
    """Pretrained encoder weights that cannot be had: offline, or a file that does not hold the named model."""


def pretrained_vit(config: VisionConfig, load_weights: bool) -> nn.Module:
    """The timm model `config.pretrained` as published, at `config.image_size` (timm resamples the position
    embeddings), without its classifier or pooling. load_weights: timm's own loading, from `config.weights_file`
    or else the hub (through its cache); False when the weights come from elsewhere (a saved model, a resumed run)."""
    name, file = config.pretrained, config.weights_file
    kwargs: dict = dict(img_size=config.image_size, num_classes=0, global_pool="")
    if load_weights and file is not None:
        if not Path(file).is_file():
            raise FileNotFoundError(f"vision.weights_file {file!r} does not exist")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(file))
    # timm loads non-strictly once the classifier is dropped: the tensors the file lacks are only logged, so they
    # are caught from its log, lest an encoder start half random.
    missing: list[str] = []
    timm_log = logging.getLogger("timm.models._builder")
    catcher = _MissingKeys(missing)
    timm_log.addHandler(catcher)
    level = timm_log.level
    timm_log.setLevel(logging.INFO)
    try:
        vit = timm.create_model(name, pretrained=load_weights, **kwargs)
    except OSError as error:  # huggingface_hub and torch.hub errors are OSErrors
        if file is not None and load_weights:
            raise EncoderWeightsError(f"vision.weights_file {file!r}: not readable ({type(error).__name__})") from None
        raise EncoderWeightsError(
            f"vision.pretrained={name}: timm could not download its weights ({type(error).__name__}: offline, or "
            "not on the Hugging Face Hub); without internet, save them elsewhere and pass vision.weights_file=PATH"
        ) from None
    except RuntimeError as error:  # tensors of other shapes: another architecture's weights
        source = f"vision.weights_file {file!r}" if file is not None else f"the hub's copy of {name}"
        last_line = str(error).strip().splitlines()[-1].strip()
        raise EncoderWeightsError(f"{source} does not hold {name}'s weights: {last_line}") from None
    finally:
        timm_log.removeHandler(catcher)
        timm_log.setLevel(level)
    if missing:
        raise EncoderWeightsError(
            f"vision.weights_file {file!r} lacks tensors of {name}: {missing[:3]} (and {max(0, len(missing) - 3)} more)"
        )
    return vit


class _MissingKeys(logging.Handler):
    def __init__(self, found: list[str]):
        super().__init__(logging.INFO)
        self.found = found

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Missing keys ("):
            self.found.extend(message[len("Missing keys (") : message.index(")")].split(", "))


class VisionEncoder(nn.Module):
    """load_weights: load a pretrained encoder's weights (or a weights file) while building; off where they come
    from elsewhere (a saved model, a resumed run)."""

    def __init__(self, config: VisionConfig, load_weights: bool = True):
        super().__init__()
        self.config = config
        if config.stem not in ("patch", "conv"):
            raise ValueError(f"vision.stem must be 'patch' or 'conv', got {config.stem!r}")
        if config.pretrained is not None:
            if config.stem != "patch":
                raise ValueError(
                    f"vision.pretrained={config.pretrained} has its own patch projection: set vision.stem=patch"
                )
            self.vit = pretrained_vit(config, load_weights)
            self._check_matches_config()
        else:
            self.vit = self._build_from_sizes(config, load_weights)
        if config.freeze:
            self.vit.requires_grad_(False)

    @staticmethod
    def _build_from_sizes(config: VisionConfig, load_weights: bool) -> nn.Module:
        """timm's `timm_model` at the config's sizes: trained from scratch, or loaded from a file of the same sizes."""
        weights = config.weights_file if load_weights else None
        if weights is not None and config.stem != "patch":
            raise ValueError(
                f"vision.weights_file {weights!r} holds a patch projection; vision.stem={config.stem!r} would replace "
                "it with untrained convolutions: set vision.stem=patch"
            )
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(f"vision.weights_file {weights!r} does not exist")
        vit = timm.create_model(
            config.timm_model,
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
            vit.patch_embed.proj = conv_stem(config.patch_size, config.width, config.stem_channel_mult)
        return vit

    def _check_matches_config(self) -> None:
        """The sizes the rest of the model is built for are the pretrained model's (`pretrained_vision_config`)."""
        vit, config = self.vit, self.config
        built = dict(
            width=vit.embed_dim, patch_size=vit.patch_embed.patch_size[0], class_token=vit.cls_token is not None
        )
        for name, value in built.items():
            if getattr(config, name) != value:
                raise ValueError(
                    f"vision.{name}={getattr(config, name)} but {config.pretrained} has {value}: describe a "
                    "pretrained encoder with pretrained_vision_config (what --set vision.pretrained=... does)"
                )

    @property
    def num_patches(self) -> int:
        return self.vit.patch_embed.num_patches

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # images: (B, 3, H, W) -> (B, num_prefix + N, Dv) -> (B, N, Dv)
        features = self.vit.forward_features(images)
        return features[:, self.vit.num_prefix_tokens :]
