"""Preference pairs for the reward model, made from the caption and question sets themselves: a true text is
preferred over a corrupted one (a colour, shape, count or relation swapped), over another image's caption, or
(for questions) over an answer that belongs to another question of the same kind.

Corruptions work on words, with the vocabulary of the built-in shapes set; a corruption that does not apply to a
text (no relation to swap) or that lands on one of the image's own references is not used.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vlm.data.sample import Sample
from vlm.data.shapes import COLOURS, COUNT_WORDS, NUMBER_WORDS, SHAPES

CAPTION_KINDS = ("colour", "shape", "count", "relation", "other_image")
ANSWER_KIND = "wrong_answer"


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith("s") else "s")


# A noun as written -> (singular, count 1 or 2+). "shape" is counted ("two shapes: ...") but never swapped.
_NOUNS = {form: (noun, count) for noun in (*SHAPES, "shape") for form, count in ((noun, 1), (_plural(noun), 2))}
_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


@dataclass(frozen=True)
class PreferencePair:
    image: str | Path | Image.Image
    question: str | None  # None: a caption pair
    chosen: str
    rejected: str
    kind: str


def _noun(singular: str, count: int) -> str:
    return singular if count == 1 else _plural(singular)


def _bare(word: str) -> tuple[str, str]:
    """'shapes:' -> ('shapes', ':'): the word and the punctuation after it."""
    bare = word.rstrip(":,")
    return bare, word[len(bare) :]


def _fix_articles(words: list[str]) -> list[str]:
    """'a' before a vowel becomes 'an' and back, after a swap changed the next word."""
    fixed = list(words)
    for i, word in enumerate(fixed[:-1]):
        if word in ("a", "an"):
            fixed[i] = "an" if fixed[i + 1][0] in "aeiou" else "a"
    return fixed


def corrupt(text: str, kind: str, rng: random.Random) -> str | None:
    """`text` with one fact changed, or None if `kind` has nothing to change in it. kind: colour, shape, count or
    relation."""
    words = text.split()
    if kind == "colour":
        spots = [i for i, w in enumerate(words) if w in COLOURS]
        if not spots:
            return None
        i = rng.choice(spots)
        words[i] = rng.choice([c for c in COLOURS if c != words[i]])
    elif kind == "shape":
        spots = [i for i, w in enumerate(words) if _NOUNS.get(_bare(w)[0], ("shape",))[0] != "shape"]
        if not spots:
            return None
        i = rng.choice(spots)
        bare, tail = _bare(words[i])
        singular, count = _NOUNS[bare]
        words[i] = _noun(rng.choice([s for s in SHAPES if s != singular]), count) + tail
    elif kind == "count":
        # a count word and the noun it counts, at most three words on ("two small blue squares")
        spots = []
        for i, word in enumerate(words):
            if word in _COUNTS:
                noun = next((j for j in range(i + 1, min(i + 4, len(words))) if _bare(words[j])[0] in _NOUNS), None)
                if noun is not None:
                    spots.append((i, noun))
        if not spots:
            return None
        i, j = rng.choice(spots)
        new_count = rng.choice([n for n in range(1, 5) if n != _COUNTS[words[i]]])
        bare, tail = _bare(words[j])
        singular = _NOUNS[bare][0]
        # "one shape: ..." but "a red circle": the shape set's two ways of saying 1
        words[i] = NUMBER_WORDS[new_count] if singular == "shape" else COUNT_WORDS[new_count]
        words[j] = _noun(singular, new_count) + tail
    elif kind == "relation":
        spots = [
            i
            for i, w in enumerate(words)
            if w in _OPPOSITE and (w in ("above", "below") or words[i + 1 : i + 2] == ["of"])
        ]
        if not spots:
            return None
        i = rng.choice(spots)
        words[i] = _OPPOSITE[words[i]]
    else:
        raise ValueError(f"corruption kind must be colour, shape, count or relation, got {kind!r}")
    return " ".join(_fix_articles(words))


def caption_pairs(
    samples: Sequence[Sample], seed: int = 0, kinds: Sequence[str] = CAPTION_KINDS
) -> list[PreferencePair]:
    """Up to one pair per kind per image: a reference (chosen at random among those the kind applies to) over its
    corruption, and for "other_image" over a reference of another image. A rejected text that is also one of the
    image's references is dropped."""
    rng = random.Random(seed)
    pairs = []
    for index, sample in enumerate(samples):
        references = list(sample.references) or [sample.target]
        for kind in kinds:
            if kind == "other_image":
                if len(samples) < 2:
                    continue
                other = samples[rng.choice([i for i in range(len(samples)) if i != index])]
                rejected = rng.choice(list(other.references) or [other.target])
                chosen = rng.choice(references)
            else:
                options = [(r, corrupt(r, kind, rng)) for r in rng.sample(references, len(references))]
                options = [(r, c) for r, c in options if c is not None]
                if not options:
                    continue
                chosen, rejected = options[0]
            if rejected not in references:
                pairs.append(PreferencePair(sample.image, None, chosen, rejected, kind))
    return pairs


def answer_pairs(samples: Sequence[Sample], seed: int = 0) -> list[PreferencePair]:
    """One pair per question: its answer over an answer given to another question that starts with the same
    three words ("what color is ...", "how many circles ...", "is there a ..."), so the wrong answer is of the
    right type."""
    rng = random.Random(seed)
    answers_by_start: dict[str, set[str]] = {}
    for sample in samples:
        answers_by_start.setdefault(_start(sample.question), set()).add(sample.target)
    pairs = []
    for sample in samples:
        wrong = sorted(answers_by_start[_start(sample.question)] - {sample.target, *sample.references})
        if wrong:
            pairs.append(PreferencePair(sample.image, sample.question, sample.target, rng.choice(wrong), ANSWER_KIND))
    return pairs


def _start(question: str | None) -> str:
    return " ".join((question or "").split()[:3])


def preference_pairs(samples: Sequence[Sample], seed: int = 0) -> list[PreferencePair]:
    """Caption pairs from the caption samples (one per image, with every reference: a data set in "eval" mode)
    and answer pairs from the question samples."""
    captions = [s for s in samples if s.question is None]
    questions = [s for s in samples if s.question is not None]
    return caption_pairs(captions, seed) + answer_pairs(questions, seed)
