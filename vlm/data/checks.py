"""Checks every annotation-file data set runs at construction, before any training: the JSON and its entries have
the expected shape (else `AnnotationError` naming the file and entry), and the images it names exist (else
`MissingImagesError`, or a warning and a count when skipping them)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlm.data.errors import AnnotationError, MissingImagesError

ON_MISSING = ("error", "skip")
MODES = ("train", "eval")
_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer"}


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def read_json(path: str | Path, top_level: type) -> Any:
    """The parsed file; FileNotFoundError if absent, AnnotationError if not JSON or of the wrong top-level type."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{path}: not a valid JSON file ({error})") from None
    if not isinstance(data, top_level):
        raise AnnotationError(f"{path}: the top level should be {_TYPE_NAMES[top_level]}, got {type(data).__name__}")
    return data


def field(entry: Any, key: str, kind: type | tuple[type, ...], file: str | Path, where: str) -> Any:
    """entry[key], checked: present, of `kind` (bool is not an int here), and not an empty or blank string.
    `where` names the entry in messages, e.g. "annotations[12] (id 48)"."""
    if not isinstance(entry, dict):
        raise AnnotationError(f"{file}: {where} should be an object, got {type(entry).__name__}")
    if key not in entry:
        raise AnnotationError(f"{file}: {where} has no {key!r}")
    value = entry[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool):
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise AnnotationError(
            f"{file}: {where}: {key!r} should be {expected}, got {type(value).__name__} {_short(value)}"
        )
    if isinstance(value, str) and not value.strip():
        raise AnnotationError(f"{file}: {where}: {key!r} is an empty string")
    return value


def clean_text(text: str) -> str:
    """Whitespace runs (COCO captions carry stray newlines and double spaces) become single spaces. Length is
    kept: fitting the model's context is the tokenizer's job (vlm/data/batch.py)."""
    return " ".join(text.split())


def check_images(paths: Sequence[str], on_missing: str, annotation_file: str | Path) -> list[bool]:
    """Which of `paths` exist (one folder listing per folder, no decoding). With missing ones, "error" raises
    MissingImagesError and "skip" warns; both say how many, with a few examples."""
    check_choice("on_missing", on_missing, ON_MISSING)
    listings: dict[str, set[str]] = {}

    def exists(path: str) -> bool:
        folder, name = os.path.split(path)
        if folder not in listings:
            listings[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        return name in listings[folder]

    present = [exists(path) for path in paths]
    missing = [path for path, ok in zip(paths, present) if not ok]
    if missing:
        examples = ", ".join(missing[:3])
        absent_folders = sorted({os.path.dirname(p) for p in missing if not os.path.isdir(os.path.dirname(p))})
        folders = f" (folder {', '.join(absent_folders[:3])} does not exist)" if absent_folders else ""
        message = (
            f"{len(missing)} of {len(paths)} images named by {annotation_file} are missing{folders}, e.g. {examples}"
        )
        if on_missing == "error":
            raise MissingImagesError(f"{message}; pass on_missing='skip' to leave them out")
        warnings.warn(f"skipping {message}", stacklevel=3)
    return present


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
