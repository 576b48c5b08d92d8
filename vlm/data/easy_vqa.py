"""easy-VQA (PyPI package `easy-vqa`, MIT): 64x64 images of one coloured shape, with yes/no, colour and shape
questions. Its own train/test split; "val" is a held-out 5% of the train IMAGES, so validation never sees an image
that training did."""

from __future__ import annotations

import random
import re

from torch.utils.data import Dataset

from vlm.data.sample import REASON_SEPARATOR, Sample

VAL_EVERY = 20  # every 20th train image id is validation
COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
Row = tuple[str, str, int]  # (question, answer, image id)


def answer_type(answer: str) -> str:
    if answer in ("yes", "no"):
        return "yes/no"
    return "shape" if answer in SHAPES else "color"


def attribute_words(question: str) -> list[str]:
    """The colour and shape words of a question, in order."""
    return [word for word in re.findall(r"[a-z]+", question) if word in COLORS or word in SHAPES]


def asked_attribute(question: str) -> str:
    """The one colour or shape word a yes/no question asks about ("is there a red shape?" -> "red")."""
    words = attribute_words(question)
    if len(words) != 1:
        raise ValueError(f"expected one colour or shape word in {question!r}, found {words}")
    return words[0]


def is_negated(question: str) -> bool:
    """Whether a question asks the other way round: "is there not a red shape?", "is no red shape present?"."""
    return re.search(r"\b(not|no)\b", question) is not None


def is_true(question: str, answer: str) -> bool:
    """Whether the image has the asked colour or shape: "yes" to "is there a red shape?", or "no" to a negated
    question."""
    return (answer == "yes") != is_negated(question)


def yes_no_case(question: str, answer: str) -> str:
    """Whether the image has the colour or shape a yes/no question asks about: "has the asked color", "lacks the
    asked shape". The wording alone answers the "lacks" cases (easy-VQA asks mostly about what is not there); the
    "has" cases show whether a model compares the asked word with the image."""
    kind = answer_type(asked_attribute(question))
    return f"{'has' if is_true(question, answer) else 'lacks'} the asked {kind}"


def image_attributes(rows: list[Row]) -> dict[int, dict[str, str]]:
    """{image id: {"color": ..., "shape": ...}} as far as the questions and answers tell: a colour or shape answer,
    the shape or colour its question takes as given ("what color is the triangle?"), or a yes/no answer that says
    the image has the asked colour or shape."""
    known: dict[int, dict[str, str]] = {}
    for question, answer, image_id in rows:
        kind = answer_type(answer)
        if kind == "yes/no":
            word = asked_attribute(question)
            if is_true(question, answer):
                known.setdefault(image_id, {})[answer_type(word)] = word
        else:
            known.setdefault(image_id, {})[kind] = answer
            for word in attribute_words(question):
                known[image_id][answer_type(word)] = word
    return known


def flipped_counterparts(rows: list[Row], seed: int = 0) -> list[Row]:
    """For each yes/no question, the same question about another colour or shape, chosen so that the answer flips:
    the image's own value when it lacks the asked one, another value when it has it. easy-VQA's phrasings are
    lopsided ("is there a red shape?" is "no" 87% of the time), so a model can reach 82% on its yes/no questions
    without looking; with each question also asked the other way round, the text alone predicts nothing (the
    balancing of VQA v2, Goyal et al. 2017). Questions whose image's value is unknown get no counterpart."""
    known = image_attributes(rows)
    rng = random.Random(seed)
    counterparts = []
    for question, answer, image_id in rows:
        if answer_type(answer) != "yes/no":
            continue
        word = asked_attribute(question)
        kind = answer_type(word)
        if is_true(question, answer):
            replacement = rng.choice([value for value in (SHAPES if kind == "shape" else COLORS) if value != word])
        elif kind in known.get(image_id, {}):
            replacement = known[image_id][kind]
        else:
            continue
        flipped = re.sub(rf"\b{word}\b", replacement, question)
        counterparts.append((flipped, "no" if answer == "yes" else "yes", image_id))
    return counterparts


