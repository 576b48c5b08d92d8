"""easy-VQA (PyPI package `easy-vqa`, MIT): 64x64 images of one coloured shape, with yes/no, colour and shape
questions. Its own train/test split; "val" is a held-out 5% of the train IMAGES, so validation never sees an image
that training did."""

from __future__ import annotations

from torch.utils.data import Dataset

from vlm.data.sample import Sample

VAL_EVERY = 20  # every 20th train image id is validation


def answer_type(answer: str) -> str:
    if answer in ("yes", "no"):
        return "yes/no"
    return "shape" if answer in ("circle", "rectangle", "triangle") else "color"


class EasyVQA(Dataset):
    def __init__(self, split: str = "train", answer_types: tuple[str, ...] | None = None):
        """answer_types: keep only the questions whose answer is of these types ("yes/no", "color", "shape")."""
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
        self.rows = [
            row
            for row in zip(questions, answers, image_ids)
            if answer_types is None or answer_type(row[1]) in answer_types
        ]
        self.paths = paths

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        question, answer, image_id = self.rows[index]
        return Sample(
            image=self.paths[image_id],
            target=answer,
            question=question,
            references=[answer],
            image_id=f"{self.split}-{image_id}",
            source="easy_vqa",
            meta={"answer_type": answer_type(answer), "question_id": f"{self.split}-{index}"},
        )

    def sample_image_ids(self) -> list[str]:
        return [f"{self.split}-{image_id}" for _, _, image_id in self.rows]

    def texts(self) -> list[str]:
        return [t for question, answer, _ in self.rows for t in (question, answer)]
