"""The shapes set's object accuracy: objects are read off free-form captions, never matched to a reference."""

from collections import Counter

import pytest

from vlm.data.shapes import Scene, ShapeObject, annotated_scene
from vlm.evaluation.metrics.shapes_accuracy import (
    ENGLISH,
    FRENCH,
    Mention,
    names_every_object,
    parse_mentions,
    parse_objects,
    scene_objects,
    shapes_caption_accuracy,
)


def make_scene(*objects: tuple[str, str, str, float]) -> Scene:
    """(colour, shape, size, x) per object; y does not matter to the metric."""
    return Scene(tuple(ShapeObject(c, s, size, x, 0.5) for c, s, size, x in objects), (240, 240, 240))


# two red circles and a blue square, as a Scene and as the JSON a Sample carries in meta["scene"]
SCENE = make_scene(("red", "circle", "small", 0.2), ("red", "circle", "big", 0.5), ("blue", "square", "small", 0.8))
SCENE_JSON = SCENE.to_json()


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a red circle", {("red", "circle"): 1}),
        ("an orange triangle", {("orange", "triangle"): 1}),
        ("one green cross", {("green", "cross"): 1}),
        ("two red circles and a blue square", {("red", "circle"): 2, ("blue", "square"): 1}),
        ("Three Purple Crosses.", {("purple", "cross"): 3}),
        ("four small yellow squares", {("yellow", "square"): 4}),
        ("2 big blue triangles", {("blue", "triangle"): 2}),
        ("a small red circle, a big red circle and a small blue square", {("red", "circle"): 2, ("blue", "square"): 1}),
        ("this image shows two small red circles", {("red", "circle"): 2}),
        ("a picture of a blue square and two red circles", {("red", "circle"): 2, ("blue", "square"): 1}),
        ("three shapes: two red circles, a blue square", {("red", "circle"): 2, ("blue", "square"): 1}),
        ("a small red circle left of a big blue square", {("red", "circle"): 1, ("blue", "square"): 1}),
        ("there is a red big circle above the green square", {("red", "circle"): 1, ("green", "square"): 1}),
        ("a red circle and another red circle", {("red", "circle"): 2}),
        ("no red circles", {}),
        ("a red shape and a circle", {}),  # neither names both colour and shape
        ("", {}),
    ],
)
def test_parse_objects_reads_counts_sizes_plurals_and_wordings(caption, expected):
    assert parse_objects(caption) == Counter(expected)


def test_a_plural_without_a_count_word_has_an_unknown_count():
    assert parse_mentions("red circles") == [Mention(None, "red", "circle")]
    assert parse_objects("red circles") == Counter()


def test_a_colour_not_before_a_shape_is_passed_over_wherever_it_is():
    assert parse_mentions("the circle is red") == [] and parse_mentions("a small red") == []
    assert parse_mentions("the circle is red and the blue square is big") == [Mention(1, "blue", "square")]
    # Only a word before the colour counts it: the caption's last word is not a count for its first mention.
    assert parse_mentions("red circles, blue squares: 3") == [
        Mention(None, "red", "circle"),
        Mention(None, "blue", "square"),
    ]


@pytest.mark.parametrize(
    "caption",
    [
        "two red circles and a blue square",
        "a blue square and two red circles",
        "a small red circle, a big red circle and a small blue square",
        "there are 2 red circles to the left of a blue square",
        "three shapes: a red circle, another red circle and a blue square",
    ],
)
def test_names_every_object_accepts_any_correct_wording(caption):
    assert names_every_object(caption, SCENE)
    assert names_every_object(caption, SCENE_JSON)


@pytest.mark.parametrize(
    "caption",
    [
        "two red circles and a green square",  # wrong colour
        "two red circles and a blue triangle",  # wrong shape
        "two red circles",  # missing object
        "two red circles, a blue square and a yellow cross",  # extra object
        "three red circles and a blue square",  # wrong count
        "a red circle and a blue square",  # count too low
        "red circles and a blue square",  # count not said
        "two red circles and a blue square and a blue square",  # repeated mention counts twice
        "two circles and a square",  # colours not named
        "",
    ],
)
def test_names_every_object_rejects_wrong_missing_extra_and_miscounted_objects(caption):
    assert not names_every_object(caption, SCENE)


def test_sizes_and_relations_are_not_scored():
    assert names_every_object("two big red circles right of a big blue square", SCENE)


def test_scene_objects_counts_colour_and_shape_pairs():
    assert scene_objects(SCENE) == scene_objects(SCENE_JSON) == Counter({("red", "circle"): 2, ("blue", "square"): 1})


def test_the_sets_own_references_pass_when_they_name_every_object():
    for index in range(40):
        annotated = annotated_scene(0, "val", index)
        scene, references = annotated.scene, annotated.captions
        # canonical, "this image shows ...", "a picture of ..." (reversed order), "N shapes: ..." (no sizes)
        for caption in references[:4]:
            assert names_every_object(caption, scene), caption
        # the relation caption names two of the objects: complete only in a two-object scene
        for caption in references[4:]:
            assert names_every_object(caption, scene) == (len(scene.objects) == 2), caption


def test_shapes_caption_accuracy_is_the_share_of_correct_images():
    other = make_scene(("green", "cross", "big", 0.5))
    captions = ["two red circles and a blue square", "a green cross", "a red cross", "a green cross"]
    assert shapes_caption_accuracy(captions, [SCENE, other, other, SCENE_JSON]) == pytest.approx(0.5)


def test_shapes_caption_accuracy_reads_the_captions_in_the_language_given():
    other = make_scene(("green", "cross", "big", 0.5))
    captions = ["deux cercles rouges et un grand carré bleu", "une croix verte", "une croix rouge"]
    assert shapes_caption_accuracy(captions, [SCENE, other, other], FRENCH) == pytest.approx(2 / 3)
    assert shapes_caption_accuracy(captions, [SCENE, other, other], ENGLISH) == 0.0
    # "des cercles rouges" has no count: the caption cannot be checked, though its counted objects are the scene's
    assert not names_every_object("deux cercles rouges, un carré bleu et des cercles rouges", SCENE, FRENCH)


def test_shapes_caption_accuracy_needs_one_caption_per_scene():
    with pytest.raises(ValueError, match="got 1 captions for 2 scenes"):
        shapes_caption_accuracy(["a red circle"], [SCENE, SCENE])
    with pytest.raises(ValueError, match="got 0 captions for 0 scenes"):
        shapes_caption_accuracy([], [])
