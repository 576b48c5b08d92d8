"""Check a VQAv2 folder and print its counts; optionally download the questions and annotations first.

    python data/vqa/prepare.py                             # check data/vqa/prepared
    python data/vqa/prepare.py --download                  # + questions and annotations (~ 80 MB of zips)
    python data/vqa/prepare.py --download --images         # + the COCO 2014 images (19 GB)

Layout (see README.md): v2_OpenEnded_mscoco_{train,val}2014_questions.json, v2_mscoco_{train,val}2014_annotations.json
and the image folders train2014/ val2014/ (a link to COCO's is fine).
"""

from __future__ import annotations

import argparse
import warnings
from collections import Counter
from pathlib import Path

from vlm.data.download import download_and_unzip
from vlm.data.vqa import VQADataset, most_frequent

VQA_URL = "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa"
ARCHIVES = [
    f"{VQA_URL}/v2_{kind}_{split}_mscoco.zip" for kind in ("Questions", "Annotations") for split in ("Train", "Val")
]
IMAGE_ARCHIVES = ["http://images.cocodataset.org/zips/val2014.zip", "http://images.cocodataset.org/zips/train2014.zip"]
SPLITS = ("train2014", "val2014")


def describe(split: str, dataset: VQADataset) -> str:
    images = len(set(dataset.image_paths))
    types = Counter(dataset.annotations[question_id]["answer_type"] for question_id, _, _ in dataset.rows)
    targets = Counter(most_frequent(dataset.annotations[question_id]["answers"]) for question_id, _, _ in dataset.rows)
    return (
        f"vqa {split}: {len(dataset):,} questions on {images:,} images ({dataset.num_skipped:,} images missing); "
        f"answer types {dict(types.most_common())}; {len(targets):,} distinct targets, top {targets.most_common(5)}"
    )


def check(root: Path) -> int:
    found = 0
    for split in SPLITS:
        questions = root / f"v2_OpenEnded_mscoco_{split}_questions.json"
        annotations = root / f"v2_mscoco_{split}_annotations.json"
        if not questions.is_file() or not annotations.is_file():
            print(f"vqa {split}: no {questions.name} and {annotations.name} in {root}")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing images are counted in the line instead
            print(describe(split, VQADataset(questions, annotations, root / split, mode="eval", on_missing="skip")))
        found += 1
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/vqa/prepared"), help="the data folder")
    parser.add_argument("--download", action="store_true", help="fetch the questions and annotations")
    parser.add_argument("--images", action="store_true", help="with --download: fetch COCO 2014 images too")
    args = parser.parse_args(argv)
    if args.download:
        for url in ARCHIVES + (IMAGE_ARCHIVES if args.images else []):
            download_and_unzip(url, args.root)
    if not check(args.root):
        raise SystemExit(f"no VQAv2 questions + annotations under {args.root}: see data/vqa/README.md")


if __name__ == "__main__":
    main()
