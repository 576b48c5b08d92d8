"""VQA accuracy: the VQAv2 soft accuracy with the standard answer normalisation, exact match, and breakdowns.

Soft accuracy: an answer given by k of the annotators counts min(k / 3, 1); averaged over the ten leave-one-out
subsets of the ten human answers, as the official evaluation does, so with ten answers 3 matches score 0.9 and
4 or more score 1.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

_CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "shant": "shan't",
    "shed": "she'd",
    "shes": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "somebodys": "somebody's",
    "someones": "someone's",
    "thats": "that's",
    "thered": "there'd",
    "theres": "there's",
    "theyd": "they'd",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "wasnt": "wasn't",
    "wed": "we'd",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "yall": "y'all",
    "youd": "you'd",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # a period that is not a decimal point
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")  # thousands separators


def normalize_answer(answer: str) -> str:
    """The official VQA normalisation: punctuation, number words to digits, articles dropped, contractions."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    for mark in _PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or re.search(_COMMA_STRIP, text) is not None:
            text = text.replace(mark, "")
        else:
            text = text.replace(mark, " ")
    text = _PERIOD_STRIP.sub("", text)
    words = []
    for word in text.split():
        word = _NUMBERS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_soft_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Mean over leave-one-out subsets of min(#matching answers among the others / 3, 1)."""
    if not answers:
        raise ValueError("soft accuracy needs at least one human answer")
    predicted = normalize_answer(prediction)
    matches = [normalize_answer(a) == predicted for a in answers]
    if len(answers) == 1:
        return float(matches[0])
    total = sum(matches)
    return sum(min(1.0, (total - match) / 3.0) for match in matches) / len(answers)


def exact_match(prediction: str, answer: str) -> float:
    """easy-VQA's metric: the normalised answer must be the one right answer."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def vqa_metrics(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    answer_types: Sequence[str] | None = None,
    question_types: Sequence[str] | None = None,
) -> dict:
    """Overall accuracy (soft accuracy; exact match where each question has a single answer) and its breakdown by
    answer type and question type."""
    scores = [vqa_soft_accuracy(p, a) for p, a in zip(predictions, answers, strict=True)]
    result: dict = {"accuracy": sum(scores) / len(scores) if scores else 0.0, "count": len(scores)}
    for name, types in (("per_answer_type", answer_types), ("per_question_type", question_types)):
        if types is not None:
            groups: dict[str, list[float]] = defaultdict(list)
            for score, kind in zip(scores, types, strict=True):
                groups[kind].append(score)
            result[name] = {kind: sum(v) / len(v) for kind, v in sorted(groups.items())}
    return result
