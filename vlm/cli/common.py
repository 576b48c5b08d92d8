"""What the inference commands share: decoding options, device choice, loading a checkpoint, and turning a
user's mistake into one line on stderr and exit code 2 (no traceback)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from vlm.cli.paths import DEFAULT_CHECKPOINT, DEFAULT_REWARD_MODEL
from vlm.data.catalog import DataPaths
from vlm.data.errors import AnnotationError, MissingImagesError
from vlm.data.images import ImageLoadError
from vlm.inference.generate import GenerationConfig
from vlm.inference.predict import Predictor
from vlm.model.checkpoint import CheckpointError, load_model
from vlm.model.tokenizer import Tokenizer
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
        type=Path,
        default=DEFAULT_CHECKPOINT,
        help=f"model folder (default: {DEFAULT_CHECKPOINT}, written by the main job)",
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


def add_decoding_arguments(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--strategy", default="greedy", choices=["greedy", "beam", "sample"])
    group.add_argument("--beams", type=int, default=4, help="beam width (with --strategy beam)")
    group.add_argument("--length-penalty", type=float, default=1.0)
    group.add_argument("--temperature", type=float, default=1.0)
    group.add_argument("--top-k", type=int, default=0)
    group.add_argument("--top-p", type=float, default=1.0)
    group.add_argument("--seed", type=int, default=None, help="seed for --strategy sample")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    group.add_argument(
        "--rerank",
        type=int,
        default=1,
        metavar="N",
        help="best of N: the --strategy output and N-1 samples, the one the reward model scores highest (default 1: off)",
    )
    group.add_argument(
        "--reward-model",
        type=Path,
        default=DEFAULT_REWARD_MODEL,
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
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        strategy=args.strategy,
        num_beams=args.beams,
        length_penalty=args.length_penalty,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    try:
        config.validate()
    except ValueError as error:
        raise UsageError(str(error)) from None
    return config


def add_data_path_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data locations (COCO, Karpathy, VQAv2)")
    for field in dataclasses.fields(DataPaths):
        group.add_argument(
            f"--{field.name.replace('_', '-')}", default=field.default, help=f"(default {field.default})"
        )


def data_paths(args: argparse.Namespace) -> DataPaths:
    return DataPaths(**{field.name: getattr(args, field.name) for field in dataclasses.fields(DataPaths)})


def load_matching_reward_model(
    path: Path, checkpoint: Path, model: VisionLanguageModel, tokenizer: Tokenizer
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
        DeviceError,
        FileNotFoundError,
    ) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
