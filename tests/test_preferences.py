import random
import re

import pytest

from vlm.data.sample import Sample
from vlm.posttrain.preferences import answer_pairs, caption_pairs, corrupt, preference_pairs


@pytest.mark.parametrize(
    "text, kind, expected",
    [
        (
            "a big red circle and two small blue squares",
            "colour",
            r"^a big (?!red)\w+ circle and two small blue squares$|^a big red circle and two small (?!blue)\w+ squares$",
        ),
        (
            "two shapes: a red circle and an orange cross",
            "shape",
            r"^two shapes: (a red (?!circle)\w+ and an orange cross|a red circle and an orange (?!cross)\w+)$",
        ),
        (
            "a small red circle left of a big yellow cross",
            "relation",
            r"^a small red circle right of a big yellow cross$",
        ),
        ("a purple square below an orange square", "relation", r"^a purple square above an orange square$"),
    ],
)
def test_corruptions_change_one_fact(text, kind, expected):
    for seed in range(10):
        assert re.match(expected, corrupt(text, kind, random.Random(seed)))


def test_a_count_swap_keeps_the_noun_in_agreement():
    seen = {corrupt("a big red circle", "count", random.Random(seed)) for seed in range(30)}
    assert seen == {"two big red circles", "three big red circles", "four big red circles"}
    seen = {corrupt("two shapes: two red circles", "count", random.Random(seed)) for seed in range(40)}
    assert "one shape: two red circles" in seen and "two shapes: a red circle" in seen


def test_articles_follow_the_swapped_word():
    seen = {corrupt("a red square", "colour", random.Random(seed)) for seed in range(40)}
    assert "an orange square" in seen and "a orange square" not in seen


def test_a_corruption_that_does_not_apply_gives_none():
    assert corrupt("a red circle and a blue square", "relation", random.Random(0)) is None
    assert corrupt("yes", "colour", random.Random(0)) is None
    with pytest.raises(ValueError, match="corruption kind"):
        corrupt("a red circle", "size", random.Random(0))


def test_pairs_prefer_a_reference_over_a_text_that_is_not_one():
    samples = [
        Sample(image=f"{i}.png", target=r[0], references=r)
        for i, r in enumerate(
            [["a red circle", "a red circle left of a blue square"], ["two green crosses"], ["a yellow triangle"]]
        )
    ]
    pairs = caption_pairs(samples, seed=0)
    kinds = [p.kind for p in pairs]
    assert kinds.count("relation") == 1 and kinds.count("other_image") == 3 and kinds.count("colour") == 3
    for pair in pairs:
        references = samples[int(pair.image[0])].references
        assert pair.chosen in references and pair.rejected not in references and pair.question is None


def test_answer_pairs_draw_the_wrong_answer_from_questions_of_the_same_kind():
    questions = [
        Sample(image="a.png", target="red", question="what color is the circle?", references=["red"]),
        Sample(image="b.png", target="blue", question="what color is the square?", references=["blue"]),
        Sample(image="a.png", target="yes", question="is there a red circle?", references=["yes"]),
        Sample(image="b.png", target="no", question="is there a blue cross?", references=["no"]),
    ]
    pairs = answer_pairs(questions)
    assert [(p.chosen, p.rejected) for p in pairs] == [("red", "blue"), ("blue", "red"), ("yes", "no"), ("no", "yes")]
    assert len(preference_pairs(questions + [Sample(image="c.png", target="a red circle")])) == 4 + 3
