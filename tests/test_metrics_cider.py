import pytest

from vlm.evaluation.metrics.cider import cider_d, simple_tokenize

# Already tokenized (lowercase, no punctuation), as the toolkit's scorers receive them.
REFERENCES = {
    "identical": ["a red circle left of a blue square", "two shapes a red circle and a blue square"],
    "partial": ["a big green triangle above a small yellow star", "a green triangle and a yellow star"],
    "disjoint": ["three purple crosses"],
    "one_reference": ["a man riding a wave on top of a surfboard"],
    "many_references": [
        "a dog catches a frisbee in the park",
        "a brown dog jumping to catch a frisbee",
        "the dog leaps for the flying disc",
        "a dog playing frisbee on the grass",
        "dog in mid air catching a frisbee",
    ],
    "repeated_words": ["a small orange circle", "an orange circle"],
    "empty": ["a picture of nothing"],
}
CANDIDATES = {
    "identical": "a red circle left of a blue square",
    "partial": "a green triangle below a red star",
    "disjoint": "one white cat",
    "one_reference": "a surfer riding a wave",
    "many_references": "a dog catching a frisbee",
    "repeated_words": "orange orange orange orange circle circle",
    "empty": "",
}


def toolkit_cider(candidates: dict, references: dict) -> tuple[float, list[float]]:
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    mean, per_image = cider.Cider().compute_score(references, {k: [v] for k, v in candidates.items()})
    return float(mean), [float(s) for s in per_image]


def test_equals_the_toolkit_cider_on_tokenized_text():
    expected_mean, expected = toolkit_cider(CANDIDATES, REFERENCES)
    mean, per_image = cider_d(CANDIDATES, REFERENCES, tokenized=True)
    assert mean == pytest.approx(expected_mean, abs=1e-6)
    assert [per_image[k] for k in REFERENCES] == pytest.approx(expected, abs=1e-6)
    assert expected_mean > 0  # the comparison is not between two zeros


@pytest.mark.parametrize("case", ["identical", "disjoint", "many_references"])
def test_equals_the_toolkit_on_each_pair_of_cases(case):
    # Document frequencies depend on the whole set: compare on smaller sets too.
    other = "one_reference"
    candidates = {case: CANDIDATES[case], other: CANDIDATES[other]}
    references = {case: REFERENCES[case], other: REFERENCES[other]}
    expected_mean, expected = toolkit_cider(candidates, references)
    mean, per_image = cider_d(candidates, references, tokenized=True)
    assert mean == pytest.approx(expected_mean, abs=1e-6)
    assert [per_image[case], per_image[other]] == pytest.approx(expected, abs=1e-6)


def test_equals_the_toolkit_when_a_caption_is_too_short_to_have_bigrams():
    # The length penalty compares counts of bigrams: a one-word caption has none, a two-word one has one.
    references = {"one_word": REFERENCES["many_references"], "two_words": REFERENCES["partial"], **REFERENCES}
    candidates = {"one_word": "frisbee", "two_words": "green triangle", **CANDIDATES}
    expected_mean, expected = toolkit_cider(candidates, references)
    mean, per_image = cider_d(candidates, references, tokenized=True)
    assert per_image["one_word"] > 0 and per_image["two_words"] > 0
    assert list(per_image.values()) == pytest.approx(expected, abs=1e-9)


def test_per_image_scores_order_identical_partial_disjoint():
    _, per_image = cider_d(CANDIDATES, REFERENCES, tokenized=True)
    assert per_image["identical"] > per_image["partial"] > per_image["disjoint"] == 0.0
    assert per_image["empty"] == 0.0


def test_a_set_of_one_image_scores_zero_like_the_toolkit():
    # Every n-gram occurs in the one document, so every idf is log(1/1) = 0.
    candidates, references = {"only": CANDIDATES["identical"]}, {"only": REFERENCES["identical"]}
    expected_mean, _ = toolkit_cider(candidates, references)
    assert cider_d(candidates, references, tokenized=True)[0] == expected_mean == 0.0


