"""caption_metrics against direct calls of the COCO caption toolkit, with and without Java.

Java starts cost seconds (METEOR loads its paraphrase tables for ~10 s), so the Java tests share one METEOR process
and score all cases in one set, comparing per-image scores as well as the corpus scores."""

import shutil
import sys

import pytest

from vlm.evaluation.metrics import coco_caption
from vlm.evaluation.metrics.cider import simple_tokenize
from vlm.evaluation.metrics.coco_caption import caption_metrics

pytest.importorskip("pycocoevalcap")
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402

REFERENCES = {
    1: ["A red circle left of a blue square.", "Two shapes: a red circle and a blue square"],  # identical
    2: ["a big green triangle above a small yellow star", "A green triangle, and a yellow star!"],  # partial
    3: ["Three purple crosses."],  # disjoint, one reference
    4: [
        "A dog catches a Frisbee in the park.",
        "a brown dog jumping to catch a frisbee",
        "The dog leaps for the (flying) disc",
        "a dog playing frisbee on the grass",
        "Dog in mid-air, catching a frisbee...",
    ],  # many references
    5: ["There's a man riding a wave on top of a surfboard.", "a surfer isn't falling"],  # clitics
    6: ["a picture of nothing"],  # empty prediction
}
PREDICTIONS = {
    1: "a red circle left of a blue square",
    2: "A green triangle below a RED star.",
    3: "one white cat",
    4: "a dog catching a frisbee",
    5: "A man's riding a wave, isn't he?",
    6: "",
}
NAMES = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"]


def toolkit_scores(gts: dict, res: dict, meteor=None) -> tuple[dict, dict]:
    """The toolkit's scorers called directly, as its COCOEvalCap calls them."""
    bleu, bleu_per_image = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{n + 1}": (bleu[n], bleu_per_image[n]) for n in range(4)}
    scores["ROUGE-L"] = Rouge().compute_score(gts, res)
    scores["CIDEr"] = Cider().compute_score(gts, res)
    if meteor is not None:
        scores["METEOR"] = meteor.compute_score(gts, res)
    ids = list(gts)
    return {k: float(v[0]) for k, v in scores.items()}, {k: dict(zip(ids, map(float, v[1]))) for k, v in scores.items()}


def assert_equal_scores(result, expected: dict, expected_per_image: dict) -> None:
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-6), name
        assert result.per_image[name] == pytest.approx(expected_per_image[name], abs=1e-6), name


def test_without_java_the_toolkit_scores_simple_tokenized_text_and_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(coco_caption, "java_available", lambda: False)
    result = caption_metrics(PREDICTIONS, REFERENCES)
    gts = {i: [simple_tokenize(r) for r in refs] for i, refs in REFERENCES.items()}
    res = {i: [simple_tokenize(p)] for i, p in PREDICTIONS.items()}
    assert_equal_scores(result, *toolkit_scores(gts, res))
    assert set(result.metrics) == set(NAMES)
    assert "java" in result.unavailable["METEOR"] and "simple_tokenize" in result.unavailable["PTB tokenizer"]
    assert "java" in result.unavailable["PTB tokenizer"]  # the reason: not the toolkit, which is installed
    assert "SPICE" in result.unavailable


@pytest.mark.parametrize("ids", [[1], [1, 3], [2, 4, 6], [5, 3]])
def test_without_java_each_smaller_set_equals_the_toolkit(monkeypatch, ids):
    # Corpus BLEU (brevity penalty) and CIDEr-D (document frequencies) depend on the set: compare on several.
    monkeypatch.setattr(coco_caption, "java_available", lambda: False)
    result = caption_metrics({i: PREDICTIONS[i] for i in ids}, {i: REFERENCES[i] for i in ids})
    gts = {i: [simple_tokenize(r) for r in REFERENCES[i]] for i in ids}
    res = {i: [simple_tokenize(PREDICTIONS[i])] for i in ids}
    assert_equal_scores(result, *toolkit_scores(gts, res))


