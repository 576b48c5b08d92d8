"""Configuration of the model: one dataclass per part, composed into `VLMConfig`, plus named presets.

Configs round-trip through JSON (`to_dict` / `from_dict`) and accept command-line style overrides
(`apply_overrides(config, ["decoder.depth=6"])`), so a run folder's `config.json` rebuilds the exact model.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class VisionConfig:
    image_size: int = 64
    # How an image of another shape becomes the square input, in training and at inference alike: "crop" (its
    # centre square) or "pad" (all of it, its aspect kept, padded); see vlm/data/transforms.py.
    resize: str = "crop"
    patch_size: int = 8
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    # timm architecture the encoder is built from; trained from scratch, width/depth/heads above override its sizes.
    timm_model: str = "vit_tiny_patch16_224"
    # Pretrained ViTs from timm carry a class token; our own encoder needs none (we keep patch tokens only).
    class_token: bool = False
    # "patch": the ViT's linear patch projection; "conv": a small convolutional stem in its place (see
    # vlm/model/vision_encoder.py), far more sample-efficient from scratch. A pretrained encoder keeps "patch".
    stem: str = "patch"
    stem_channel_mult: int = 1  # the convolutional stem's channels, as a multiple of its default widths
    # A timm model with pretrained weights, e.g. "vit_small_patch16_224.augreg_in21k_ft_in1k" or
    # "vit_base_patch16_siglip_224.webli": the encoder is that model as published, its sizes, class token,
    # normalization, image size and resize filter read from its pretrained config (`pretrained_vision_config`);
    # timm downloads the weights, or reads them from `weights_file`.
    pretrained: str | None = None
    # The pretrained weights from this local file (timm's state dict, safetensors or torch) instead of the hub.
    weights_file: str | None = None
    # Pixel normalization and resize filter of the images the encoder's weights learnt from; ours from scratch map
    # pixels to [-1, 1]. The image transforms of training, evaluation and inference all read them from here.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    freeze: bool = False  # kept so older config.json files load; freeze parts in training with --freeze

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(self.mean), tuple(self.std)  # JSON gives lists

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


@dataclass
class ProjectorConfig:
    # Image tokens are reduced by `reduction` along each side (reduction**2 fewer tokens): every image
    # token is a decoder position, so this is the cheapest lever on decoder compute.
    reduction: int = 2
    mode: str = "pixel_shuffle"  # "pixel_shuffle" (keeps all information, widens tokens) or "avg_pool"
    hidden_mult: float = 1.0  # MLP hidden width as a multiple of the decoder width


@dataclass
class DecoderConfig:
    # A placeholder until a tokenizer is attached: the real size comes from the vocabulary (`Tokenizer.vocab_size`).
    vocab_size: int = 512
    # Text positions after the image tokens. The decoder's positions are these plus the image tokens, whose count
    # follows from vision.image_size, vision.patch_size and projector.reduction (`VLMConfig.max_positions`).
    max_text_len: int = 48
    # The total fixed instead (image tokens + text); configs written before max_text_len existed give it.
    max_positions: int | None = None
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0


@dataclass
class VLMConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    # Prefix-LM: image tokens see each other in both directions; text stays causal.
    prefix_lm: bool = True

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches // self.projector.reduction**2

    @property
    def max_positions(self) -> int:
        """The decoder's positions: image tokens + text."""
        if self.decoder.max_positions is not None:
            return self.decoder.max_positions
        return self.num_image_tokens + self.decoder.max_text_len

    @property
    def max_text_len(self) -> int:
        return self.max_positions - self.num_image_tokens

    def validate(self) -> None:
        v, p, d = self.vision, self.projector, self.decoder
        step = v.patch_size * p.reduction  # image sides that give whole patches and whole projector blocks
        nearest = max(step, round(v.image_size / step) * step)
        if v.image_size % v.patch_size:
            raise ValueError(
                f"vision.image_size={v.image_size} is not a multiple of vision.patch_size={v.patch_size}: "
                f"set vision.image_size={nearest}"
            )
        if v.grid_size % p.reduction:
            raise ValueError(
                f"projector.reduction={p.reduction} does not divide the patch grid side {v.grid_size} "
                f"(image_size {v.image_size} / patch_size {v.patch_size}): set vision.image_size={nearest}"
            )
        if v.resize not in ("crop", "pad"):
            raise ValueError(f"vision.resize must be 'crop' or 'pad', got {v.resize!r}")
        if v.stem_channel_mult < 1:
            raise ValueError(f"vision.stem_channel_mult must be a positive whole number, got {v.stem_channel_mult}")
        if v.interpolation not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"vision.interpolation must be nearest, bilinear or bicubic, got {v.interpolation!r}")
        if p.mode not in ("pixel_shuffle", "avg_pool"):
            raise ValueError(f"projector.mode must be 'pixel_shuffle' or 'avg_pool', got {p.mode!r}")
        for name, part in (("vision", v), ("decoder", d)):
            if part.width % part.heads:
                raise ValueError(f"{name}.width={part.width} is not divisible by {name}.heads={part.heads}")
        if d.max_positions is not None and self.max_text_len < 8:
            raise ValueError(
                f"decoder.max_positions={d.max_positions} leaves {self.max_text_len} text positions after "
                f"{self.num_image_tokens} image tokens: set decoder.max_positions=none (the image tokens plus "
                f"decoder.max_text_len={d.max_text_len}) or raise it"
            )
        if d.max_positions is None and d.max_text_len < 8:
            raise ValueError(f"decoder.max_text_len must be at least 8, got {d.max_text_len}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VLMConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config field(s): {sorted(unknown)}")
        parts = {
            name: _dataclass_from_dict(_PART_CLASSES[name], value, name) if name in _PART_CLASSES else value
            for name, value in data.items()
        }
        return cls(**parts)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> VLMConfig:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(data)


