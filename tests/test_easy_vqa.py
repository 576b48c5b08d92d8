import re
import runpy
from pathlib import Path

import easy_vqa
import pytest

from vlm.data.easy_vqa import (
    VAL_EVERY,
    EasyVQA,
    answer_type,
    asked_attribute,
    flipped_counterparts,
    image_attributes,
    is_negated,
    is_true,
    reasoned_targets,
)
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


def test_a_flipped_question_asks_about_another_value_and_has_the_other_answer():
    rows = [
        ("what color is the shape?", "red", 0),
        ("what shape is in the image?", "circle", 0),
        ("is there a blue shape?", "no", 0),  # false: flips to the image's own colour
        ("is there not a circle?", "no", 0),  # true (negated "no"): flips to another shape
        ("is no triangle present?", "yes", 0),  # false
        ("does the image contain a green shape?", "no", 1),  # image 1's colour is unknown: no counterpart
    ]
    counterparts = flipped_counterparts(rows)
    assert counterparts[0] == ("is there a red shape?", "yes", 0)
    question, answer, image = counterparts[1]
    assert question.startswith("is there not a ") and answer == "yes" and image == 0
    assert question.split()[-1].rstrip("?") in ("rectangle", "triangle")
    assert counterparts[2] == ("is no circle present?", "no", 0)
    assert len(counterparts) == 3
    assert image_attributes(rows) == {0: {"color": "red", "shape": "circle"}}


def test_a_yes_no_question_must_name_exactly_one_colour_or_shape():
    assert asked_attribute("does the image not contain a teal shape?") == "teal"
    with pytest.raises(
        ValueError, match=r"expected one colour or shape word in 'is there a red circle\?', found \['red', 'circle'\]"
    ):
        asked_attribute("is there a red circle?")
    with pytest.raises(ValueError, match=r"expected one colour or shape word in 'is it there\?', found \[\]"):
        asked_attribute("is it there?")


def test_the_balanced_view_agrees_with_every_image_and_evens_out_each_phrasing(splits):
    from vlm.data.catalog import build_dataset

    balanced = build_dataset("easy_vqa_balanced", "val")
    original = splits["val"]
    assert balanced.rows[: len(original)] == original.rows
    added = balanced.rows[len(original) :]
    assert len(added) > 0.8 * sum(1 for _, answer, _ in original.rows if answer in ("yes", "no"))
    # Every counterpart is consistent with what the image's other answers say about it.
    known = image_attributes(original.rows)
    for question, answer, image_id in added:
        word = asked_attribute(question)
        kind = answer_type(word)
        if kind in known[image_id]:
            assert is_true(question, answer) == (word == known[image_id][kind]), (question, answer)
    yes = sum(1 for _, answer, _ in balanced.rows if answer == "yes")
    no = sum(1 for _, answer, _ in balanced.rows if answer == "no")
    assert abs(yes - no) < 0.1 * (yes + no)


def test_what_a_question_takes_as_given_tells_the_image_too():
    rows = [("what color is the triangle?", "blue", 0), ("what is the red shape?", "circle", 1)]
    assert image_attributes(rows) == {0: {"color": "blue", "shape": "triangle"}, 1: {"shape": "circle", "color": "red"}}


def test_reasoned_yes_no_targets_work_the_answer_out_from_the_asked_word_and_the_image_value():
    rows = [
        ("what color is the triangle?", "blue", 0),
        ("is there a red shape?", "no", 0),
        ("is there not a blue shape?", "no", 0),
        ("does the image contain a circle?", "no", 0),
        ("is no triangle present?", "no", 0),
        ("is there a green shape?", "no", 1),  # image 1's colour is unknown: the plain answer
    ]
    assert reasoned_targets(rows) == [
        "blue",
        "asked red, saw blue, different, so no",
        "asked not blue, saw blue, same, so no",
        "asked circle, saw triangle, different, so no",
        "asked not triangle, saw triangle, same, so no",
        "no",
    ]


def test_the_reasoned_view_trains_on_reasons_and_is_scored_on_the_plain_answers(splits):
    from vlm.data.catalog import build_dataset

    reasoned = build_dataset("easy_vqa_reasoned", "val")
    assert reasoned.rows == splits["val"].rows
    led = 0
    for sample in reasoned:
        answer = sample.references[0]
        assert sample.target == answer or sample.target.endswith(f", so {answer}")
        led += sample.target != answer
        if sample.target != answer:  # each step agrees with the next and with the answer
            match = re.fullmatch(r"asked( not)? (\w+), saw (\w+), (same|different), so (yes|no)", sample.target)
            negation, asked, value, verdict, _ = match.groups()
            assert asked == asked_attribute(sample.question) and bool(negation) == is_negated(sample.question)
            assert (verdict == "same") == (value == asked) == is_true(sample.question, answer)
    yes_no = sum(1 for s in reasoned if s.meta["answer_type"] == "yes/no")
    assert led > 0.9 * yes_no
    # the vocabulary is built from what training will see
    assert any(text.endswith("same, so yes") for text in reasoned.texts())


def test_a_reasoned_reply_and_its_end_token_fit_the_default_answer_length():
    from vlm.data.catalog import build_dataset
    from vlm.inference.predict import ANSWER_TOKENS
    from vlm.model.tokenizer import Tokenizer

    reasoned = build_dataset("easy_vqa_reasoned", "val")
    tokenizer = Tokenizer.build(reasoned.texts())
    assert max(len(tokenizer.encode(target)) for target in reasoned.targets) + 1 <= ANSWER_TOKENS
