"""Render the built-in shapes set to disk, print its statistics and draw a contact sheet. Training does not need
this (the set is rendered on the fly); it is for looking at the data and for using it with other tools.

    python data/shapes/prepare.py                                      # every split, into data/shapes/prepared
    python data/shapes/prepare.py --splits test --num-images 50 --seed 1 --out /tmp/new_shapes

Writes, per split: {out}/{split}/{index:06d}.png, captions_{split}.json (COCO format: images + annotations, every
reference caption, the canonical one first; each image entry carries its scene) and questions_{split}.json; and
{out}/contact_sheet.png (16 images of the first split with their canonical captions).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from vlm.data.shapes import COLOURS, SHAPES, SIZES, SPLIT_SIZES, ShapesDataset, groups_left_to_right
from vlm.model.config import get_preset
from vlm.model.tokenizer import Tokenizer

DEFAULT_OUT = "data/shapes/prepared"
RELATIONS = ("left of", "right of", "above", "below")
SHEET_IMAGES = 16


def image_entry(dataset: ShapesDataset, index: int) -> dict:
    return {
        "id": index,
        "file_name": f"{index:06d}.png",
        "width": dataset.image_size,
        "height": dataset.image_size,
        "scene": dataset.scenes[index].scene.to_json(),  # what is where: enough to re-render or score the image
    }


def coco_captions(dataset: ShapesDataset) -> dict:
    """COCO caption format (vlm.data.coco.CocoCaptions reads it): one annotation per reference caption."""
    images = [image_entry(dataset, i) for i in range(dataset.num_images)]
    captions = [(i, c) for i, a in enumerate(dataset.scenes) for c in a.captions]
    annotations = [{"id": n, "image_id": i, "caption": c} for n, (i, c) in enumerate(captions)]
    info = {"description": f"vlm built-in shapes set, split {dataset.split}, seed {dataset.seed}"}
    return {"info": info, "images": images, "annotations": annotations}


def questions_json(dataset: ShapesDataset) -> dict:
    images = [image_entry(dataset, i) for i in range(dataset.num_images)]
    pairs = [(i, q, a) for i, scene in enumerate(dataset.scenes) for q, a in scene.questions]
    questions = [{"question_id": n, "image_id": i, "question": q, "answer": a} for n, (i, q, a) in enumerate(pairs)]
    return {"images": images, "questions": questions}


def write_split(dataset: ShapesDataset, out: Path) -> None:
    folder = out / dataset.split
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(dataset.num_images):
        dataset.image(index).save(folder / f"{index:06d}.png")
    (out / f"captions_{dataset.split}.json").write_text(json.dumps(coco_captions(dataset)) + "\n")
    (out / f"questions_{dataset.split}.json").write_text(json.dumps(questions_json(dataset)) + "\n")


def contact_sheet(dataset: ShapesDataset, count: int = SHEET_IMAGES, columns: int = 4) -> Image.Image:
    """A grid of images, enlarged with nearest-neighbour so the real pixels show, each above its canonical caption."""
    scale = max(1, 192 // dataset.image_size)
    side = dataset.image_size * scale
    font = ImageFont.load_default()
    line_height, text_lines, pad = 12, 4, 6
    tile_w, tile_h = side + 2 * pad, side + 2 * pad + text_lines * line_height
    count = min(count, dataset.num_images)
    rows = -(-count // columns)
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h), "white")
    draw = ImageDraw.Draw(sheet)
    for n in range(count):
        left, top = (n % columns) * tile_w + pad, (n // columns) * tile_h + pad
        sheet.paste(dataset.image(n).resize((side, side), Image.Resampling.NEAREST), (left, top))
        lines = wrap(f"{n}: {dataset.scenes[n].captions[0]}", side, draw, font)
        for k, line in enumerate(lines[:text_lines]):
            draw.text((left, top + side + 2 + k * line_height), line, fill="black", font=font)
    return sheet


def wrap(text: str, width: float, draw: ImageDraw.ImageDraw, font) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _spread(values: list[int]) -> str:
    return f"min {min(values)}, mean {statistics.mean(values):.1f}, max {max(values)}"


def _counts(counter: Counter, order) -> str:
    return ", ".join(f"{key} {counter[key]}" for key in order)


def describe(dataset: ShapesDataset, tokenizer: Tokenizer) -> str:
    """The statistics of one split, as printed by this script."""
    scenes = [a.scene for a in dataset.scenes]
    objects = [o for s in scenes for o in s.objects]
    group_counts = Counter(count for s in scenes for count, *_ in groups_left_to_right(s))
    canonical = [a.captions[0] for a in dataset.scenes]
    references = [c for a in dataset.scenes for c in a.captions]
    pairs = [qa for a in dataset.scenes for qa in a.questions]
    texts = references + [q for q, _ in pairs]
    relations = Counter(r for text in texts for r in re.findall("|".join(RELATIONS), text))
    kinds = Counter(" ".join(q.split()[:2]) for q, _ in pairs)
    answers = Counter(a for _, a in pairs)
    yes_no = answers["yes"] + answers["no"]
    text_positions = 3 + max(len(tokenizer.encode(c)) for c in references)  # + <bos> <caption> ... <eos>
    return "\n".join(
        [
            f"{dataset.split}: {dataset.num_images:,} images, {len(references):,} captions, {len(pairs):,} questions",
            f"  objects per image: {_counts(Counter(len(s.objects) for s in scenes), range(1, 5))}",
            f"  colours: {_counts(Counter(o.colour for o in objects), COLOURS)}",
            f"  shapes: {_counts(Counter(o.shape for o in objects), SHAPES)}",
            f"  sizes: {_counts(Counter(o.size for o in objects), SIZES)}",
            f"  identical objects per group (canonical captions' counts): {_counts(group_counts, range(1, 5))}",
            f"  relations named in captions and questions: {_counts(relations, RELATIONS)}",
            f"  question kinds: {_counts(kinds, sorted(kinds))}",
            f"  answers: {len(answers)} distinct; yes {answers['yes']} / no {answers['no']} "
            f"({answers['yes'] / max(yes_no, 1):.0%} yes); most common {answers.most_common(6)}",
            f"  canonical caption words: {_spread([len(c.split()) for c in canonical])}; "
            f"tokens: {_spread([len(tokenizer.encode(c)) for c in canonical])}",
            f"  all captions words: {_spread([len(c.split()) for c in references])}; "
            f"tokens: {_spread([len(tokenizer.encode(c)) for c in references])}",
            f"  longest caption with prompt and end token: {text_positions} text positions "
            f"(default preset: {get_preset('default').max_text_len})",
        ]
    )


def shared_scenes(datasets: list[ShapesDataset]) -> int:
    """Images that occur in more than one split, compared by their objects (colour, shape, size, position)."""
    seen: dict[tuple, str] = {}
    shared = 0
    for dataset in datasets:
        for annotated in dataset.scenes:
            key = annotated.scene.objects
            if seen.setdefault(key, dataset.split) != dataset.split:
                shared += 1
    return shared


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT}, git-ignored)")
    parser.add_argument("--seed", type=int, default=0, help="set seed; 0 is the set training and evaluation use")
    parser.add_argument(
        "--splits", default=",".join(SPLIT_SIZES), help=f"comma-separated, from {', '.join(SPLIT_SIZES)}"
    )
    parser.add_argument("--num-images", type=int, help=f"images per split (default: {SPLIT_SIZES})")
    parser.add_argument("--image-size", type=int, default=64, help="side in pixels (default 64)")
    parser.add_argument("--quiet", action="store_true", help="print only where the files went")
    args = parser.parse_args(argv)
    args.splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    for split in args.splits:
        if split not in SPLIT_SIZES:
            parser.error(f"unknown split {split!r} in --splits; choose from {', '.join(SPLIT_SIZES)}")
    if not args.splits:
        parser.error("--splits names no split")
    if args.num_images is not None and args.num_images < 1:
        parser.error(f"--num-images must be at least 1, got {args.num_images}")
    if args.image_size < 8:
        parser.error(f"--image-size must be at least 8 pixels, got {args.image_size}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    datasets = [ShapesDataset(s, args.num_images, seed=args.seed, image_size=args.image_size) for s in args.splits]
    for dataset in datasets:
        write_split(dataset, out)
    contact_sheet(datasets[0]).save(out / "contact_sheet.png")
    if not args.quiet:
        tokenizer = Tokenizer.build(t for d in datasets for t in d.texts())
        for dataset in datasets:
            print(describe(dataset, tokenizer))
        print(f"images shared between splits: {shared_scenes(datasets)}")
        print(f"tokenizer built on these texts: {tokenizer.num_tokens} tokens (256 of them single bytes)")
    images = sum(d.num_images for d in datasets)
    print(f"wrote {images:,} images of {', '.join(args.splits)} to {out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
