"""vlm-evaluate: score a model on a data set's split, write predictions, metrics and an HTML report.

vlm-evaluate --data shapes --split test                  # the main job's model, built-in caption set
vlm-evaluate --data easy_vqa --split test --limit 2000
vlm-evaluate --checkpoint runs/blind/model --data shapes --split test --blind
vlm-evaluate --data karpathy --split test --karpathy-json data/coco/prepared/dataset_coco.json --karpathy-images data/coco/prepared
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from torch.utils.data import Subset

from vlm.cli.common import add_decoding_arguments, add_model_arguments, build_predictor, generation_config, run_command
from vlm.data.catalog import DATASET_NAMES, DataPaths, build_dataset
from vlm.evaluate import evaluate, format_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vlm-evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, choices=DATASET_NAMES)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: next to the checkpoint)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images or questions")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--blind", action="store_true", help="replace images by zeros (for a model trained blind)")
    for field in dataclasses.fields(DataPaths):
        parser.add_argument(f"--{field.name.replace('_', '-')}", default=field.default)
    add_model_arguments(parser)
    add_decoding_arguments(parser, max_new_tokens=32)
    args = parser.parse_args(argv)

    def body() -> None:
        paths = DataPaths(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DataPaths)})
        dataset = build_dataset(args.data, args.split, paths, mode="eval")
        if args.limit is not None:
            dataset = Subset(dataset, range(min(args.limit, len(dataset))))
        samples = [dataset[i] for i in range(len(dataset))]
        config = generation_config(args)
        if samples and samples[0].question is not None and args.max_new_tokens == 32:
            config.max_new_tokens = 8  # answers are short
        predictor = build_predictor(args)
        predictor.blind = args.blind
        out = args.out or Path(args.checkpoint).parent / f"eval-{args.data}-{args.split}"
        metrics = evaluate(predictor, samples, out, config, args.batch_size)
        print(
            format_table(
                metrics,
                f"{args.data} {args.split} ({len(samples)} {'images' if samples[0].question is None else 'questions'})",
            )
        )
        print(f"predictions, metrics.json and report.html in {out}")

    run_command("vlm-evaluate", body)


if __name__ == "__main__":
    main()
