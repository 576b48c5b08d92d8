"""BLEU-1..4, METEOR, ROUGE-L and CIDEr-D exactly as the COCO caption benchmark computes them.

The numbers come from the benchmark's own toolkit (`pycocoevalcap`): its PTB tokenizer and METEOR run on Java, its
BLEU, ROUGE-L and CIDEr-D in Python. What is missing is said, and what can still be computed is: without Java the
text is tokenized by `simple_tokenize` and METEOR is skipped; without the toolkit only the built-in CIDEr-D remains.
SPICE is tried only when asked for (it downloads Stanford CoreNLP on first use).
"""

from __future__ import annotations

import shutil
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from vlm.metrics.cider import cider_d, simple_tokenize


@dataclass
class CaptionScores:
    metrics: dict[str, float]  # BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE)
    per_image_cider: dict[Hashable, float]
    unavailable: dict[str, str] = field(default_factory=dict)  # metric or step -> why it was not computed


def toolkit_problem() -> str | None:
    """None if the toolkit and Java are both there, else what is missing."""
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return "pycocoevalcap is not installed (pip install 'vlm[eval]')"
    if shutil.which("java") is None:
        return "java is not on PATH (the PTB tokenizer and METEOR need it)"
    return None


def ptb_tokenize(texts: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """The toolkit's PTB tokenizer (one Java process for all texts): lowercase, punctuation removed."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({key: [{"caption": t} for t in values] for key, values in texts.items()})


def caption_metrics(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], spice: bool = False
) -> CaptionScores:
    if set(predictions) != set(references):
        raise ValueError("predictions and references must cover the same image ids")
    if not predictions:
        raise ValueError("no predictions to score")
    problem = toolkit_problem()
    unavailable: dict[str, str] = {}
    ids = list(references)
    if problem is None:
        # One tokenizer run for candidates and references together: each Java start costs about a second.
        tokenized = ptb_tokenize(
            {**{("ref", i): references[i] for i in ids}, **{("pred", i): [predictions[i]] for i in ids}}
        )
        gts = {i: tokenized[("ref", i)] for i in ids}
        res = {i: tokenized[("pred", i)] for i in ids}
    else:
        unavailable["PTB tokenizer"] = problem
        gts = {i: [simple_tokenize(r) for r in references[i]] for i in ids}
        res = {i: [simple_tokenize(predictions[i])] for i in ids}

    metrics: dict[str, float] = {}
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        unavailable["BLEU, ROUGE-L"] = "pycocoevalcap is not installed"
    else:
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        metrics.update({f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)})
        metrics["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if problem is None:
        from pycocoevalcap.meteor.meteor import Meteor

        metrics["METEOR"] = float(Meteor().compute_score(gts, res)[0])  # its Java process ends with the object
    else:
        unavailable["METEOR"] = problem
    cider, per_image = cider_d({i: res[i][0] for i in ids}, gts, tokenize=False)
    metrics["CIDEr"] = cider
    if spice:
        try:
            from pycocoevalcap.spice.spice import Spice

            metrics["SPICE"] = float(Spice().compute_score(gts, res)[0])
        except Exception as error:  # the toolkit raises bare errors when its download or Java step fails
            unavailable["SPICE"] = f"SPICE failed ({type(error).__name__}: {error}); it needs Stanford CoreNLP models"
    else:
        unavailable["SPICE"] = "not requested (needs a download of Stanford CoreNLP models on first use)"
    return CaptionScores(metrics, per_image, unavailable)