def test_untokenized_text_is_tokenized_first():
    raw = {"identical": "A Red circle, left of a BLUE square.", "disjoint": "One white cat!"}
    tokenized = {"identical": CANDIDATES["identical"], "disjoint": CANDIDATES["disjoint"]}
    references = {k: REFERENCES[k] for k in raw}
    assert cider_d(raw, references)[1] == cider_d(tokenized, references, tokenized=True)[1]


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("A Red circle, and TWO blue squares.", "a red circle and two blue squares"),
        ("There's a dog; it isn't running!", "there 's a dog it is n't running"),
        ('A "big" (red) ball -- e-mail...', "a big -lrb- red -rrb- ball e-mail"),
        ("3.5 apples, 1,000 pears at 10:30", "3.5 apples 1,000 pears at 10:30"),
        ("  ", ""),
    ],
)
def test_simple_tokenize_mimics_the_ptb_tokenizer(text, tokens):
    assert simple_tokenize(text) == tokens


def test_mismatched_ids_are_refused_with_the_ids_named():
    with pytest.raises(ValueError, match=r"same ids; differing: \['extra'\]"):
        cider_d({"a": "x", "extra": "y"}, {"a": ["x"]})


def test_an_image_without_references_is_refused():
    with pytest.raises(ValueError, match=r"at least one reference; none for \['b'\]"):
        cider_d({"a": "x", "b": "y"}, {"a": ["x"], "b": []})


def test_an_empty_set_is_refused():
    with pytest.raises(ValueError, match="no candidates"):
        cider_d({}, {})


def test_document_frequencies_of_the_evaluated_set_change_nothing_and_a_corpus_scores_a_single_image():
    from vlm.evaluation.metrics.cider import document_frequencies

    default = cider_d(CANDIDATES, REFERENCES)
    assert cider_d(CANDIDATES, REFERENCES, frequencies=document_frequencies(REFERENCES)) == default
    alone = {"identical": CANDIDATES["identical"]}, {"identical": REFERENCES["identical"]}
    assert cider_d(*alone)[0] == 0.0  # its own set: every n-gram in every document
    assert cider_d(*alone, frequencies=document_frequencies(REFERENCES))[0] > 1.0


def test_document_frequencies_read_text_as_cider_d_does_raw_or_tokenized():
    from vlm.evaluation.metrics.cider import document_frequencies

    raw = {
        "a": ["A red circle, left of a blue square.", "Two shapes: a red circle and a blue square!"],
        "b": ["A big green triangle above a small yellow star."],
        "c": ["Three purple crosses.", "Crosses, three of them."],
    }
    candidates = {"a": "A red circle.", "b": "A green star!", "c": "One white cat."}
    # Raw text is tokenized first, as cider_d tokenizes it: the set's own frequencies change nothing.
    assert cider_d(candidates, raw, frequencies=document_frequencies(raw)) == cider_d(candidates, raw)
    tokenized = {key: [simple_tokenize(r) for r in refs] for key, refs in raw.items()}
    assert document_frequencies(tokenized, tokenized=True) == document_frequencies(raw)
    # Tokenized text is taken as it is: the PTB tokenizer's "-lrb-" is a word, which tokenizing again would cut.
    ptb = {"a": ["a dog -lrb- left -rrb- runs"], "b": ["a cat -lrb- right -rrb- sits"], "c": ["a bird flies"]}
    ptb_candidates = {"a": "a dog -lrb- left -rrb- sits", "b": "a cat runs", "c": "a bird -lrb- flies"}
    assert document_frequencies(ptb, tokenized=True).counts[("-lrb-",)] == 2
    own = cider_d(ptb_candidates, ptb, tokenized=True)
    assert cider_d(ptb_candidates, ptb, tokenized=True, frequencies=document_frequencies(ptb, tokenized=True)) == own


def test_an_empty_corpus_gives_no_frequencies_and_no_error():
    from vlm.evaluation.metrics.cider import document_frequencies

    frequencies = document_frequencies({})
    assert not frequencies.counts and frequencies.log_num_docs == 0.0  # log(1): every idf weight is then zero
