"""The performance benchmark: our model against a Hugging Face VisionEncoderDecoderModel (ViT + GPT-2 with
cross-attention) of the same size, both with random weights built from configs. Needs the `bench` extra.

python scripts/bench.py                          # tiny and default presets, then a 600 s wall-clock race
python scripts/bench.py --skip-budget            # speed only (a few minutes)
python scripts/bench.py --skip-speed --budget-s 1800 --check-every-s 60
python scripts/bench.py --presets default large --threads 1 --out runs/bench/cpu1.json

Prints, and writes as JSON to --out: the matrix-multiply ceiling at each preset's shapes and the peak of one large
square product (float32 and bfloat16); the training step of our model and its peer (images/s, tokens/s, counted
FLOPs, GFLOP/s and its share of the ceiling and of the peak, peak memory) in the precision training would use;
generation speed at batch 1 and 32 with and without the cache; then both models trained for the same wall-clock
budget on the built-in data, with their easy-VQA test accuracy, built-in caption test CIDEr-D and the training time
each took to reach the target easy-VQA accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

import torch

from vlm.cli.common import UsageError, run_command
from vlm.data.catalog import DataPaths, parse_data_spec
from vlm.data.transforms import encoder_transform
from vlm.model.config import PRESETS, get_preset
from vlm.runtime import autocast_dtype, cpu_has_fast_bf16, resolve_device
from vlm.training.data import DEFAULT_DATA, load_training_data
from vlm.training.loop import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["tiny", "default"], help="presets to measure")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="training batch")
    parser.add_argument(
        "--optimizer",
        choices=["muon", "adamw"],
        default=TrainConfig.optimizer,
        help=f"optimizer of both models, as vlm-train's --optimizer (default {TrainConfig.optimizer})",
    )
    parser.add_argument("--generation-batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens per caption when timing generation")
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps per model (median shown)")
    parser.add_argument("--budget-s", type=float, default=600.0, help="training seconds per model in the race")
    parser.add_argument("--skip-budget", action="store_true", help="speed only: no wall-clock race")
    parser.add_argument("--skip-speed", action="store_true", help="the wall-clock race only")
    parser.add_argument("--budget-preset", default="default", help="preset of the race")
    parser.add_argument("--check-every-s", type=float, default=30.0, help="training seconds between accuracy checks")
    parser.add_argument("--check-samples", type=int, default=300, help="easy-VQA validation questions per check")
    parser.add_argument("--target", type=float, default=0.95, help="easy-VQA accuracy whose time to reach is shown")
    parser.add_argument(
        "--test-limit", type=int, default=None, help="test samples per set after the race (default: all)"
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"training mixture (default {DEFAULT_DATA})")
    parser.add_argument("--out", default="runs/bench/bench.json", help="JSON report")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: torch's choice); on a machine shared with other jobs 1 thread is far steadier",
    )
    return parser


def machine(device: torch.device) -> dict:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": str(device),
        "name": where,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "training_dtype": str(autocast_dtype(device, "auto")).removeprefix("torch."),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_command("bench.py", lambda: run_benchmark(args))


def run_benchmark(args: argparse.Namespace) -> None:
    for preset in [*args.presets, args.budget_preset]:
        if preset not in PRESETS:
            raise UsageError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if min(args.batch_size, *args.generation_batch_sizes, args.repeats, args.new_tokens) < 1:
        raise UsageError("--batch-size, --generation-batch-sizes, --repeats and --new-tokens must be at least 1")
    if args.budget_s <= 0 or args.check_every_s <= 0:
        raise UsageError("--budget-s and --check-every-s must be positive")
    try:
        mixture = parse_data_spec(args.data)
        import transformers  # noqa: F401  (the peer's library: say so now, not after minutes of measuring)
    except ValueError as error:
        raise UsageError(str(error)) from None
    except ImportError:
        raise UsageError("the peer needs transformers: pip install -e '.[bench]'") from None

    from vlm.experiments.benchmarks import (
        compare_speed,
        first_training_batch,
        format_ceiling,
        format_generation,
        format_steps,
        matmul_peak,
    )
    from vlm.experiments.race import compare_under_budget, format_budget_runs

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_config = TrainConfig(batch_size=args.batch_size, optimizer=args.optimizer, weights=[w for _, w in mixture])
    info = machine(device)
    print(", ".join(f"{key} {value}" for key, value in info.items()), flush=True)

    # One tokenizer for every preset and both models: the vocabulary of the built-in training data.
    data = load_training_data(get_preset(args.budget_preset), mixture, DataPaths(), 1, None)
    comparisons = []
    peak = None if args.skip_speed else matmul_peak(device=device)
    for preset in [] if args.skip_speed else args.presets:
        config = get_preset(preset)
        preset_data = dataclasses.replace(
            data,
            train_transform=encoder_transform(config.vision, train=True),
            eval_transform=encoder_transform(config.vision, train=False),
        )
        batch = first_training_batch(preset_data, config, args.batch_size, train_config.seed)
        print(f"measuring {preset} ...", flush=True)
        comparisons.append(
            compare_speed(
                preset,
                config,
                data.tokenizer,
                batch,
                train_config,
                device,
                args.generation_batch_sizes,
                args.new_tokens,
                args.repeats,
                peak=peak,
            )
        )
    if comparisons:
        print()
        print(format_ceiling(comparisons))
        print(format_steps(comparisons))
        print(format_generation(comparisons), flush=True)
    report: dict = {"machine": info, "arguments": vars(args), "speed": [c.to_dict() for c in comparisons]}

    report["budget"] = None
    if not args.skip_budget:
        config = get_preset(args.budget_preset)
        runs = compare_under_budget(
            config,
            train_config,
            data,
            args.budget_s,
            args.check_every_s,
            args.check_samples,
            args.test_limit,
            device,
        )
        print()
        print(format_budget_runs(runs, args.target))
        report["budget"] = {
            "preset": args.budget_preset,
            "budget_s": args.budget_s,
            "target_accuracy": args.target,
            "runs": [{**dataclasses.asdict(run), "seconds_to_target": run.seconds_to(args.target)} for run in runs],
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nreport written to {out}")


if __name__ == "__main__":
    main()