_PART_CLASSES = {"vision": VisionConfig, "projector": ProjectorConfig, "decoder": DecoderConfig}


def _dataclass_from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix!r} must be an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown config field(s) in {prefix}: {sorted(unknown)}")
    return cls(**data)


PRESETS: dict[str, VLMConfig] = {
    # Seconds-fast model for unit tests: 32x32 images, 4 image tokens.
    "tiny": VLMConfig(
        vision=VisionConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2),
        projector=ProjectorConfig(reduction=2),
        decoder=DecoderConfig(max_text_len=44, width=32, depth=2, heads=2),
    ),
    # Sized to train on a 2-core CPU: 64x64 images, 16 patches of 16 px, each one image token.
    # The convolutional stem: on the GPU sweep it named every object correctly on more of the validation images than
    # the patch projection, at the same CPU speed; with Muon stepping its filters, wider stems named more again
    # (docs/results.md, "The recipe"; docs/recipe_sweep.md). Four halvings (32, 64, 128, 256 channels) bring the
    # image to the 4 x 4 grid of image tokens before the Transformer rather than after it: the encoder's layers run
    # over 16 tokens instead of 64, a step costs less, and the steps a budget buys taught more than the 8 x 8 grid's
    # did (docs/results.md, "Sixteen tokens from the stem"). The decoder's MLP as wide as its stream, not four times:
    # the scenes' language is small, and the same steps taught the model as much for less compute (docs/results.md,
    # "A slower machine's steps, and a narrower decoder MLP").
    "default": VLMConfig(
        vision=VisionConfig(
            image_size=64, patch_size=16, width=128, depth=4, heads=4, stem="conv", stem_channel_mult=4
        ),
        projector=ProjectorConfig(reduction=1),
        decoder=DecoderConfig(max_text_len=48, width=256, depth=4, heads=4, mlp_ratio=1.0),
    ),
    # The ladder of scripts/scaling.py: 64x64 images like `default`, each rung ~3x the training FLOPs per sample
    # of the one before (scale-xs to scale-l: 25x; `default` is 1.2x scale-l).
    "scale-xs": VLMConfig(
        vision=VisionConfig(image_size=64, patch_size=8, width=32, depth=1, heads=2),
        decoder=DecoderConfig(max_text_len=48, width=48, depth=1, heads=2),
    ),
    "scale-s": VLMConfig(
        vision=VisionConfig(image_size=64, patch_size=8, width=48, depth=2, heads=2),
        decoder=DecoderConfig(max_text_len=48, width=64, depth=2, heads=2),
    ),
    "scale-m": VLMConfig(
        vision=VisionConfig(image_size=64, patch_size=8, width=64, depth=2, heads=2),
        decoder=DecoderConfig(max_text_len=48, width=128, depth=2, heads=4),
    ),
    "scale-l": VLMConfig(
        vision=VisionConfig(image_size=64, patch_size=8, width=96, depth=3, heads=4),
        decoder=DecoderConfig(max_text_len=48, width=192, depth=3, heads=4),
    ),
    # GPU-sized: ViT-S/16 encoder at 224 px (49 image tokens after reduction), GPT-2-small-sized decoder.
    "large": VLMConfig(
        vision=VisionConfig(
            image_size=224, patch_size=16, width=384, depth=12, heads=6, timm_model="vit_small_patch16_224"
        ),
        projector=ProjectorConfig(reduction=2),
        decoder=DecoderConfig(max_text_len=79, width=768, depth=12, heads=12),
    ),
}


