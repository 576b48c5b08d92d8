"""What the inference commands share: decoding options, device choice, loading a checkpoint, and turning a
user's mistake into one line on stderr and exit code 2 (no traceback)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
import warnings
from collections.abc import Callable
from pathlib import Path

from vlm.cli.paths import DEFAULT_CHECKPOINT, DEFAULT_REWARD_MODEL
from vlm.data.catalog import DataPaths
from vlm.data.errors import AnnotationError, MissingImagesError, UnreadableImagesError
from vlm.data.images import ImageLoadError
from vlm.inference.generate import GenerationConfig
from vlm.inference.predict import Predictor
from vlm.model.checkpoint import CheckpointError, load_model
from vlm.model.tokenizer import Tokenizer
from vlm.model.vision_encoder import EncoderWeightsError
from vlm.model.vision_language_model import VisionLanguageModel
from vlm.posttrain.reward import RewardModel, load_reward_model
from vlm.runtime import DeviceError, autocast_dtype, resolve_device

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class UsageError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


def add_model_arguments(parser: argparse.ArgumentParser, batched: bool = False) -> None:
    """batched: the command runs large batches (evaluation), where bfloat16 pays on a CPU; one image at a time it
    costs more in casts than it saves, so caption and ask default to float32 there."""
    parser.add_argument(
        "--checkpoint",
        default=str(DEFAULT_CHECKPOINT),
        help=f"model folder or Hugging Face Hub repo id (default: {DEFAULT_CHECKPOINT}, written by the main job)",
    )
    parser.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda or cuda:N")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bfloat16", "float32"],
        help="auto: bfloat16 on GPUs that support it"
        + (" and on CPUs with fast bfloat16" if batched else "; float32 on CPUs"),
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the decoder: a minute or more to start, then faster per token at batch 1 (1.5x on a "
        "2-core CPU; slower at batch 32): worth it for many images or questions asked one at a time",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(batched=batched)


def add_decoding_arguments(parser: argparse.ArgumentParser, max_new_tokens: int | None) -> None:
    """The decoding flags, one per `GenerationConfig` field (max_new_tokens None: chosen by the command later)."""
    group = parser.add_argument_group("decoding")
    add_config_arguments(
        group,
        GenerationConfig,
        defaults=GenerationConfig(max_new_tokens=max_new_tokens),
        exclude=("use_cache",),
        aliases={"num_beams": ["--beams"]},
    )
    group.add_argument(
        "--rerank",
        type=int,
        default=1,
        metavar="N",
        help="best of N: the --strategy output and N-1 samples, the one the reward model scores highest (default 1: off)",
    )
    group.add_argument(
        "--reward-model",
        default=str(DEFAULT_REWARD_MODEL),
        help=f"reward model folder for --rerank (default: {DEFAULT_REWARD_MODEL}, written by vlm-train-reward)",
    )


FIGURE_SUFFIXES = {".png", ".pdf", ".svg", ".jpg", ".jpeg"}
MAX_ATTENTION_ROWS = 16  # rows of one attention figure; more would not be readable


def add_attention_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("attention maps")
    group.add_argument(
        "--attention",
        type=Path,
        metavar="OUT.png",
        help="draw which image tokens each generated token attended to, one row per output, into this figure",
    )
    group.add_argument(
        "--attention-method",
        default="mean",
        choices=["mean", "rollout"],
        help="mean: weights averaged over heads and layers; rollout: attention rollout through the layers",
    )


def check_attention_output(path: Path | None, rows: int) -> None:
    """The figure's file can be written and holds at most MAX_ATTENTION_ROWS rows."""
    if path is None:
        return
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise UsageError(f"--attention {path}: the figure must end in one of {', '.join(sorted(FIGURE_SUFFIXES))}")
    if not path.parent.is_dir():
        raise UsageError(f"--attention {path}: folder {str(path.parent)!r} does not exist")
    if rows > MAX_ATTENTION_ROWS:
        raise UsageError(f"--attention draws at most {MAX_ATTENTION_ROWS} images or questions; got {rows}")