def reasoned_target(question: str, answer: str, value: str) -> str:
    """A yes/no answer worked out in steps, `value` being the image's colour or shape of the asked kind:
    "is there not a red shape?" -> "asked not red, saw blue, different, so yes". Each step is a short reach: the
    asked word copied from the question, the image's value (which the model names anyway for "what color..."), then
    "same" or "different" from those two words a fixed few tokens back, then the answer from that and the "not".
    With the image's value alone before the answer ("blue, so no"), the model had to find the asked word in the
    question itself and never learned to (docs/recipe_sweep.md)."""
    word = asked_attribute(question)
    negation = " not" if is_negated(question) else ""
    verdict = "same" if value == word else "different"
    return f"asked{negation} {word}, saw {value}, {verdict}{REASON_SEPARATOR}{answer}"


def reasoned_targets(rows: list[Row]) -> list[str]:
    """Each row's training target: a yes/no answer as `reasoned_target`, any other answer as it is. The values are
    those `image_attributes` reads off the same split; a question whose value is unknown (6% of the yes/no training
    questions) keeps its plain answer."""
    known = image_attributes(rows)
    targets = []
    for question, answer, image_id in rows:
        value = None
        if answer_type(answer) == "yes/no":
            value = known.get(image_id, {}).get(answer_type(asked_attribute(question)))
        targets.append(answer if value is None else reasoned_target(question, answer, value))
    return targets


class EasyVQA(Dataset):
    def __init__(
        self,
        split: str = "train",
        answer_types: tuple[str, ...] | None = None,
        balanced: bool = False,
        reasoned: bool = False,
    ):
        """answer_types: keep only the questions whose answer is of these types ("yes/no", "color", "shape").
        balanced: add each yes/no question's `flipped_counterparts` after the questions themselves.
        reasoned: train on `reasoned_targets` (the references to score against stay the plain answers)."""
        try:
            import easy_vqa
        except ImportError:
            raise ImportError("the easy-VQA data set needs the package `easy-vqa` (pip install easy-vqa)") from None
        if split not in ("train", "val", "test"):
            raise ValueError(f"easy-VQA split must be train, val or test, got {split!r}")
        if split == "test":
            questions, answers, image_ids = easy_vqa.get_test_questions()
            paths = easy_vqa.get_test_image_paths()
        else:
            questions, answers, image_ids = easy_vqa.get_train_questions()
            paths = easy_vqa.get_train_image_paths()
            keep = (lambda i: i % VAL_EVERY == 0) if split == "val" else (lambda i: i % VAL_EVERY != 0)
            questions, answers, image_ids = zip(*[row for row in zip(questions, answers, image_ids) if keep(row[2])])
        self.split = split
        self.rows: list[Row] = [
            row
            for row in zip(questions, answers, image_ids)
            if answer_types is None or answer_type(row[1]) in answer_types
        ]
        if balanced:
            self.rows += flipped_counterparts(self.rows)
        self.targets = reasoned_targets(self.rows) if reasoned else [answer for _, answer, _ in self.rows]
        self.paths = paths

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        question, answer, image_id = self.rows[index]
        return Sample(
            image=self.paths[image_id],
            target=self.targets[index],
            question=question,
            references=[answer],
            image_id=f"{self.split}-{image_id}",
            source="easy_vqa",
            meta={
                "answer_type": answer_type(answer),
                "question_id": f"{self.split}-{index}",
                "yes_no_case": yes_no_case(question, answer) if answer_type(answer) == "yes/no" else None,
            },
        )

    def sample_image_ids(self) -> list[str]:
        return [f"{self.split}-{image_id}" for _, _, image_id in self.rows]

    def texts(self) -> list[str]:
        return [t for (question, answer, _), target in zip(self.rows, self.targets) for t in (question, answer, target)]