def get_preset(name: str) -> VLMConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def apply_overrides(config: VLMConfig, overrides: list[str]) -> VLMConfig:
    """Return a copy of `config` with `section.field=value` overrides applied (values parsed by the field's type).
    Naming a pretrained encoder (vision.pretrained or vision.weights_file) also sets what comes with it
    (`pretrained_vision_config`); an image size given in the same overrides is kept (position embeddings resampled)."""
    data = config.to_dict()
    keys = set()
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep:
            raise ValueError(f"override {override!r} is not of the form section.field=value")
        key = key.strip()
        *sections, name = key.split(".")
        target = data
        for section in sections:
            if not isinstance(target.get(section), dict):
                raise ValueError(f"override {override!r}: no config section {section!r}")
            target = target[section]
        if name not in target:
            raise ValueError(f"override {override!r}: no config field {key!r}")
        # A field that is None now (decoder.max_positions, say) parses by its annotation's other type.
        hint = typing.get_type_hints(_PART_CLASSES[sections[0]] if sections else VLMConfig)[name]
        example = target[name] if target[name] is not None else typing.get_args(hint)[0]()
        target[name] = _parse_like(example, raw.strip(), key)
        keys.add(key)
    vision = data["vision"]
    if keys & {"vision.pretrained", "vision.weights_file"} and (vision["pretrained"] or vision["weights_file"]):
        taken = sorted(k for k in keys if k.removeprefix("vision.") in PRETRAINED_FIELDS)
        if taken:
            raise ValueError(f"--set {taken[0]}: a pretrained encoder's {taken[0]} is its own; leave it out")
        resolved = pretrained_vision_config(
            _dataclass_from_dict(VisionConfig, vision, "vision"), keep_image_size="vision.image_size" in keys
        )
        data["vision"] = dataclasses.asdict(resolved)
    return VLMConfig.from_dict(data)


# What a pretrained encoder's own model and pretrained config decide (the image size too, unless given).
PRETRAINED_FIELDS = (
    "timm_model",
    "patch_size",
    "width",
    "depth",
    "heads",
    "mlp_ratio",
    "class_token",
    "stem",
    "mean",
    "std",
    "interpolation",
)


def pretrained_vision_config(vision: VisionConfig, keep_image_size: bool = False) -> VisionConfig:
    """`vision` with the encoder named by vision.pretrained (or, for a weights file alone, vision.timm_model at
    timm's default pretrained tag) described as timm publishes it: sizes, class token and patch size from the model,
    normalization, resize filter and image size (unless `keep_image_size`) from its pretrained config. Builds the
    model on the meta device: no weights are made or read."""
    import timm
    import torch
    from timm.models import VisionTransformer

    name = vision.pretrained or vision.timm_model
    setting = "vision.pretrained" if vision.pretrained else "vision.timm_model"
    if not timm.is_model(name):
        raise ValueError(f"{setting}={name!r} is not a timm model (timm.list_pretrained('vit_*') lists them)")
    try:
        with torch.device("meta"):
            vit = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    except RuntimeError as error:  # an unknown pretrained tag
        raise ValueError(f"{setting}={name!r}: {error}") from None
    if not isinstance(vit, VisionTransformer):
        raise ValueError(f"{setting}={name!r} is a {type(vit).__name__}, not a timm VisionTransformer")
    cfg = vit.pretrained_cfg
    # Informational (timm builds the blocks): a parallel block (timm's ParallelScalingBlock) holds its heads itself
    # and has no separate MLP.
    block = vit.blocks[0]
    hidden = getattr(getattr(block, "mlp", None), "fc1", None)
    heads = getattr(getattr(block, "attn", block), "num_heads", vision.heads)
    patch_height, patch_width = vit.patch_embed.patch_size
    assert patch_height == patch_width, vit.patch_embed.patch_size
    return dataclasses.replace(
        vision,
        pretrained=f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else cfg["architecture"],
        timm_model=cfg["architecture"],
        image_size=vision.image_size if keep_image_size else cfg["input_size"][-1],
        patch_size=patch_width,
        width=vit.embed_dim,
        depth=len(vit.blocks),
        heads=heads,
        mlp_ratio=hidden.out_features / vit.embed_dim if hidden is not None else vision.mlp_ratio,
        class_token=vit.cls_token is not None,
        stem="patch",
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"),
    )


def _parse_like(current: Any, raw: str, key: str) -> Any:
    if raw.lower() in ("none", "null"):
        return None
    try:
        if isinstance(current, (list, tuple)):  # e.g. vision.mean=0.5,0.5,0.5
            values = tuple(float(part) for part in raw.split(","))
            if len(values) != len(current):
                raise ValueError
            return values
        if isinstance(current, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return raw.lower() in ("true", "1")
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        expected = (
            f"{len(current)} comma-separated numbers"
            if isinstance(current, (list, tuple))
            else f"a {type(current).__name__}"
        )
        raise ValueError(f"override {key}={raw!r}: expected {expected}") from None
    return raw
