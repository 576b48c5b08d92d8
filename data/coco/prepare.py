"""Check a COCO / Karpathy / Flickr caption folder and print its counts; optionally download COCO first.

    python data/coco/prepare.py                                  # check data/coco/prepared
    python data/coco/prepare.py --root /data/coco --download 2017 karpathy

Layout (see README.md): annotations/captions_{train,val}{2014,2017}.json, the image folders train2017/ val2017/
(or train2014/ val2014/), dataset_coco.json; dataset_flickr8k.json + flickr8k/, dataset_flickr30k.json + flickr30k/.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from vlm.data.coco import CaptionDataset, CocoCaptions, KarpathyCaptions
from vlm.data.download import download_and_unzip

DOWNLOADS = {  # name -> official archives (sizes as of the 2017 release)
    "2017": [
        "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",  # 241 MB
        "http://images.cocodataset.org/zips/val2017.zip",  # 1 GB
        "http://images.cocodataset.org/zips/train2017.zip",  # 18 GB
    ],
    "2014": [
        "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",  # 241 MB
        "http://images.cocodataset.org/zips/val2014.zip",  # 6 GB
        "http://images.cocodataset.org/zips/train2014.zip",  # 13 GB
    ],
    "karpathy": ["https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"],  # 36 MB, 3 json
}
FLICKR_IMAGES = {"flickr8k": "flickr8k", "flickr30k": "flickr30k"}  # split file dataset_X.json -> image folder


def describe(name: str, dataset: CaptionDataset) -> str:
    captions = sum(len(references) for references in dataset.captions)
    return f"{name:<28} {len(dataset.image_paths):>8,} images {captions:>9,} captions {dataset.num_skipped:>8,} missing"


def check(root: Path) -> int:
    """Print one line per annotation file found; returns how many were found."""
    found = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing images are counted in the table instead
        for annotation_file in sorted(root.glob("annotations/captions_*.json")):
            folder = annotation_file.stem.removeprefix("captions_")
            dataset = CocoCaptions(annotation_file, root / folder, mode="eval", on_missing="skip")
            print(describe(f"coco {folder}", dataset))
            found += 1
        for dataset_json in sorted(root.glob("dataset_*.json")):
            name = dataset_json.stem.removeprefix("dataset_")
            image_root = root / FLICKR_IMAGES.get(name, "")
            for split in ("train", "restval", "val", "test"):
                dataset = KarpathyCaptions(dataset_json, image_root, split, mode="eval", on_missing="skip")
                if dataset.image_paths or dataset.num_skipped:
                    print(describe(f"karpathy {name} {split}", dataset))
            found += 1
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/coco/prepared"), help="the data folder")
    parser.add_argument("--download", nargs="*", default=[], choices=sorted(DOWNLOADS), help="fetch these first")
    args = parser.parse_args(argv)
    for name in args.download:
        for url in DOWNLOADS[name]:
            download_and_unzip(url, args.root)
    if not check(args.root):
        raise SystemExit(f"no captions_*.json or dataset_*.json under {args.root}: see data/coco/README.md")


if __name__ == "__main__":
    main()