def test_without_the_toolkit_only_the_builtin_cider_remains(monkeypatch):
    monkeypatch.setattr(coco_caption, "toolkit_installed", lambda: False)
    result = caption_metrics(PREDICTIONS, REFERENCES)
    assert list(result.metrics) == ["CIDEr"]
    gts = {i: [simple_tokenize(r) for r in refs] for i, refs in REFERENCES.items()}
    expected = Cider().compute_score(gts, {i: [simple_tokenize(p)] for i, p in PREDICTIONS.items()})[0]
    assert result.metrics["CIDEr"] == pytest.approx(expected, abs=1e-6)
    assert list(result.per_image) == ["CIDEr"] and set(result.per_image["CIDEr"]) == set(REFERENCES)
    assert set(result.unavailable) == {"BLEU-1..4", "METEOR", "ROUGE-L", "PTB tokenizer", "SPICE"}
    assert all("not installed" in result.unavailable[name] for name in ("BLEU-1..4", "METEOR", "ROUGE-L"))
    assert (
        "not installed" in result.unavailable["PTB tokenizer"]
        and "simple_tokenize" in result.unavailable["PTB tokenizer"]
    )


def test_mismatched_ids_are_refused():
    with pytest.raises(ValueError, match=r"same image ids; differing: \['7'\]"):
        caption_metrics({**PREDICTIONS, 7: "extra"}, REFERENCES)


def test_an_image_without_references_is_refused():
    with pytest.raises(ValueError, match=r"at least one reference; none for \['1'\]"):
        caption_metrics({1: "a cat"}, {1: []})


def test_an_empty_set_is_refused():
    with pytest.raises(ValueError, match="no predictions"):
        caption_metrics({}, {})


def test_java_and_the_toolkit_are_found_where_they_are_and_not_where_they_are_not(tmp_path, monkeypatch):
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert coco_caption.java_available()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert not coco_caption.java_available()
    assert coco_caption.toolkit_installed()
    monkeypatch.setitem(sys.modules, "pycocoevalcap", None)  # what an uninstalled package looks like to import
    assert not coco_caption.toolkit_installed()


def test_spice_says_what_it_lacks(monkeypatch, tmp_path):
    import pycocoevalcap.spice.spice as spice_module

    monkeypatch.setattr(coco_caption, "java_available", lambda: False)
    assert "java" in coco_caption.spice_problem()
    monkeypatch.setattr(coco_caption, "java_available", lambda: True)
    monkeypatch.setattr(coco_caption, "toolkit_installed", lambda: False)
    assert "pycocoevalcap" in coco_caption.spice_problem()
    # With both, only its Stanford CoreNLP jars may be missing (the toolkit downloads them; nothing here does): a
    # toolkit laid out in tmp_path, without the jars and then with them.
    monkeypatch.setattr(coco_caption, "toolkit_installed", lambda: True)
    monkeypatch.setattr(spice_module, "__file__", str(tmp_path / "spice.py"))
    problem = coco_caption.spice_problem()
    assert "CoreNLP" in problem and str(tmp_path / "lib") in problem
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "stanford-corenlp-3.6.0-models.jar").touch()
    assert coco_caption.spice_problem() is None


class WordCountScorer:
    """Stands in for METEOR or SPICE (each a Java process that takes seconds to start): scores each prediction by
    its number of words and records what it was given. SPICE's layout: scores in sorted id order, as dicts."""

    def __init__(self, spice: bool = False):
        self.spice, self.calls = spice, []

    def compute_score(self, gts: dict, res: dict) -> tuple[float, list]:
        self.calls.append((gts, res))
        ids = sorted(gts) if self.spice else list(gts)
        scores = [float(len(res[i][0].split())) for i in ids]
        return sum(scores) / len(scores), [{"All": {"f": s}} for s in scores] if self.spice else scores


