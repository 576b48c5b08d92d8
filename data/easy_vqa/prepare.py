"""Print the easy-VQA splits: questions, images and answers per split. Nothing to download: the data set (images
included) is the PyPI package `easy-vqa`, a dependency of this project.

    python data/easy_vqa/prepare.py
"""

from __future__ import annotations

import argparse
from collections import Counter

from vlm.data.easy_vqa import VAL_EVERY, EasyVQA


def describe(dataset: EasyVQA) -> str:
    images = len({image_id for _, _, image_id in dataset.rows})
    types = Counter(dataset[i].meta["answer_type"] for i in range(len(dataset)))
    answers = Counter(answer for _, answer, _ in dataset.rows)
    return (
        f"{dataset.split:<5} {len(dataset):>6,} questions on {images:>5,} images; answer types {dict(types.most_common())}\n"
        f"      {len(answers)} answers: {dict(answers.most_common())}"
    )


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    splits = {split: EasyVQA(split) for split in ("train", "val", "test")}
    for dataset in splits.values():
        print(describe(dataset))
    train, val = ({image_id for _, _, image_id in splits[s].rows} for s in ("train", "val"))
    print(f"val = every {VAL_EVERY}th train image id; images shared by train and val: {len(train & val)}")


if __name__ == "__main__":
    main()
