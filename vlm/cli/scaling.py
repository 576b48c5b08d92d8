"""vlm-scaling: predict a larger model's final validation loss from a ladder of small ones, then check it.

vlm-scaling                                                   # the default ladder and target (see --help)
vlm-scaling --ladder scale-xs:300,scale-s:400,scale-m:500,scale-l:700 --target default:1000
vlm-scaling --out-dir runs/scaling                            # again: finished rungs are read back, not retrained

Writes, in --out-dir: one run folder per rung, prediction.json (written before the target trains), scaling.json
(every rung, the fit, predicted vs actual) and scaling.png.
"""

from __future__ import annotations

import argparse

from vlm.cli.common import UsageError, add_data_path_arguments, data_paths, run_command
from vlm.data.catalog import parse_data_spec
from vlm.experiments.scaling import LadderError, parse_ladder, predict_then_train
from vlm.model.config import VLMConfig
from vlm.training.data import load_training_data
from vlm.training.loop import TrainingData, finetune_config

DEFAULT_LADDER = "scale-xs:200,scale-s:300,scale-m:400,scale-l:600"
DEFAULT_TARGET = "default:800"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-scaling", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ladder", default=DEFAULT_LADDER, help=f"PRESET:STEPS,... (default {DEFAULT_LADDER})")
    parser.add_argument("--target", default=DEFAULT_TARGET, help=f"PRESET:STEPS to predict (default {DEFAULT_TARGET})")
    parser.add_argument("--data", default="shapes", help="training mixture name:weight,... (default shapes)")
    parser.add_argument("--out-dir", default="runs/scaling")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of every part")
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--val-samples", type=int, default=512, help="validation samples per data set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_data_path_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def body() -> None:
        try:
            ladder = parse_ladder(args.ladder)
            [target] = parse_ladder(args.target)
            mixture = parse_data_spec(args.data)
        except ValueError as error:
            raise UsageError(str(error)) from None
        if len(ladder) < 3:
            raise UsageError(f"--ladder needs at least 3 rungs to fit a power law plus a constant, got {len(ladder)}")
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
        base = finetune_config(
            args.lr,
            batch_size=args.batch_size,
            warmup_steps=args.warmup_steps,
            val_batches=-(-args.val_samples * len(mixture) // args.batch_size),
            seed=args.seed,
            num_workers=args.num_workers,
            dtype=args.dtype,
            log_every=50,
        )
        loaded: dict[int, TrainingData] = {}  # one data set per image size: every rung of the ladder shares it

        def data_for(config: VLMConfig) -> TrainingData:
            size = config.vision.image_size
            if size not in loaded:
                try:
                    loaded[size] = load_training_data(config, mixture, data_paths(args), args.val_samples, None)
                except ValueError as error:
                    raise UsageError(str(error)) from None
            return loaded[size]

        try:
            predict_then_train(ladder, target, base, data_for, args.out_dir, args.device)
        except LadderError as error:
            raise UsageError(str(error)) from None

    run_command("vlm-scaling", body)


if __name__ == "__main__":
    main()
