"""A folder of your own images with their captions, in the Hugging Face image-folder layout (`--data folder:PATH`).

PATH/train/, PATH/test/, PATH/validation/ (or val/, valid/, dev/) each hold images and a `metadata.jsonl` (one JSON
object a line) or `metadata.csv` naming them: `file_name` (a path relative to that folder) and `text` (one caption)
or `captions` (a list; in a CSV, a JSON list in the cell). A folder without split folders is its training split.
A file named on several rows has all their captions; other columns become the Sample's meta. See docs/photos.md.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path

from vlm.data.checks import clean_text
from vlm.data.coco import CaptionDataset
from vlm.data.errors import AnnotationError
from vlm.data.sample import Sample

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
# The folders each split is read from, first found first; the validation split falls back to the test split, then
# (with a warning: its figures are then on training images) to the training split.
SPLIT_FOLDERS = {
    "train": ("train",),
    "val": ("validation", "val", "valid", "dev", "test"),
    "test": ("test",),
}


def split_folder(root: str | Path, split: str) -> Path:
    """The folder that holds `split` of a caption folder (see SPLIT_FOLDERS); FileNotFoundError if none."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: caption folder not found")
    split_dirs = [name for names in SPLIT_FOLDERS.values() for name in names if (root / name).is_dir()]
    if not split_dirs:  # no split folders: the whole folder is the training split
        if split == "test":
            raise FileNotFoundError(f"{root}: no test/ folder (a folder without split folders is training data only)")
        if split == "val":
            warnings.warn(f"{root} has no validation/ or test/ folder: validating on the training images", stacklevel=2)
        return root
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    if split == "val":
        warnings.warn(f"{root} has no validation/ or test/ folder: validating on the training images", stacklevel=2)
        return split_folder(root, "train")
    raise FileNotFoundError(f"{root}: no {'/ or '.join(SPLIT_FOLDERS[split])}/ folder for the {split} split")


class CaptionFolder(CaptionDataset):
    """One split folder: its images and their captions from `metadata.jsonl` or `metadata.csv`."""

    def __init__(self, folder: str | Path, mode: str = "train", on_missing: str = "error"):
        folder = Path(folder)
        found = [folder / name for name in METADATA_FILES if (folder / name).is_file()]
        if not found:
            raise FileNotFoundError(f"{folder}: no {' or '.join(METADATA_FILES)} (file_name and text per image)")
        if len(found) > 1:
            raise AnnotationError(f"{folder}: both {found[0].name} and {found[1].name}; keep one")
        metadata = found[0]
        rows = read_jsonl(metadata) if metadata.suffix == ".jsonl" else read_csv(metadata)
        index_of: dict[str, int] = {}
        image_paths: list[str] = []
        captions: list[list[str]] = []
        metas: list[dict] = []
        for where, row in rows:
            file_name, texts = row_captions(row, metadata, where)
            if file_name not in index_of:
                index_of[file_name] = len(image_paths)
                image_paths.append(os.path.join(folder, file_name))
                captions.append([])
                metas.append({k: v for k, v in row.items() if k not in ("file_name", "text", "captions")})
            captions[index_of[file_name]].extend(texts)
        super().__init__(list(index_of), image_paths, captions, metadata, "folder", mode, on_missing)
        # Other columns of an image's first row, as the Sample's meta (a shapes scene's "scene" and "language"
        # let evaluation score its objects: vlm/evaluation/metrics/shapes_accuracy.py).
        meta_of = dict(zip(index_of, metas))
        self.metas = [meta_of[image_id] for image_id in self.image_ids]

    def __getitem__(self, index: int) -> Sample:
        sample = super().__getitem__(index)
        sample.meta = self.metas[self.rows[index][0]]
        return sample


def read_jsonl(path: Path) -> list[tuple[str, object]]:
    """(where, parsed row) for every non-blank line; a line that is not JSON is an AnnotationError naming it."""
    rows = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as error:
                raise AnnotationError(f"{path}: line {number}: not valid JSON ({error})") from None
    return rows


def read_csv(path: Path) -> list[tuple[str, object]]:
    """(where, row as a dict) for every record after the header; `captions` cells are parsed as JSON lists."""
    rows = []
    with open(path, encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        if "file_name" not in columns or not {"text", "captions"} & set(columns):
            raise AnnotationError(f"{path}: line 1: the header needs file_name and text (or captions), got {columns}")
        for row in reader:
            where = f"line {reader.line_num}"
            if None in row:  # more cells than the header has columns
                raise AnnotationError(
                    f"{path}: {where}: {len(columns) + len(row[None])} cells for {len(columns)} columns"
                )
            row = {key: value for key, value in row.items() if value not in (None, "")}
            if "captions" in row:
                try:
                    row["captions"] = json.loads(row["captions"])
                except json.JSONDecodeError:
                    raise AnnotationError(
                        f"{path}: {where}: 'captions' should be a JSON list of strings, got {row['captions']!r}"
                    ) from None
            rows.append((where, row))
    return rows


def row_captions(row: object, path: Path, where: str) -> tuple[str, list[str]]:
    """(file_name, captions) of a metadata row, or an AnnotationError naming the file, the line and the fault."""
    if not isinstance(row, dict):
        raise AnnotationError(f"{path}: {where}: should be an object with file_name and text, got {type(row).__name__}")
    file_name = row.get("file_name")
    if not isinstance(file_name, str) or not file_name.strip():
        raise AnnotationError(f"{path}: {where}: no 'file_name' (the image's path relative to {path.parent})")
    if "text" in row and "captions" in row:
        raise AnnotationError(f"{path}: {where}: both 'text' and 'captions'; give one")
    texts = [row["text"]] if "text" in row else row.get("captions")
    if texts is None:
        raise AnnotationError(f"{path}: {where}: no 'text' or 'captions' for {file_name}")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        key = "text" if "text" in row else "captions"
        wanted = "a non-empty string" if key == "text" else "a non-empty list of non-empty strings"
        raise AnnotationError(f"{path}: {where}: {key!r} should be {wanted}, got {row[key]!r}")
    return file_name, [clean_text(text) for text in texts]
