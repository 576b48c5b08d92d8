"""Does a generated caption name every object of a built-in scene? Read off the caption itself, not matched to a
reference: each "<count> [size] <colour> <shape>" mention is parsed, and the multiset of (colour, shape) it
describes must equal the scene's, so a wrong colour, a missing, extra or miscounted object all fail."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from vlm.data.shapes import COLOURS, SHAPES, SIZES

_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
_SHAPE_FORMS = {**{s: s for s in SHAPES}, **{s + "s": s for s in SHAPES}, **{s + "es": s for s in SHAPES}}


def parse_objects(caption: str) -> Counter:
    """(colour, shape) -> count for every object mention. A mention without a count word counts once."""
    words = re.findall(r"[a-z]+", caption.lower())
    found: Counter = Counter()
    for i, word in enumerate(words):
        if word in COLOURS and i + 1 < len(words) and words[i + 1] in _SHAPE_FORMS:
            before = words[i - 1] if i >= 1 else ""
            if before in SIZES:
                before = words[i - 2] if i >= 2 else ""
            found[(word, _SHAPE_FORMS[words[i + 1]])] += _COUNTS.get(before, 1)
    return found


def scene_objects(scene: dict) -> Counter:
    """(colour, shape) -> count of a scene as stored in a Sample's meta["scene"]."""
    return Counter((o["colour"], o["shape"]) for o in scene["objects"])


def names_every_object(caption: str, scene: dict) -> bool:
    return parse_objects(caption) == scene_objects(scene)


def shapes_caption_accuracy(captions: Sequence[str], scenes: Sequence[dict]) -> float:
    """Share of images whose caption names every object's colour and shape, with the right counts."""
    if len(captions) != len(scenes) or not captions:
        raise ValueError(f"need one caption per scene; got {len(captions)} captions for {len(scenes)} scenes")
    return sum(names_every_object(c, s) for c, s in zip(captions, scenes)) / len(scenes)
