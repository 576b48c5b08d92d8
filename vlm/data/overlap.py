"""The images a model was trained on, recorded in its run folder (`train_images.json`), so that evaluation can
refuse a test split that shares images with them: COCO 2017 train holds most of the Karpathy test images (both come
from COCO 2014 val), and a model tested on what it was trained on reports inflated scores.

Images are compared by id within a namespace: COCO's image ids are one namespace whichever file names them (COCO
2014/2017 captions, Karpathy's `cocoid`, VQAv2); other sets' ids are their own.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.data import Dataset, IterableDataset

from vlm.data.packing import sample_image_ids, sample_source
from vlm.data.sample import Sample

RECORD_NAME = "train_images.json"
NAMESPACES = {"vqa": "coco"}  # a source whose ids are another's: VQAv2 asks about COCO images by their COCO ids


def namespace(source: str) -> str:
    return NAMESPACES.get(source, source)


def training_images(parts: list[Dataset]) -> dict[str, list[int | str]]:
    """Namespace -> the sorted distinct image ids of the training sets."""
    ids: dict[str, set[int | str]] = {}
    for part in parts:
        if isinstance(part, IterableDataset):
            continue  # a shard stream: its ids are in its shards, not listed without reading them (not recorded)
        ids.setdefault(namespace(sample_source(part)), set()).update(sample_image_ids(part))
    return {name: sorted(found, key=lambda i: (isinstance(i, str), i)) for name, found in sorted(ids.items())}


def write_training_images(run_dir: Path, parts: list[Dataset]) -> None:
    """`run_dir/train_images.json`: one line per namespace, its ids sorted, so the file reads and diffs well."""
    lines = [
        f"{json.dumps(name)}: {json.dumps(ids, separators=(',', ':'))}" for name, ids in training_images(parts).items()
    ]
    (run_dir / RECORD_NAME).write_text("{\n" + ",\n".join(lines) + "\n}\n")


def find_training_record(checkpoint: Path) -> Path | None:
    """The record of the run a model folder belongs to: <run>/model or <run>/checkpoints/last; None if the model
    was copied out of its run folder (or trained before runs kept the record)."""
    for folder in (checkpoint, checkpoint.parent, checkpoint.parent.parent):
        if (folder / RECORD_NAME).is_file():
            return folder / RECORD_NAME
    return None


def seen_in_training(record: Path, samples: list[Sample]) -> list[int | str]:
    """The distinct image ids of `samples` that the recorded training sets held, in the samples' order."""
    trained = {name: set(ids) for name, ids in json.loads(record.read_text()).items()}
    seen = [s.image_id for s in samples if s.image_id in trained.get(namespace(s.source), ())]
    return list(dict.fromkeys(seen))
