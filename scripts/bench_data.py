"""Data-loader throughput on photo-sized JPEGs: samples/s of one worker at 64 and 224 px, with and without the
loader's savings, and the workers needed to feed the H100 training figure of docs/benchmarks.md (not a test).

python scripts/bench_data.py                      # 2,000 images of 640x480, five captions each, in a temp folder
python scripts/bench_data.py --images 500 --repeats 1 --batches 5   # a quick look
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from vlm.data.coco import CocoCaptions
from vlm.experiments.data_loading import SETTINGS, loader_samples_per_s, write_photo_set
from vlm.model.tokenizer import Tokenizer

H100_LARGE_IMAGES_PER_S = 789.0  # docs/benchmarks.md, "One NVIDIA H100": the `large` preset (224 px) trained at this


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224], help="encoder input sizes, px")
    parser.add_argument("--batches", type=int, default=20, help="timed batches of 64 per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per setting; the best is shown")
    parser.add_argument("--workers", type=int, default=1, help="loader workers, at least 1 (figures are per worker)")
    parser.add_argument("--data-dir", type=Path, help="write (or reuse) the set here rather than in a temp folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        root = args.data_dir or Path(temp)
        annotation_file = root / "captions.json"
        if not annotation_file.exists():
            print(f"writing {args.images} JPEGs of 640x480 with {args.captions} captions each to {root} ...")
            write_photo_set(root, args.images, args.captions)
        dataset = CocoCaptions(annotation_file, root / "images", mode="train")
        tokenizer = Tokenizer.build(dataset.texts())
        best: dict[tuple[str, int], tuple[float, float]] = {}  # (setting, size) -> best (wall, CPU) per worker
        for size in args.sizes:
            for setting in SETTINGS:
                runs = [
                    loader_samples_per_s(dataset, tokenizer, size, setting, args.batches, workers=args.workers)
                    for _ in range(args.repeats)
                ]
                wall = max(r[0] for r in runs) / args.workers
                cpu = max(r[1] or 0.0 for r in runs)  # already per CPU-second, whatever the worker count
                best[setting.name, size] = wall, cpu
                shown = ", ".join(f"{r[0] / args.workers:.0f} ({r[1] or 0:.0f})" for r in runs)
                print(f"{size} px, {setting.name}: {shown}", flush=True)

    print(f"\nsamples/s per worker, best of {args.repeats}: wall-clock (per CPU-second of the worker)\n")
    print("| loader | " + " | ".join(f"{size} px" for size in args.sizes) + " |")
    print("| --- | " + " | ".join("---" for _ in args.sizes) + " |")
    for setting in SETTINGS:
        cells = [f"{best[setting.name, size][0]:.0f} ({best[setting.name, size][1]:.0f})" for size in args.sizes]
        print(f"| {setting.name} | " + " | ".join(cells) + " |")
    if 224 in args.sizes:
        # A worker on a core of its own runs at its CPU-second rate.
        rates = [best[setting.name, 224][1] for setting in (SETTINGS[0], SETTINGS[-1])]
        need = [math.ceil(H100_LARGE_IMAGES_PER_S / rate) if rate else 0 for rate in rates]
        print(
            f"\nworkers, each on a core of its own, to feed {H100_LARGE_IMAGES_PER_S:.0f} images/s "
            f"(H100, `large` preset, 224 px): before {need[0]}, now {need[1]}"
        )


if __name__ == "__main__":
    main()
