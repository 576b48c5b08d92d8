"""VQAv2: a questions file and an annotations file (ten answers per question) with a folder of COCO images.
See data/vqa/README.md for downloads. (easy-VQA, the small set installed from PyPI, is vlm/data/easy_vqa.py.)

Every question gives one Sample: the target is the most frequent of its answers (ties go to the answer given
first, so the choice is deterministic), and all answers are kept in `references` for the soft VQA accuracy
(min(#annotators who gave the prediction / 3, 1)). mode "train" and "eval" yield the same rows.

Image files: a file in `image_dir` whose name ends in the image id as twelve digits + ".jpg", so both COCO 2014
names (COCO_val2014_000000000042.jpg) and 2017 names (000000000042.jpg) work.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from torch.utils.data import Dataset

from vlm.data.checks import MODES, check_choice, check_images, clean_text, field, read_json
from vlm.data.errors import AnnotationError
from vlm.data.sample import Sample


def most_frequent(answers: list[str]) -> str:
    # Counter.most_common lists equal counts in first-seen order: the tie-break is the earliest answer.
    return Counter(answers).most_common(1)[0][0]


def image_files_by_id(image_dir: str | Path) -> dict[int, str]:
    """{image id: file name} for the .jpg files of a folder named with a trailing 12-digit id."""
    if not os.path.isdir(image_dir):
        return {}
    files = {}
    for name in sorted(os.listdir(image_dir)):
        stem, extension = os.path.splitext(name)
        if extension.lower() == ".jpg" and len(stem) >= 12 and stem[-12:].isdigit():
            files.setdefault(int(stem[-12:]), name)
    return files


class VQADataset(Dataset):
    """VQAv2 `v2_OpenEnded_mscoco_{split}_questions.json` ({"questions": [{"question_id", "image_id", "question"}]})
    and `v2_mscoco_{split}_annotations.json` ({"annotations": [{"question_id", "image_id", "answers": [{"answer"}],
    "question_type"?, "answer_type"?}]}). Every question needs an annotation."""

    def __init__(
        self,
        questions_file: str | Path,
        annotations_file: str | Path,
        image_dir: str | Path,
        mode: str = "train",
        on_missing: str = "error",
    ):
        check_choice("mode", mode, MODES)
        annotations = self._read_annotations(annotations_file)
        questions = read_json(questions_file, dict)
        field(questions, "questions", list, questions_file, "the top level")
        files = image_files_by_id(image_dir)
        rows, image_paths = [], []
        for n, entry in enumerate(questions["questions"]):
            where = f"questions[{n}]"
            question_id = field(entry, "question_id", int, questions_file, where)
            where = f"questions[{n}] (question_id {question_id})"
            image_id = field(entry, "image_id", int, questions_file, where)
            question = clean_text(field(entry, "question", str, questions_file, where))
            if question_id not in annotations:
                raise AnnotationError(f"{annotations_file}: no annotation for question_id {question_id}")
            annotation = annotations[question_id]
            if annotation["image_id"] != image_id:
                raise AnnotationError(
                    f"{annotations_file}: question_id {question_id} has image_id {annotation['image_id']}, "
                    f"but {questions_file} says {image_id}"
                )
            rows.append((question_id, image_id, question))
            # An id with no file gets the 2017-style name, so the missing-image report shows what was looked for.
            image_paths.append(os.path.join(image_dir, files.get(image_id, f"{image_id:012d}.jpg")))
        unique_paths = list(dict.fromkeys(image_paths))  # about five questions share each image
        exists = dict(zip(unique_paths, check_images(unique_paths, on_missing, questions_file)))
        self.num_skipped = list(exists.values()).count(False)  # missing images; their questions are left out
        self.rows = [row for row, path in zip(rows, image_paths) if exists[path]]
        self.image_paths = [path for path in image_paths if exists[path]]
        self.annotations = annotations
        self.mode = mode

    @staticmethod
    def _read_annotations(annotations_file: str | Path) -> dict[int, dict]:
        data = read_json(annotations_file, dict)
        field(data, "annotations", list, annotations_file, "the top level")
        annotations = {}
        for n, entry in enumerate(data["annotations"]):
            where = f"annotations[{n}]"
            question_id = field(entry, "question_id", int, annotations_file, where)
            where = f"annotations[{n}] (question_id {question_id})"
            image_id = field(entry, "image_id", int, annotations_file, where)
            answers = field(entry, "answers", list, annotations_file, where)
            if not answers:
                raise AnnotationError(f"{annotations_file}: {where}: 'answers' is empty")
            texts = [
                clean_text(field(answer, "answer", str, annotations_file, f"{where} answers[{a}]"))
                for a, answer in enumerate(answers)
            ]
            kinds = {
                key: field(entry, key, str, annotations_file, where) if key in entry else ""
                for key in ("question_type", "answer_type")
            }
            annotations[question_id] = {"image_id": image_id, "answers": texts, **kinds}
        return annotations

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        question_id, image_id, question = self.rows[index]
        annotation = self.annotations[question_id]
        return Sample(
            image=self.image_paths[index],
            target=most_frequent(annotation["answers"]),
            question=question,
            references=list(annotation["answers"]),
            image_id=image_id,
            source="vqa",
            meta={
                "question_id": question_id,
                "question_type": annotation["question_type"],
                "answer_type": annotation["answer_type"],
            },
        )

    def sample_image_ids(self) -> list[int]:
        return [image_id for _, image_id, _ in self.rows]

    def texts(self) -> list[str]:
        return [
            text
            for question_id, _, question in self.rows
            for text in (question, *self.annotations[question_id]["answers"])
        ]
