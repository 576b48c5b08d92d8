"""vlm-caption: caption images.

vlm-caption photo.jpg other.png           # one caption per image
vlm-caption folder/ --json                # every image in a folder, as JSON
vlm-caption photo.jpg --strategy beam --beams 5
vlm-caption photo.jpg --attention attention.png   # also draw where each generated word looked
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlm.cli.common import (
    IMAGE_SUFFIXES,
    UsageError,
    add_attention_arguments,
    add_decoding_arguments,
    add_model_arguments,
    build_predictor,
    check_at_least_one,
    check_attention_output,
    generation_config,
    run_command,
)
from vlm.data.images import load_image
from vlm.inference.attention_maps import save_attention_figure


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
    add_attention_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        check_at_least_one(args, "batch_size")
        paths = image_paths(args.images)
        check_attention_output(args.attention, len(paths))
        config = generation_config(args)
        predictor = build_predictor(args)
        results, attended = [], []
        for start in range(0, len(paths), args.batch_size):
            batch = [str(p) for p in paths[start : start + args.batch_size]]
            if args.attention:
                attended += predictor.attend(batch, [None] * len(batch), config=config, method=args.attention_method)
                captions = [a.text for a in attended[start:]]
            else:
                captions = predictor.caption(batch, config)
            for path, caption in zip(batch, captions):
                results.append({"image": path, "caption": caption})
                if not args.json:
                    print(f"{path}: {caption}" if len(paths) > 1 else caption, flush=True)
        if args.json:
            print(json.dumps(results, indent=2))
        if args.attention:
            images = [load_image(p) for p in paths]
            save_attention_figure(
                args.attention, images, attended, [f"{p.name}: {a.text}" for p, a in zip(paths, attended)]
            )

    run_command("vlm-caption", body)


if __name__ == "__main__":
    main()
