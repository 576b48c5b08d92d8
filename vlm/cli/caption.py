"""vlm-caption: caption images.

vlm-caption photo.jpg other.png           # one caption per image
vlm-caption folder/ --json                # every image in a folder, as JSON
vlm-caption photo.jpg --strategy beam --beams 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlm.cli.common import (
    IMAGE_SUFFIXES,
    UsageError,
    add_decoding_arguments,
    add_model_arguments,
    build_predictor,
    generation_config,
    run_command,
)


def image_paths(inputs: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UsageError(f"{item}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths += found
        elif item.exists():
            paths.append(item)
        else:
            raise UsageError(f"{item}: no such image file or folder")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vlm-caption", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--batch-size", type=int, default=32, help="images captioned together")
    add_model_arguments(parser)
    add_decoding_arguments(parser, max_new_tokens=32)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")

    def body() -> None:
        paths = image_paths(args.images)
        config = generation_config(args)
        predictor = build_predictor(args)
        results = []
        for start in range(0, len(paths), args.batch_size):
            batch = paths[start : start + args.batch_size]
            for path, caption in zip(batch, predictor.caption([str(p) for p in batch], config)):
                results.append({"image": str(path), "caption": caption})
                if not args.json:
                    print(f"{path}: {caption}" if len(paths) > 1 else caption, flush=True)
        if args.json:
            print(json.dumps(results, indent=2))

    run_command("vlm-caption", body)


if __name__ == "__main__":
    main()
