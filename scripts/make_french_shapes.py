"""Write the built-in scenes with French captions as a caption folder, for `vlm-train --data folder:PATH`:

    python scripts/make_french_shapes.py                         # data/french_shapes/prepared: train (6000) and test (500)
    python scripts/make_french_shapes.py --out /tmp/fr --train 200 --test 50

The scenes and images are the built-in set's (vlm/data/shapes.py); the captions are written in French from each
scene's objects (vlm/data/shapes_french.py). See docs/results.md, "Fine-tuning in another language".
"""

from __future__ import annotations

import argparse

from vlm.data.shapes import SPLIT_SIZES
from vlm.data.shapes_french import write_caption_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", default="data/french_shapes/prepared", help="the folder to write (train/ and test/ in it)"
    )
    parser.add_argument("--train", type=int, default=SPLIT_SIZES["train"], help="training images")
    parser.add_argument("--test", type=int, default=SPLIT_SIZES["test"], help="test images")
    args = parser.parse_args()
    write_caption_folder(args.out, {"train": args.train, "test": args.test})
    print(f"wrote {args.train} training and {args.test} test images with French captions to {args.out}")


if __name__ == "__main__":
    main()
