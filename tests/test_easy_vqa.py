import runpy
from pathlib import Path

import easy_vqa
import pytest

from vlm.data.easy_vqa import VAL_EVERY, EasyVQA
from vlm.data.images import load_image


@pytest.fixture(scope="module")
def splits() -> dict[str, EasyVQA]:
    return {split: EasyVQA(split) for split in ("train", "val", "test")}


def image_files(dataset: EasyVQA) -> set[str]:
    return {str(dataset[i].image) for i in range(len(dataset))}


def test_train_and_val_share_the_package_train_questions_and_test_is_whole(splits):
    train_questions, _, train_ids = easy_vqa.get_train_questions()
    test_questions, _, _ = easy_vqa.get_test_questions()
    assert len(splits["train"]) + len(splits["val"]) == len(train_questions)
    assert len(splits["test"]) == len(test_questions)
    all_images = set(train_ids)
    val_images = image_files(splits["val"])
    assert len(val_images) == len([i for i in all_images if i % VAL_EVERY == 0])
    assert 0.04 < len(val_images) / len(all_images) < 0.06  # about 5% of the images are held out


def test_validation_never_shares_an_image_with_training(splits):
    train, val, test = (image_files(splits[s]) for s in ("train", "val", "test"))
    assert train and val and test
    assert not train & val and not train & test and not val & test


def test_samples_are_questions_with_one_reference_and_a_typed_answer(splits):
    answers_by_type: dict[str, set[str]] = {}
    for sample in splits["val"]:
        assert sample.task == "vqa" and sample.source == "easy_vqa"
        assert sample.references == [sample.target] and sample.question.endswith("?")
        answers_by_type.setdefault(sample.meta["answer_type"], set()).add(sample.target)
    assert answers_by_type["yes/no"] == {"yes", "no"}
    assert answers_by_type["shape"] == {"circle", "rectangle", "triangle"}
    assert len(answers_by_type["color"]) >= 6 and not answers_by_type["color"] & {"yes", "no", "circle"}


def test_question_ids_are_unique_across_splits(splits):
    ids = [s.meta["question_id"] for split in splits.values() for s in split]
    assert len(ids) == len(set(ids))


def test_images_load_as_rgb(splits):
    image = load_image(splits["test"][0].image)
    assert image.mode == "RGB" and image.size == (64, 64)


def test_unknown_split_is_named():
    with pytest.raises(ValueError, match=r"easy-VQA split must be train, val or test, got 'validation'"):
        EasyVQA("validation")


def test_prepare_script_prints_the_splits(capsys):
    prepare = runpy.run_path(str(Path(__file__).resolve().parents[1] / "data" / "easy_vqa" / "prepare.py"))
    prepare["main"]([])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[0:6:2]] == ["train", "val", "test"]
    assert "13 answers" in lines[1]
    assert lines[-1].endswith("images shared by train and val: 0")


def test_the_shapes_view_keeps_exactly_the_shape_questions(splits):
    from vlm.data.catalog import build_dataset

    shapes = build_dataset("easy_vqa_shapes", "val")
    expected = [s.question for s in splits["val"] if s.meta["answer_type"] == "shape"]
    assert expected and [s.question for s in shapes] == expected
    assert {s.target for s in shapes} == {"circle", "rectangle", "triangle"}
