"""Does a generated caption name every object of a built-in scene? Read off the caption itself, not matched to a
reference: each "[count] [size] <colour> [size] <shape>" mention is parsed, and the multiset of (colour, shape) it
describes must equal the scene's, so a wrong colour, a missing, extra or miscounted object all fail. Any wording
works ("two red circles", "a picture of a blue square and 2 red circles", "a small red circle left of a big red
circle"); sizes and relations are not scored."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from vlm.data.shapes import COLOURS, SHAPES, SIZES, Scene

COUNT_WORDS = {"no": 0, "zero": 0, "a": 1, "an": 1, "one": 1, "another": 1, "two": 2, "three": 3, "four": 4}
COUNT_WORDS |= {"five": 5, "six": 6, "seven": 7, "eight": 8}  # more than a scene holds: wrong, but still a count
# "circle" and "circles" -> "circle"; "cross" and "crosses" -> "cross"
_SHAPE_FORMS = {form: shape for shape in SHAPES for form in (shape, shape + "s", shape + "es")}
_WORD = re.compile(r"[a-z]+|\d+")


@dataclass(frozen=True)
class Mention:
    count: int | None  # None: a plural with no count word ("red circles"), which cannot be checked
    colour: str
    shape: str


def parse_mentions(caption: str) -> list[Mention]:
    """Every "<colour> <shape>" in the caption with the count word before it (sizes may sit on either side of the
    colour). A singular without a count word ("the red circle") counts once."""
    words = _WORD.findall(caption.lower())
    mentions = []
    for i, word in enumerate(words):
        if word not in COLOURS:
            continue
        after = i + 1 + (i + 1 < len(words) and words[i + 1] in SIZES)  # "red small circle"
        if after >= len(words) or words[after] not in _SHAPE_FORMS:
            continue
        before = i - 1
        while before >= 0 and words[before] in SIZES:  # "two small red circles"
            before -= 1
        count_word = words[before] if before >= 0 else ""
        if count_word.isdigit():
            count = int(count_word)
        elif count_word in COUNT_WORDS:
            count = COUNT_WORDS[count_word]
        else:
            count = 1 if words[after] in SHAPES else None
        mentions.append(Mention(count, word, _SHAPE_FORMS[words[after]]))
    return mentions


def parse_objects(caption: str) -> Counter[tuple[str, str]]:
    """(colour, shape) -> how many the caption names, summed over its mentions ("a red circle and two red circles"
    names three). Mentions of unknown count are left out; `names_every_object` fails them."""
    found: Counter[tuple[str, str]] = Counter()
    for mention in parse_mentions(caption):
        if mention.count:
            found[(mention.colour, mention.shape)] += mention.count
    return found


def scene_objects(scene: Scene | dict) -> Counter[tuple[str, str]]:
    """(colour, shape) -> count of a Scene, or of a scene as stored in a Sample's meta["scene"]."""
    objects = scene.to_json()["objects"] if isinstance(scene, Scene) else scene["objects"]
    return Counter((o["colour"], o["shape"]) for o in objects)


def names_every_object(caption: str, scene: Scene | dict) -> bool:
    """True when the caption names each of the scene's (colour, shape) pairs exactly as often as it occurs, and
    nothing else."""
    if any(mention.count is None for mention in parse_mentions(caption)):
        return False
    return parse_objects(caption) == scene_objects(scene)


def shapes_caption_accuracy(captions: Sequence[str], scenes: Sequence[Scene | dict]) -> float:
    """Share of images whose caption names every object's colour and shape, with the right counts."""
    if len(captions) != len(scenes) or not captions:
        raise ValueError(f"need one caption per scene; got {len(captions)} captions for {len(scenes)} scenes")
    return sum(names_every_object(c, s) for c, s in zip(captions, scenes)) / len(scenes)
