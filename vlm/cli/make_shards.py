"""vlm-make-shards: write a caption set the project reads as WebDataset tar shards, to train on with --data shards.

vlm-make-shards --data coco --coco-root data/coco/prepared --out data/shards/coco --shard-size 1000
vlm-make-shards --data karpathy --splits train,val,test --out data/shards/karpathy
vlm-train --data shards --shards-dir data/shards/coco --preset large       # each process streams its own shards
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from vlm.cli.common import UsageError, add_data_path_arguments, data_paths, run_command
from vlm.data.catalog import DATASET_NAMES, build_dataset
from vlm.data.shards import write_shards


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-make-shards", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, choices=DATASET_NAMES, help="the caption set to write")
    parser.add_argument("--out", type=Path, required=True, help="folder for the shards and their index shards.json")
    parser.add_argument(
        "--shard-size",
        type=int,
        default=1000,
        help="images per shard (default 1000: ~160 MB of COCO photos, read whole by one loader worker)",
    )
    parser.add_argument("--splits", default="train,val", help="comma-separated splits to write (default train,val)")
    add_data_path_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def body() -> None:
        splits = [split.strip() for split in args.splits.split(",") if split.strip()]
        unknown = sorted(set(splits) - {"train", "val", "test"})
        if unknown or not splits:
            raise UsageError(f"--splits {args.splits!r}: choose from train, val, test")
        if args.shard_size < 1:
            raise UsageError(f"--shard-size must be at least 1 image, got {args.shard_size}")
        paths = data_paths(args)
        for split in splits:
            try:
                dataset = build_dataset(args.data, split, paths, mode="eval")  # one sample per image
                with tqdm(total=len(dataset), desc=f"{args.data} {split}", unit="image") as progress:
                    entry = write_shards(dataset, args.out, split, args.shard_size, progress=progress.update)
            except ValueError as error:
                raise UsageError(str(error)) from None
            captions = sum(shard["captions"] for shard in entry["shards"])
            print(f"{split}: {len(dataset)} images, {captions} captions in {len(entry['shards'])} shards in {args.out}")

    run_command("vlm-make-shards", body)


if __name__ == "__main__":
    main()
