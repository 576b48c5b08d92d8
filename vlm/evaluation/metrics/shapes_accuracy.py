"""Does a generated caption name every object of a built-in scene? Read off the caption itself, not matched to a
reference: each "[count] [size] <colour> [size] <shape>" mention is parsed, and the multiset of (colour, shape) it
describes must equal the scene's, so a wrong colour, a missing, extra or miscounted object all fail. Any wording
works ("two red circles", "a picture of a blue square and 2 red circles", "a small red circle left of a big red
circle"); sizes and relations are not scored. The words are a parameter (`CaptionLanguage`): English, or French,
whose colours follow the noun ("deux grands cercles rouges")."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from vlm.data import shapes_french
from vlm.data.shapes import COLOURS, SHAPES, SIZES, Scene

COUNT_WORDS = {"no": 0, "zero": 0, "a": 1, "an": 1, "one": 1, "another": 1, "two": 2, "three": 3, "four": 4}
COUNT_WORDS |= {"five": 5, "six": 6, "seven": 7, "eight": 8}  # more than a scene holds: wrong, but still a count
_WORD = re.compile(r"[^\W\d_]+|\d+")  # letters (accented ones too) or digits


@dataclass(frozen=True)
class CaptionLanguage:
    """The words a caption of the built-in scenes is read with, each form mapped to the scene's (English) name."""

    colours: dict[str, str]  # every form of a colour word -> the colour ("vertes" -> "green")
    shapes: dict[str, str]  # every form of a shape noun -> the shape ("crosses" -> "cross")
    singular_shapes: frozenset[str]  # the forms that name one object (a count of 1 without a count word)
    sizes: frozenset[str]  # size words, skipped where they stand between a count, a colour and a noun
    counts: dict[str, int]
    colour_after_noun: bool  # "a red circle" (False) or "un cercle rouge" (True)


ENGLISH = CaptionLanguage(
    colours={colour: colour for colour in COLOURS},
    # "circle" and "circles" -> "circle"; "cross" and "crosses" -> "cross"
    shapes={form: shape for shape in SHAPES for form in (shape, shape + "s", shape + "es")},
    singular_shapes=frozenset(SHAPES),
    sizes=frozenset(SIZES),
    counts=COUNT_WORDS,
    colour_after_noun=False,
)
FRENCH = CaptionLanguage(
    colours={form: colour for colour, forms in shapes_french.COLOURS.items() for form in forms},
    shapes={form: shape for shape, (one, many, _) in shapes_french.NOUNS.items() for form in (one, many)},
    singular_shapes=frozenset(one for one, _, _ in shapes_french.NOUNS.values()),
    sizes=frozenset(form for forms in shapes_french.SIZES.values() for form in forms),
    counts={"aucun": 0, "aucune": 0, "zéro": 0, "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5}
    | {"six": 6, "sept": 7, "huit": 8},
    colour_after_noun=True,
)
LANGUAGES = {"en": ENGLISH, "fr": FRENCH}  # by the code a caption folder's `language` column gives


@dataclass(frozen=True)
class Mention:
    count: int | None  # None: a plural with no count word ("red circles"), which cannot be checked
    colour: str
    shape: str


def parse_mentions(caption: str, language: CaptionLanguage = ENGLISH) -> list[Mention]:
    """Every colour-and-shape phrase in the caption ("<colour> <shape>", or "<shape> <colour>" where the colour
    follows the noun), a size allowed between them, with the count word before it (sizes may stand between). A
    singular without a count word ("the red circle") counts once."""
    words = _WORD.findall(caption.lower())
    first_words, second_words = (
        (language.shapes, language.colours) if language.colour_after_noun else (language.colours, language.shapes)
    )
    mentions = []
    for i, word in enumerate(words):
        if word not in first_words:
            continue
        after = i + 1 + (i + 1 < len(words) and words[i + 1] in language.sizes)  # "red small circle"
        if after >= len(words) or words[after] not in second_words:
            continue
        shape_word, colour_word = (word, words[after]) if language.colour_after_noun else (words[after], word)
        before = i - 1
        while before >= 0 and words[before] in language.sizes:  # "two small red circles"
            before -= 1
        count_word = words[before] if before >= 0 else ""
        if count_word.isdigit():
            count = int(count_word)
        elif count_word in language.counts:
            count = language.counts[count_word]
        else:
            count = 1 if shape_word in language.singular_shapes else None
        mentions.append(Mention(count, language.colours[colour_word], language.shapes[shape_word]))
    return mentions


def parse_objects(caption: str, language: CaptionLanguage = ENGLISH) -> Counter[tuple[str, str]]:
    """(colour, shape) -> how many the caption names, summed over its mentions ("a red circle and two red circles"
    names three). Mentions of unknown count are left out; `names_every_object` fails them."""
    found: Counter[tuple[str, str]] = Counter()
    for mention in parse_mentions(caption, language):
        if mention.count:
            found[(mention.colour, mention.shape)] += mention.count
    return found


def scene_objects(scene: Scene | dict) -> Counter[tuple[str, str]]:
    """(colour, shape) -> count of a Scene, or of a scene as stored in a Sample's meta["scene"]."""
    objects = scene.to_json()["objects"] if isinstance(scene, Scene) else scene["objects"]
    return Counter((o["colour"], o["shape"]) for o in objects)


def names_every_object(caption: str, scene: Scene | dict, language: CaptionLanguage = ENGLISH) -> bool:
    """True when the caption names each of the scene's (colour, shape) pairs exactly as often as it occurs, and
    nothing else."""
    if any(mention.count is None for mention in parse_mentions(caption, language)):
        return False
    return parse_objects(caption, language) == scene_objects(scene)


def shapes_caption_accuracy(
    captions: Sequence[str], scenes: Sequence[Scene | dict], language: CaptionLanguage = ENGLISH
) -> float:
    """Share of images whose caption names every object's colour and shape, with the right counts."""
    if len(captions) != len(scenes) or not captions:
        raise ValueError(f"need one caption per scene; got {len(captions)} captions for {len(scenes)} scenes")
    return sum(names_every_object(c, s, language) for c, s in zip(captions, scenes)) / len(scenes)
