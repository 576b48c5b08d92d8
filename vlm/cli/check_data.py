"""vlm-check-data: decode every image of a data set once, in parallel, and list the files that cannot be used
(empty, truncated, not an image, too large), so a set can be cleaned before a long run.

vlm-check-data --data coco --coco-root /data/coco                          # every split; the list on stdout
vlm-check-data --data karpathy --split train --out unreadable.txt          # the bad files' paths, one a line
vlm-check-data --data coco --coco-root /data/coco --out bad.txt && xargs rm < bad.txt

Exit status 0 when every image reads, 1 when some do not, 2 on a usage or annotation error. Files that the
annotations name but the disk lacks stop it first, as they stop training (pass --on-missing skip to leave them out).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from vlm.cli.common import UsageError, add_data_path_arguments, data_paths, run_command
from vlm.data.catalog import build_dataset, parse_data_spec
from vlm.data.unreadable import find_unreadable, image_files

SPLITS = ("train", "val", "test")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-check-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="data sets, comma-separated (weights are ignored)")
    parser.add_argument(
        "--split", action="append", choices=SPLITS, help="a split to check (repeatable; default: all three)"
    )
    parser.add_argument("--out", type=Path, help="write the unreadable files' paths here, one a line")
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)), help="decoding processes (default: every core)"
    )
    add_data_path_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {args.workers}")
        if args.out is not None and not args.out.parent.is_dir():
            raise UsageError(f"--out {args.out}: folder {str(args.out.parent)!r} does not exist")
        paths = data_paths(args)
        files: set[str] = set()
        try:
            for name, _ in parse_data_spec(args.data):
                for split in args.split or SPLITS:
                    files.update(image_files(build_dataset(name, split, paths, mode="eval")))
        except ValueError as error:
            raise UsageError(str(error)) from None
        if not files:
            print(f"{args.data}: no image files to check (its images are drawn in memory)")
            return 0
        start = time.perf_counter()
        unreadable = find_unreadable(sorted(files), args.workers)
        for _, message in unreadable:
            print(message)
        print(
            f"checked {len(files)} images in {time.perf_counter() - start:.1f} s with {args.workers} processes: "
            f"{len(unreadable)} unreadable" + (f", listed in {args.out}" if args.out is not None else "")
        )
        if args.out is not None:
            args.out.write_text("".join(f"{path}\n" for path, _ in unreadable))
        return 1 if unreadable else 0

    status = []
    run_command("vlm-check-data", lambda: status.append(body()))
    if status[0]:
        raise SystemExit(status[0])


if __name__ == "__main__":
    main()