def generation_config(args: argparse.Namespace) -> GenerationConfig:
    config = config_from_args(GenerationConfig, args, exclude=("use_cache",))
    try:
        config.validate()
    except ValueError as error:
        raise UsageError(str(error)) from None
    return config


def _flag_type(cls: type, field: dataclasses.Field) -> type:
    """The type a flag parses to: the field's annotation, with `X | None` read as X."""
    hint = typing.get_type_hints(cls)[field.name]
    options = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    return options[0]


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    defaults: object | None = None,
    exclude: tuple[str, ...] = (),
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """One flag per field of the dataclass `cls` (`--field-name`), its default taken from `defaults` (or the
    class), its type from the annotation; booleans as --flag / --no-flag; a field's `metadata["choices"]` and
    `metadata["help"]` are the flag's. `config_from_args` builds the dataclass back."""
    defaults = defaults if defaults is not None else cls()
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        default = getattr(defaults, field.name)
        flags = [f"--{field.name.replace('_', '-')}", *(aliases or {}).get(field.name, [])]
        help_text = field.metadata.get("help", "")
        help_text = f"{help_text} (default {default})" if help_text else f"(default {default})"
        kind = _flag_type(cls, field)
        if kind is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(
                *flags,
                dest=field.name,
                type=kind,
                default=default,
                choices=field.metadata.get("choices"),
                help=help_text,
            )


def config_from_args(cls: type, args: argparse.Namespace, exclude: tuple[str, ...] = (), **values):
    """The dataclass `cls` from the flags `add_config_arguments` made; `values` fill the excluded fields."""
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in exclude}
    return cls(**fields, **values)


def add_data_path_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser.add_argument_group("data locations (COCO, Karpathy, VQAv2)"), DataPaths)


def data_paths(args: argparse.Namespace) -> DataPaths:
    return config_from_args(DataPaths, args)


def load_matching_reward_model(
    path: str | Path, checkpoint: str | Path, model: VisionLanguageModel, tokenizer: Tokenizer
) -> RewardModel:
    """The reward model in `path`, on the model's device; it scores the model's token ids on the model's image
    tensors, so its vocabulary and image size must be the model's."""
    reward_model, reward_tokenizer = load_reward_model(path, next(model.parameters()).device)
    if reward_tokenizer.bpe_ids != tokenizer.bpe_ids:
        raise UsageError(f"--reward-model {path}: its vocabulary differs from {checkpoint}'s")
    size, reward_size = model.config.vision.image_size, reward_model.backbone.config.vision.image_size
    if size != reward_size:
        raise UsageError(f"--reward-model {path}: it sees {reward_size} px images, {checkpoint} {size} px")
    return reward_model


def build_predictor(args: argparse.Namespace) -> Predictor:
    device = resolve_device(args.device)
    rerank = getattr(args, "rerank", 1)
    if rerank < 1:
        raise UsageError(f"--rerank must be at least 1, got {rerank}")
    model, tokenizer = load_model(args.checkpoint, device)
    scorer = None
    if rerank > 1:
        scorer = load_matching_reward_model(args.reward_model, args.checkpoint, model, tokenizer).scorer(tokenizer)
    dtype = args.dtype
    if dtype == "auto" and device.type == "cpu" and not getattr(args, "batched", False):
        dtype = "float32"
    if args.compile:
        model.decoder.compile_features()
    return Predictor(model, tokenizer, device, autocast_dtype(device, dtype), scorer=scorer, rerank=rerank)


def check_at_least_one(args: argparse.Namespace, *names: str) -> None:
    """Each named count the user gave (None: not given) is at least 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def run_command(prog: str, body: Callable[[], None]) -> None:
    """Run `body`; the errors a user can cause end the program with their message and exit code 2."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *_args, **_kwargs: print(
                f"{prog}: warning: {message}", file=sys.stderr
            )
            body()
    except (
        UsageError,
        CheckpointError,
        ImageLoadError,
        AnnotationError,
        MissingImagesError,
        UnreadableImagesError,
        DeviceError,
        EncoderWeightsError,
        FileNotFoundError,
    ) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
