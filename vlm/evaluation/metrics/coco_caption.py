"""BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (and SPICE) exactly as the COCO caption benchmark computes them.

The numbers come from the benchmark's own toolkit (`pycocoevalcap`), run as its `COCOEvalCap` runs it: the PTB
tokenizer (Java) on references and predictions, then each scorer on the tokenized text. What is missing is said in
`unavailable`, and what can still be computed is: without Java the text is tokenized by `simple_tokenize` and METEOR
is skipped; without the toolkit only the built-in CIDEr-D remains. SPICE runs only if its Stanford CoreNLP jars are
already installed: the toolkit would download them, and nothing here downloads at run time.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlm.evaluation.metrics.cider import cider_d, simple_tokenize

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")


@dataclass
class CaptionScores:
    metrics: dict[str, float]  # metric name (METRICS) -> corpus score
    per_image: dict[str, dict[Hashable, float]]  # metric name -> image id -> that image's score
    unavailable: dict[str, str] = field(default_factory=dict)  # metric or step -> why it was not computed


def toolkit_installed() -> bool:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return False
    return True


def java_available() -> bool:
    return shutil.which("java") is not None


def spice_problem() -> str | None:
    """None if SPICE can run offline, else why not."""
    if not toolkit_installed() or not java_available():
        return "needs pycocoevalcap and java"
    import pycocoevalcap.spice.spice as spice_module

    lib = Path(spice_module.__file__).parent / "lib"
    if not (lib / "stanford-corenlp-3.6.0-models.jar").exists():
        return f"needs Stanford CoreNLP 3.6.0 jars in {lib} (the toolkit downloads them; vlm does not)"
    return None


def ptb_tokenize(texts: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """The toolkit's PTB tokenizer on every text at once (one Java process): lowercased, punctuation removed."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # The toolkit sends one text per line and pairs the output lines back in order; a "\r" or "\u2028" in a text
    # (a generated caption can hold any character) makes Java start a new line and shifts every later text onto
    # the wrong image. Whitespace never changes PTB tokens, so all of it becomes plain spaces first.
    captions = {key: [{"caption": " ".join(t.split())} for t in values] for key, values in texts.items()}
    tokenized = PTBTokenizer().tokenize(captions)
    if any(len(tokenized.get(key, [])) != len(values) for key, values in captions.items()):
        raise RuntimeError("the PTB tokenizer returned fewer lines than it was given; the texts cannot be paired")
    return tokenized


def score_tokenized(
    references: Mapping[Hashable, list[str]], predictions: Mapping[Hashable, list[str]], meteor: bool, spice: bool
) -> tuple[dict[str, float], dict[str, dict[Hashable, float]]]:
    """The toolkit's scorers on tokenized text in its own layout ({id: [ref, ...]}, {id: [prediction]}). METEOR
    and SPICE start Java processes, once per call."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ids = list(references)
    metrics: dict[str, float] = {}
    per_image: dict[str, dict[Hashable, float]] = {}

    def keep(name: str, corpus: float, scores: Sequence[float]) -> None:
        metrics[name] = float(corpus)
        per_image[name] = {i: float(s) for i, s in zip(ids, scores, strict=True)}

    bleu, bleu_per_image = Bleu(4).compute_score(references, predictions, verbose=0)
    for n in range(4):
        keep(f"BLEU-{n + 1}", bleu[n], bleu_per_image[n])
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        with warnings.catch_warnings():
            # The toolkit never closes the Java process's output pipes: Python warns when they are collected.
            warnings.simplefilter("ignore", ResourceWarning)
            meteor_scorer = Meteor()
            keep("METEOR", *meteor_scorer.compute_score(references, predictions))
            del meteor_scorer  # ends its Java process now, inside this block
    keep("ROUGE-L", *Rouge().compute_score(references, predictions))
    keep("CIDEr", *Cider().compute_score(references, predictions))
    if spice:
        from pycocoevalcap.spice.spice import Spice

        corpus, scores = Spice().compute_score(references, predictions)
        # SPICE goes through the ids sorted (and needs JSON-serialisable ids), the other scorers in dict order.
        metrics["SPICE"] = float(corpus)
        per_image["SPICE"] = {i: float(s["All"]["f"]) for i, s in zip(sorted(ids), scores, strict=True)}
    return metrics, per_image


def caption_metrics(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], spice: bool = True
) -> CaptionScores:
    """Score one prediction per image id against that image's references. spice=False skips SPICE even where it
    could run (it parses every caption and is slow)."""
    if set(predictions) != set(references):
        differing = sorted(map(str, set(predictions) ^ set(references)))
        raise ValueError(f"predictions and references must cover the same image ids; differing: {differing[:5]}")
    if not predictions:
        raise ValueError("no predictions to score")
    no_references = [i for i, refs in references.items() if not refs]
    if no_references:
        raise ValueError(f"every image needs at least one reference; none for {sorted(map(str, no_references))[:5]}")

    ids = list(references)
    unavailable: dict[str, str] = {}
    has_toolkit, has_java = toolkit_installed(), java_available()
    if has_toolkit and has_java:
        # One tokenizer run for references and predictions together: each Java start is slow. Lines
        # are tokenized independently, so this equals the toolkit's two separate runs.
        tokenized = ptb_tokenize(
            {**{("ref", i): references[i] for i in ids}, **{("pred", i): [predictions[i]] for i in ids}}
        )
        gts = {i: tokenized[("ref", i)] for i in ids}
        res = {i: tokenized[("pred", i)] for i in ids}
    else:
        why = "pycocoevalcap is not installed (pip install 'vlm[eval]')" if not has_toolkit else "java is not on PATH"
        unavailable["PTB tokenizer"] = f"{why}; text tokenized by vlm.evaluation.metrics.cider.simple_tokenize instead"
        gts = {i: [simple_tokenize(r) for r in references[i]] for i in ids}
        res = {i: [simple_tokenize(predictions[i])] for i in ids}

    problem = spice_problem() if spice else "not requested"
    if has_toolkit:
        metrics, per_image = score_tokenized(gts, res, meteor=has_java, spice=problem is None)
        if not has_java:
            unavailable["METEOR"] = "java is not on PATH"
    else:
        cider, per_image_cider = cider_d({i: res[i][0] for i in ids}, gts, tokenized=True)
        metrics, per_image = {"CIDEr": cider}, {"CIDEr": per_image_cider}
        for name in ("BLEU-1..4", "METEOR", "ROUGE-L"):
            unavailable[name] = "pycocoevalcap is not installed (pip install 'vlm[eval]')"
    if problem is not None:
        unavailable["SPICE"] = problem
    return CaptionScores(metrics, per_image, unavailable)
