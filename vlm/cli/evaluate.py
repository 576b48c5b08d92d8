"""vlm-evaluate: score a model on a data set's split; write predictions, metrics and an HTML report; print a table.

vlm-evaluate --data shapes --split test                  # the main job's model, built-in caption set
vlm-evaluate --data easy_vqa --split test --limit 2000
vlm-evaluate --checkpoint runs/blind/model --data shapes --split test --blind
vlm-evaluate --checkpoint runs/ft/model --data folder:my_photos --split test    # a caption folder's test/
vlm-evaluate --data karpathy --split test --karpathy-json data/coco/prepared/dataset_coco.json \\
    --karpathy-images data/coco/prepared
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from vlm.cli.common import (
    UsageError,
    add_data_path_arguments,
    add_decoding_arguments,
    add_model_arguments,
    build_predictor,
    check_at_least_one,
    data_paths,
    generation_config,
    run_command,
)
from vlm.data.catalog import DATASET_NAMES, FOLDER_PREFIX, build_dataset
from vlm.data.overlap import find_training_record, seen_in_training
from vlm.data.sample import Sample
from vlm.evaluation.evaluate import ANSWER_TOKENS, CAPTION_TOKENS, evaluate, format_table, load_samples


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", required=True, help=f"one of {', '.join(DATASET_NAMES)}, or folder:PATH (a caption folder)"
    )
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <checkpoint>/../eval-<data>-<split>[-blind])"
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples of the split")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--blind", action="store_true", help="feed zeros instead of images (a model trained blind)")
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate even on images the model's run folder records among its training images",
    )
    parser.add_argument(
        "--builtin-only", action="store_true", help="captions: the built-in CIDEr-D only (no Java, no toolkit)"
    )
    add_data_path_arguments(parser)
    add_model_arguments(parser, batched=True)
    add_decoding_arguments(parser, max_new_tokens=None)  # by task: captions CAPTION_TOKENS, answers ANSWER_TOKENS
    return parser


def check_not_trained_on(samples: list[Sample], args: argparse.Namespace) -> None:
    """Refuse (or with --allow-overlap, warn about) test images that the model's run trained on."""
    record = find_training_record(Path(args.checkpoint))
    seen = seen_in_training(record, samples) if record is not None else []
    if not seen:
        return
    images = len({sample.image_id for sample in samples})
    examples = ", ".join(map(str, seen[:5]))
    message = (
        f"{len(seen)} of the {images} images of --data {args.data} --split {args.split} are among the training "
        f"images of {args.checkpoint} (recorded in {record}), e.g. image ids {examples}"
    )
    if not args.allow_overlap:
        raise UsageError(
            f"{message}: scores on them would be inflated. Evaluate on images the model has not seen (COCO: train on "
            "--data karpathy, test on --data karpathy --split test), or pass --allow-overlap"
        )
    warnings.warn(f"{message}; evaluating on them as --allow-overlap asks", stacklevel=2)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def body() -> None:
        check_at_least_one(args, "limit", "batch_size")
        if args.data not in DATASET_NAMES and not args.data.startswith(FOLDER_PREFIX):
            raise UsageError(f"--data {args.data!r}: choose from {', '.join(DATASET_NAMES)} or folder:PATH")
        paths = data_paths(args)
        try:
            samples = load_samples(build_dataset(args.data, args.split, paths, mode="eval"), args.limit)
        except ValueError as error:  # a loader's complaint about a file names the file
            raise UsageError(f"--data {args.data} --split {args.split}: {error}") from None
        if not samples:
            raise UsageError(f"--data {args.data} --split {args.split} has no samples")
        check_not_trained_on(samples, args)
        is_caption = samples[0].question is None
        if args.max_new_tokens is None:
            args.max_new_tokens = CAPTION_TOKENS if is_caption else ANSWER_TOKENS
        config = generation_config(args)
        predictor = build_predictor(args)
        predictor.blind = args.blind
        suffix = "-blind" if args.blind else ""
        # Beside the model folder's run; for a Hub repo id (owner/name) in runs/owner--name, not in the Hub's cache.
        run_dir = (
            Path(args.checkpoint).parent
            if Path(args.checkpoint).is_dir()
            else Path("runs", args.checkpoint.replace("/", "--"))
        )
        label = args.data if args.data in DATASET_NAMES else "folder-" + Path(args.data[len(FOLDER_PREFIX) :]).name
        out = args.out or run_dir / f"eval-{label}-{args.split}{suffix}"
        metrics = evaluate(
            predictor, samples, out, config, args.batch_size, toolkit=not args.builtin_only, quiet=args.json
        )
        if args.json:
            print(json.dumps(metrics, indent=2))
            return
        count = f"{metrics['images']} images" if is_caption else f"{metrics['questions']} questions"
        print(format_table(metrics, f"{args.data} {args.split}: {count}, {args.checkpoint}"))
        print(f"predictions, metrics.json and report.html in {out}")

    run_command("vlm-evaluate", body)


if __name__ == "__main__":
    main()
