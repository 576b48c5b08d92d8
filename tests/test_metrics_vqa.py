import pytest

from vlm.data.sample import Sample, final_answer
from vlm.evaluation.metrics.vqa import exact_match, normalize_answer, question_type, vqa_metrics, vqa_soft_accuracy


@pytest.mark.parametrize(
    ("matching", "accuracy"),
    [
        # Ten leave-one-out subsets of nine: dropping a matching answer leaves matching - 1, the others matching.
        (0, 0.0),
        (1, (1 * 0 + 9 * (1 / 3)) / 10),  # 0.3
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        (3, (3 * (2 / 3) + 7 * 1) / 10),  # 0.9, not 1: three annotators are not always three of the other nine
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_soft_accuracy_of_ten_answers_follows_the_leave_one_out_rule(matching, accuracy):
    answers = ["2"] * matching + ["3"] * (10 - matching)
    assert vqa_soft_accuracy("2", answers) == pytest.approx(accuracy)


def test_soft_accuracy_with_fewer_answers_uses_the_subsets_there_are():
    assert vqa_soft_accuracy("yes", ["yes", "yes"]) == pytest.approx(1 / 3)  # each subset: one match of one
    assert vqa_soft_accuracy("yes", ["yes", "yes", "yes", "no"]) == pytest.approx((3 * (2 / 3) + 1) / 4)
    assert vqa_soft_accuracy("Yes.", ["yes"]) == 1.0  # a single answer: exact match of normalised strings
    assert vqa_soft_accuracy("no", ["yes"]) == 0.0


def test_the_prediction_is_normalised_before_matching():
    assert vqa_soft_accuracy("Two.", ["2"] * 10) == 1.0
    assert vqa_soft_accuracy("the Dog", ["dog"] * 4 + ["cat"] * 6) == 1.0


def test_disagreeing_annotator_answers_get_the_punctuation_step_only():
    # As in the official evaluation: "black/white" becomes "black white" because the answers disagree ...
    assert vqa_soft_accuracy("black white", ["black/white"] * 3 + ["gray"] * 7) == pytest.approx(0.9)
    # ... while identical answers are used as the annotation gives them (VQAv2's are already normalised).
    assert vqa_soft_accuracy("black white", ["black/white"] * 10) == 0.0


@pytest.mark.parametrize("answer", ["black /white", "black/ white"])
def test_a_mark_beside_a_space_is_deleted_not_spaced_in_disagreeing_answers(answer):
    # Only the punctuation step runs on the annotators' answers (no whitespace split): a mark with a space on
    # either side is deleted, so the answer keeps one space and matches; spacing it would leave two.
    assert vqa_soft_accuracy("black white", [answer] * 3 + ["gray"] * 7) == pytest.approx(0.9)


@pytest.mark.parametrize("blank", ["\n", "\t"])
def test_a_line_break_or_tab_in_an_answer_counts_as_a_space(blank):
    # "yes /no/maybe" has a mark beside a space, so every "/" is deleted; the official code turns line breaks and
    # tabs into spaces before it looks, and so must we.
    assert normalize_answer(f"yes{blank}/no/maybe") == normalize_answer("yes /no/maybe") == "yes nomaybe"


@pytest.mark.parametrize(
    ("answer", "normalised"),
    [
        ("Two dogs.", "2 dogs"),
        ("the Cat", "cat"),
        (" an apple\t", "apple"),
        ("none", "0"),
        ("black/white", "black white"),  # a mark inside a word becomes a space
        ("black / white", "black white"),  # a mark next to a space is deleted
        ("1,000", "1000"),
        ("3.5", "3.5"),  # a decimal point stays
        ("yes!", "yes"),
        ("isnt", "isn't"),
        ("dont know", "don't know"),
    ],
)
def test_normalisation_follows_the_official_rules(answer, normalised):
    assert normalize_answer(answer) == normalised


def test_exact_match_compares_normalised_answers():
    assert exact_match("Circle.", "circle") == 1.0
    assert exact_match("a circle", "square") == 0.0


def vqa_sample(question: str, answers: list[str], **meta) -> Sample:
    return Sample(image="unused.png", target=answers[0], question=question, references=answers, meta=meta)


def test_vqa_metrics_breaks_accuracy_down_by_answer_and_question_type():
    samples = [
        vqa_sample("What color is it?", ["red"] * 10, answer_type="other", question_type="what color is"),
        vqa_sample("Is it round?", ["yes"] * 10, answer_type="yes/no", question_type="is it"),
        vqa_sample("Is it big?", ["no"] * 10, answer_type="yes/no", question_type="is it"),
        vqa_sample("How many?", ["2"] * 3 + ["3"] * 7, answer_type="number", question_type="how many"),
    ]
    result = vqa_metrics(["red", "yes", "yes", "two"], samples)
    assert result["metric"] == "vqa_soft_accuracy" and result["questions"] == 4
    assert result["overall"] == pytest.approx((1 + 1 + 0 + 0.9) / 4)
    assert result["per_answer_type"] == pytest.approx({"number": 0.9, "other": 1.0, "yes/no": 0.5})
    assert result["per_question_type"] == pytest.approx({"how many": 0.9, "is it": 0.5, "what color is": 1.0})
    assert result["per_question"] == pytest.approx([1.0, 1.0, 0.0, 0.9])


def test_single_answer_sets_are_scored_by_exact_match_with_fallback_types():
    samples = [vqa_sample("What shape is in the image?", ["circle"]), vqa_sample("Is there a red shape?", ["no"])]
    result = vqa_metrics(["Circle", "yes"], samples)
    assert result["metric"] == "exact_match" and result["overall"] == 0.5
    assert result["per_answer_type"] == {"all": 0.5}
    assert result["per_question_type"] == {"is there": 0.0, "what shape": 1.0}  # the first two words
    assert "per_yes_no_case" not in result  # only where the data set tells it


@pytest.mark.parametrize("question", ["", "?", "¿…?"])
def test_a_question_without_words_has_question_type_none(question):
    assert question_type(vqa_sample(question, ["yes"])) == "none"


def test_easy_vqa_yes_no_answers_are_also_scored_by_whether_the_image_has_the_asked_value():
    from vlm.data.easy_vqa import yes_no_case

    questions = [("is there a red shape?", "no"), ("is there not a circle?", "no"), ("is there a circle?", "no")]
    samples = [vqa_sample(q, [a], yes_no_case=yes_no_case(q, a)) for q, a in questions]
    samples.append(vqa_sample("what shape is it?", ["circle"], yes_no_case=None))
    result = vqa_metrics(["no", "yes", "no", "circle"], samples)
    assert result["per_yes_no_case"] == {
        "has the asked shape": 0.0,
        "lacks the asked color": 1.0,
        "lacks the asked shape": 1.0,
    }


def test_a_reasoned_reply_is_scored_by_the_answer_after_its_reason():
    assert final_answer("asked red, saw blue, different, so no") == "no" and final_answer("no") == "no"
    samples = [vqa_sample("Is there a red shape?", ["no"]), vqa_sample("Is there a circle?", ["yes"])]
    result = vqa_metrics(["blue, so no", "triangle, so no"], samples)
    assert result["per_question"] == [1.0, 0.0]


def test_vqa_metrics_refuses_mismatched_or_wrong_inputs():
    sample = vqa_sample("Is it?", ["yes"])
    with pytest.raises(ValueError, match="one prediction per question; got 2 for 1"):
        vqa_metrics(["yes", "no"], [sample])
    with pytest.raises(ValueError, match="caption sample"):
        vqa_metrics(["a cat"], [Sample(image="x.png", target="a cat")])
    with pytest.raises(ValueError, match="no questions"):
        vqa_metrics([], [])
    with pytest.raises(ValueError, match="at least one human answer"):
        vqa_soft_accuracy("yes", [])
