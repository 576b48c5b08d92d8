"""vlm-train: train a model from a preset, with any config field overridden on the command line.

vlm-train                                     # the main job: built-in captions + questions + easy-VQA
vlm-train --preset tiny --max-steps 50 --out-dir runs/tiny
vlm-train --set decoder.depth=6 --lr-decoder 3e-4
torchrun --standalone --nproc_per_node=2 -m vlm.cli.train --data coco --coco-root /data/coco
vlm-train --out-dir runs/main --resume         # continue a run exactly where its last checkpoint left it
vlm-train --init-from runs/main/model --data folder:my_photos --out-dir runs/mine   # a new run from a model
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from vlm.cli.common import (
    UsageError,
    add_config_arguments,
    add_data_path_arguments,
    config_from_args,
    data_paths,
    run_command,
)
from vlm.cli.paths import MAIN_RUN_DIR
from vlm.data.catalog import parse_data_spec
from vlm.data.packing import check_sources, parse_sources, sample_source
from vlm.data.shards import ShardStream
from vlm.data.transforms import Preprocessing
from vlm.model.config import PRESETS, apply_overrides, get_preset
from vlm.model.tokenizer import Tokenizer
from vlm.training.data import DEFAULT_DATA, generation_metrics, load_training_data, preprocessing_for
from vlm.training.init_from import model_config_of
from vlm.training.loop import TrainConfig, clear_unfinished_run, last_checkpoint, train

NOT_FLAGS = ("weights", "data", "betas")  # weights and names come with --data; betas stay the recipe's


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", help=f"model preset: {', '.join(PRESETS)} (default: default)")
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="MODEL_DIR",
        help="start a new run from this model's weights and config, its vocabulary extended with the new data's "
        "(with --resume: the same run continued, from its checkpoint)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a model config field, e.g. --set decoder.depth=6 (repeatable)",
    )
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help=f"training mixture name:weight,... (default {DEFAULT_DATA})"
    )
    parser.add_argument("--val-samples", type=int, default=256, help="validation samples per data set")
    parser.add_argument(
        "--val-generations",
        type=int,
        default=64,
        help="of those, how many per data set each validation also generates for (captions' CIDEr-D and objects "
        "named, answers' accuracy): progress to read in the log, at a time cost that comes out of the budget's "
        "steps; the validation loss, which picks the model, does not depend on it",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run in --out-dir first")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_data_path_arguments(parser)
    add_config_arguments(
        parser.add_argument_group("image preprocessing (unset: the data kind's default, docs/photos.md)"),
        Preprocessing,
    )
    add_config_arguments(
        parser.add_argument_group("training"), TrainConfig, TrainConfig(out_dir=str(MAIN_RUN_DIR)), NOT_FLAGS
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def body() -> None:
        if args.init_from is not None and args.preset is not None:
            raise UsageError("--init-from takes the model's config; drop --preset (--set still applies)")
        try:
            if args.init_from is not None:
                model_config = apply_overrides(model_config_of(args.init_from), args.overrides)
            else:
                model_config = apply_overrides(get_preset(args.preset or "default"), args.overrides)
            mixture = parse_data_spec(args.data)
            train_config = config_from_args(
                TrainConfig, args, NOT_FLAGS, weights=[w for _, w in mixture], data=[name for name, _ in mixture]
            )
            requested = config_from_args(Preprocessing, args)
            if args.init_from is not None and requested.resize is None:
                requested.resize = model_config.vision.resize  # the model's own input, unless asked otherwise
            preprocessing = preprocessing_for(mixture, requested)
            preprocessing.validate()
            model_config.vision.resize = preprocessing.resize  # saved with the model: inference resizes the same
        except ValueError as error:
            raise UsageError(str(error)) from None
        run_dir = Path(train_config.out_dir)
        if args.overwrite and not args.resume and run_dir.exists():
            shutil.rmtree(run_dir)
        resume = args.resume
        if resume and last_checkpoint(run_dir) is None:
            # Killed before its first checkpoint: nothing to continue, so the run starts again, cleared of what the
            # dead one left (a best model or log lines that would read as the new run's).
            print(f"vlm-train: {run_dir} has no checkpoint yet (its run stopped before the first): starting it afresh")
            if os.environ.get("RANK", "0") == "0":
                clear_unfinished_run(run_dir)
            resume = False
        paths = data_paths(args)
        try:
            resume_dir = run_dir if resume else None
            varied = train_config.varied_renderings if train_config.augment else 0.0
            data = load_training_data(
                model_config, mixture, paths, args.val_samples, resume_dir, varied, preprocessing, args.init_from
            )
            streams = [part for part in data.train_parts if isinstance(part, ShardStream)]
            if streams and (len(data.train_parts) > 1 or train_config.packed_text_len):
                raise UsageError("--data shards trains on the shards alone (no other data set) and unpacked")
            if train_config.packed_sources:  # a misspelt source should stop here, not after the first steps' setup
                check_sources([sample_source(p) for p in data.train_parts], parse_sources(train_config.packed_sources))
        except ValueError as error:
            raise UsageError(str(error)) from None
        if args.init_from is not None:
            old_tokens = Tokenizer.load(args.init_from).num_tokens
            print(
                f"--init-from {args.init_from}: vocabulary of {old_tokens} tokens extended by "
                f"{data.tokenizer.num_tokens - old_tokens} from the new data ({data.tokenizer.num_tokens} in all)"
            )
        on_validate = generation_metrics(
            mixture, paths, min(args.val_generations, args.val_samples), data.tokenizer, train_config.blind
        )
        state = train(model_config, train_config, data, resume=resume, device=args.device, on_validate=on_validate)
        print(
            f"trained {state.step} steps; best validation loss {state.best_val_loss:.4f}; model in {run_dir / 'model'}"
        )
        if state.unreadable_images:
            print(
                f"{len(state.unreadable_images)} training images could not be read (named in the warnings above); "
                f"{state.unreadable_reads} draws took the next readable sample instead. List them with vlm-check-data."
            )

    run_command("vlm-train", body)


if __name__ == "__main__":
    main()