def test_spice_scores_are_paired_with_their_images_in_sorted_order(monkeypatch):
    spice = WordCountScorer(spice=True)
    monkeypatch.setattr("pycocoevalcap.spice.spice.Spice", lambda: spice)
    monkeypatch.setattr(coco_caption, "java_available", lambda: False)
    monkeypatch.setattr(coco_caption, "spice_problem", lambda: None)
    ids = [5, 2, 6, 1]  # not sorted: SPICE's order is not the dict's
    result = caption_metrics({i: PREDICTIONS[i] for i in ids}, {i: REFERENCES[i] for i in ids})
    words = {i: len(simple_tokenize(PREDICTIONS[i]).split()) for i in ids}
    assert result.per_image["SPICE"] == words and result.metrics["SPICE"] == pytest.approx(sum(words.values()) / 4)
    assert "SPICE" not in result.unavailable and len(spice.calls) == 1
    assert caption_metrics(PREDICTIONS, REFERENCES, spice=False).unavailable["SPICE"] == "not requested"
    assert len(spice.calls) == 1


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java is not on PATH (PTB tokenizer, METEOR)")


@pytest.fixture(scope="module")
def meteor():
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


@needs_java
def test_with_java_every_metric_equals_the_toolkit(meteor, monkeypatch):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # caption_metrics gets the same METEOR process as the direct call below: one Java start instead of two.
    monkeypatch.setattr("pycocoevalcap.meteor.meteor.Meteor", lambda: meteor)
    result = caption_metrics(PREDICTIONS, REFERENCES)

    # As COCOEvalCap does it: references and predictions tokenized separately, then every scorer.
    gts = PTBTokenizer().tokenize({i: [{"caption": r} for r in refs] for i, refs in REFERENCES.items()})
    res = PTBTokenizer().tokenize({i: [{"caption": p}] for i, p in PREDICTIONS.items()})
    expected, expected_per_image = toolkit_scores(gts, res, meteor)
    assert_equal_scores(result, expected, expected_per_image)
    assert set(result.metrics) == {*NAMES, "METEOR"}
    assert "METEOR" not in result.unavailable and "PTB tokenizer" not in result.unavailable
    assert result.per_image["BLEU-4"][1] == pytest.approx(1.0) and result.per_image["CIDEr"][3] == 0.0


@needs_java
def test_with_java_the_ptb_tokenized_text_goes_to_every_scorer_meteor_included(monkeypatch):
    # The fast twin of the test above: METEOR is a stand-in, so only the PTB tokenizer starts Java.
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    meteor = WordCountScorer()
    monkeypatch.setattr("pycocoevalcap.meteor.meteor.Meteor", lambda: meteor)
    result = caption_metrics(PREDICTIONS, REFERENCES, spice=False)
    gts = PTBTokenizer().tokenize({i: [{"caption": r} for r in refs] for i, refs in REFERENCES.items()})
    res = PTBTokenizer().tokenize({i: [{"caption": p}] for i, p in PREDICTIONS.items()})
    assert meteor.calls == [(gts, res)]
    assert_equal_scores(result, *toolkit_scores(gts, res, meteor))
    assert set(result.metrics) == {*NAMES, "METEOR"}
    assert result.per_image["METEOR"] == {i: len(res[i][0].split()) for i in PREDICTIONS}
    assert "METEOR" not in result.unavailable and "PTB tokenizer" not in result.unavailable


@needs_java
def test_simple_tokenize_agrees_with_the_ptb_tokenizer_on_ordinary_captions():
    texts = [t for refs in REFERENCES.values() for t in refs] + list(PREDICTIONS.values())
    texts += ["A [big] {red} ball & a $5 note, 50% off", "I'm sure they're gonna win; can't stop", "U.S. flag"]
    tokenized = coco_caption.ptb_tokenize({i: [t] for i, t in enumerate(texts)})
    assert [simple_tokenize(t) for t in texts] == [tokenized[i][0] for i in range(len(texts))]


@needs_java
def test_ptb_tokenize_keeps_texts_paired_when_a_caption_holds_a_line_break():
    # The toolkit alone would shift "cat dog" onto the next image.
    tokenized = coco_caption.ptb_tokenize({1: ["A big\rcat dog."], 2: ["e\u2028F"], 3: ["", "g"]})
    assert tokenized == {1: ["a big cat dog"], 2: ["e f"], 3: ["", "g"]}
