"""The one record every data set yields: an image with a target text and, for questions, the question."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass
class Sample:
    image: str | Path | Image.Image  # a file to load, or an image already in memory (rendered)
    target: str  # the caption or answer to train on
    question: str | None = None  # None: a captioning sample
    references: list[str] = field(default_factory=list)  # all reference captions / all annotators' answers
    image_id: str | int = ""
    source: str = ""  # data set name, for per-source metrics
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. question_type, answer_type, the rendered scene
    # Text after the prompt that the model reads but is not trained to write: the first part of a reply, given,
    # so that the loss falls on the rest (a reasoned answer's final word after its given reason).
    given: str = ""

    @property
    def task(self) -> str:
        return "caption" if self.question is None else "vqa"


# A reply that reasons before it answers ("asked red, saw blue, different, so no": see vlm/data/easy_vqa.py) puts
# this before its answer.
REASON_SEPARATOR = ", so "


def final_answer(reply: str) -> str:
    """The answer a reply ends with: "..., different, so no" -> "no"; a reply that gives no reason is all answer."""
    return reply.rpartition(REASON_SEPARATOR)[2]
