"""The built-in scenes described in French from their objects, the caption folder the demonstration trains on, and
the object accuracy read in French."""

import json
from collections import Counter

import pytest

from vlm.data.catalog import build_dataset
from vlm.data.shapes import Scene, ShapeObject, annotated_scene
from vlm.data.shapes_french import french_caption, phrase, write_caption_folder
from vlm.evaluation.metrics.shapes_accuracy import FRENCH, names_every_object, parse_objects


def scene(*objects: tuple[str, str, str, float]) -> Scene:
    return Scene(tuple(ShapeObject(c, s, size, x, 0.5) for c, s, size, x in objects), (240, 240, 240))


def test_the_brief_example_and_agreement_in_gender_and_number():
    two = scene(("red", "circle", "small", 0.2), ("blue", "square", "big", 0.7))
    assert french_caption(two) == "un petit cercle rouge et un grand carré bleu"
    assert phrase(1, "big", "green", "cross") == "une grande croix verte"
    assert phrase(2, "big", "green", "cross") == "deux grandes croix vertes"
    assert phrase(3, "small", "purple", "circle") == "trois petits cercles violets"
    assert phrase(2, "small", "orange", "cross") == "deux petites croix orange"  # orange does not agree
    assert phrase(1, None, "yellow", "triangle") == "un triangle jaune"
    three = scene(("red", "cross", "big", 0.1), ("red", "cross", "big", 0.5), ("blue", "square", "small", 0.9))
    assert french_caption(three) == "deux grandes croix rouges et un petit carré bleu"


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("un petit cercle rouge et un grand carré bleu", {("red", "circle"): 1, ("blue", "square"): 1}),
        ("deux grandes croix vertes", {("green", "cross"): 2}),
        ("une croix violette, trois cercles orange", {("purple", "cross"): 1, ("orange", "circle"): 3}),
        ("un carré bleu à gauche d'un triangle jaune", {("blue", "square"): 1, ("yellow", "triangle"): 1}),
        ("Un Cercle Rouge.", {("red", "circle"): 1}),
        ("a red circle", {}),  # English is not read as French
        ("cercles rouges", {}),  # a plural without a count cannot be checked
    ],
)
def test_french_captions_are_read_as_french(caption, expected):
    assert parse_objects(caption, FRENCH) == Counter(expected)


def test_every_french_caption_of_the_test_split_names_every_object_and_a_wrong_colour_does_not():
    for index in range(200):
        shapes_scene = annotated_scene(0, "test", index).scene
        caption = french_caption(shapes_scene)
        assert names_every_object(caption, shapes_scene, FRENCH), caption
        assert not names_every_object(caption, shapes_scene), caption  # the English reading finds nothing
        wrong = caption.replace("rouge", "bleu") if "rouge" in caption else caption.replace("bleu", "rouge")
        if wrong != caption:
            assert not names_every_object(wrong, shapes_scene, FRENCH), wrong


def test_the_written_folder_is_a_caption_folder_that_evaluation_scores_in_french(tmp_path):
    write_caption_folder(tmp_path, {"train": 3, "test": 2})
    rows = [json.loads(line) for line in (tmp_path / "test" / "metadata.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [french_caption(annotated_scene(0, "test", i).scene) for i in range(2)]
    dataset = build_dataset(f"folder:{tmp_path}", "test")
    sample = dataset[1]
    assert sample.meta["language"] == "fr" and sample.meta["scene"] == annotated_scene(0, "test", 1).scene.to_json()
    from vlm.evaluation.evaluate import score_captions

    metrics, rows = score_captions([dataset[0], dataset[1]], [dataset[0].target, "un cercle rouge"], toolkit=False)
    assert metrics["objects_named_correctly"] == 0.5 and [r["objects_correct"] for r in rows] == [True, False]
