"""How fast one data-loader worker turns a COCO-format set of photos into training batches, with and without the
loader's savings (JPEG decoding at reduced scale; an image decoded once for all its captions in a batch; uint8
batches).

`scripts/bench_data.py` prints the table; the set it times is written here, photo-sized JPEGs whose detail (gradients,
shapes and noise) makes their decoding cost what a photo's does.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vlm.data.coco import CocoCaptions
from vlm.data.mixture import MixtureSampler, TokenizedDataset, training_loader
from vlm.data.transforms import build_transform
from vlm.model.tokenizer import Tokenizer

WORDS = ("a", "the", "red", "small", "dog", "man", "street", "table", "on", "near", "with", "two", "riding", "bus")


def write_photo_set(root: Path, images: int, captions_per_image: int = 5, size: tuple[int, int] = (640, 480)) -> Path:
    """captions.json and images/ in COCO's layout under `root`; returns the annotation file."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    entries, annotations = [], []
    for image_id in range(images):
        phase = rng.uniform(0, 2 * np.pi, 3)
        pixels = np.stack([127 + 100 * np.sin(x / (40 + 30 * k) + y / 90 + phase[k]) for k in range(3)], axis=-1)
        for _ in range(6):  # a few solid objects with edges, as a photo has
            cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 120)
            pixels[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.uniform(0, 255, 3)
        pixels += rng.normal(0, 10, pixels.shape)  # sensor noise: high frequencies the JPEG must code
        name = f"{image_id:06d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(image_dir / name, quality=90)
        entries.append({"id": image_id, "file_name": name})
        for _ in range(captions_per_image):
            caption = " ".join(rng.choice(WORDS, size=int(rng.integers(6, 14))))
            annotations.append({"id": len(annotations), "image_id": image_id, "caption": caption})
    annotation_file = root / "captions.json"
    annotation_file.write_text(json.dumps({"images": entries, "annotations": annotations}))
    return annotation_file


@dataclass
class LoaderSetting:
    name: str
    reduced_decode: bool
    group_captions: bool  # captions of an image drawn together and the image decoded once per batch
    uint8_images: bool  # batches of uint8 images, normalised by the training loop on its device


SETTINGS = (  # each adds one saving to the one above
    LoaderSetting("before: full decode, once per caption, normalised in the worker", False, False, False),
    LoaderSetting("+ JPEGs decoded at reduced scale", True, False, False),
    LoaderSetting("+ captions grouped by image, one decode per batch", True, True, False),
    LoaderSetting("+ uint8 batches, normalised on the device (training's default)", True, True, True),
)


def worker_cpu_seconds(pids: list[int]) -> float | None:
    """CPU time (user + system) the worker processes have used so far, from /proc (Linux); None elsewhere."""
    try:
        fields = [Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split() for pid in pids]
    except OSError:
        return None
    return sum(int(f[11]) + int(f[12]) for f in fields) / os.sysconf("SC_CLK_TCK")  # utime, stime in ticks


def loader_samples_per_s(
    dataset: CocoCaptions,
    tokenizer: Tokenizer,
    image_size: int,
    setting: LoaderSetting,
    batches: int,
    batch_size: int = 64,
    workers: int = 1,
) -> tuple[float, float | None]:
    """Training samples (image + caption) out of a DataLoader with `workers` workers, as training draws them
    (shifted crops, tokenized captions, collated batches): per second of wall-clock time, and per second of the
    workers' CPU time (what a machine shared with other work still measures fairly). The first batch, which waits
    for the workers to start, is not timed. Needs batches > 2 * workers."""
    tokenized = TokenizedDataset(
        dataset,
        tokenizer,
        build_transform(image_size, train=True),
        max_text_len=32,
        reduced_decode=setting.reduced_decode,
        share_decodes=setting.group_captions,
        uint8_images=setting.uint8_images,
    )
    groups = [dataset.image_groups()] if setting.group_captions else None
    sampler = MixtureSampler([len(dataset)], seed=0, groups=groups)
    loader = training_loader(tokenized, sampler, batch_size, workers)
    batch_iterator = iter(loader)
    next(batch_iterator)
    pids = [worker.pid for worker in getattr(batch_iterator, "_workers", [])]  # the DataLoader's worker processes
    # Each worker works ahead of the batches taken (prefetching); once it idles, it has made exactly that many.
    start_cpu = cpu_when_idle(pids)
    start = time.perf_counter()
    for _ in range(batches):
        next(batch_iterator)
    wall = time.perf_counter() - start
    end_cpu = cpu_when_idle(pids)
    del batch_iterator
    cpu = None if start_cpu is None or end_cpu is None else end_cpu - start_cpu
    ahead = loader.prefetch_factor * workers if workers else 0  # ready before the clock started: not counted
    return (batches - ahead) * batch_size / wall, (batches * batch_size / cpu if cpu else None)


def cpu_when_idle(pids: list[int]) -> float | None:
    """The workers' CPU seconds once they stop using more (their prefetching done)."""
    if not pids:
        return None
    previous = worker_cpu_seconds(pids)
    while True:
        time.sleep(0.2)
        now = worker_cpu_seconds(pids)
        if now is None or now == previous:
            return now
        previous = now
