"""Run a model over a data set and score it: caption metrics for captions, VQA accuracy for questions, and for the
built-in shapes set the share of images whose caption names every object.

`evaluate` writes into one folder: predictions in the benchmark's results format (COCO: [{"image_id", "caption"}],
VQA: [{"question_id", "answer"}]), metrics.json, per-image (or per-question) scores, and report.html.
`quick_metrics` is the cheap version the training loop calls for validation (built-in CIDEr-D, no Java).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from torch.utils.data import Dataset
from tqdm import tqdm

from vlm.data.sample import Sample, final_answer
from vlm.evaluation.metrics.cider import cider_d
from vlm.evaluation.metrics.coco_caption import caption_metrics
from vlm.evaluation.metrics.shapes_accuracy import LANGUAGES, names_every_object, shapes_caption_accuracy
from vlm.evaluation.metrics.vqa import vqa_metrics
from vlm.inference.generate import GenerationConfig
from vlm.inference.predict import ANSWER_TOKENS, Predictor

CAPTION_TOKENS = 32  # default caption length when no GenerationConfig is given


def load_samples(dataset: Dataset | Sequence[Sample], limit: int | None = None) -> list[Sample]:
    """The first `limit` samples (all by default) of a Dataset of Samples, as a list."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    count = len(dataset) if limit is None else min(limit, len(dataset))
    return [dataset[i] for i in range(count)]


def caption_items(samples: Sequence[Sample]) -> list[Sample]:
    """One sample per image, holding all its references: captions are scored per image, and a data set in "train"
    mode has one sample per reference caption."""
    by_image: dict[Hashable, Sample] = {}
    for index, sample in enumerate(samples):
        key = sample.image_id if sample.image_id not in ("", None) else f"#{index}"
        references = list(sample.references) or [sample.target]
        if key not in by_image:
            by_image[key] = replace(sample, image_id=key, references=references)
        else:
            merged = by_image[key].references
            merged.extend(r for r in references if r not in merged)
    return list(by_image.values())


def _batches(items: Sequence, batch_size: int, desc: str, quiet: bool) -> Iterator[Sequence]:
    for start in tqdm(range(0, len(items), batch_size), desc=desc, disable=quiet, leave=False):
        yield items[start : start + batch_size]


def predict_captions(
    predictor: Predictor,
    samples: Sequence[Sample],
    config: GenerationConfig | None = None,
    batch_size: int = 64,
    quiet: bool = True,
) -> list[str]:
    config = config or GenerationConfig(max_new_tokens=CAPTION_TOKENS)
    captions: list[str] = []
    for batch in _batches(samples, batch_size, "captioning", quiet):
        captions += predictor.caption([s.image for s in batch], config)
    return captions


def predict_answers(
    predictor: Predictor,
    samples: Sequence[Sample],
    config: GenerationConfig | None = None,
    batch_size: int = 64,
    quiet: bool = True,
) -> list[str]:
    """Questions in batches; questions about the same image within a batch share one image encoding."""
    config = config or GenerationConfig(max_new_tokens=ANSWER_TOKENS)
    answers: list[str] = []
    for batch in _batches(samples, batch_size, "answering", quiet):
        slot: dict = {}
        images, image_index = [], []
        for sample in batch:
            key = sample.image_id if sample.image_id not in ("", None) else id(sample)
            if key not in slot:
                slot[key] = len(images)
                images.append(sample.image)
            image_index.append(slot[key])
        answers += predictor.answer(images, [s.question for s in batch], image_index, config)
    return answers


def score_captions(items: Sequence[Sample], captions: Sequence[str], toolkit: bool = True) -> tuple[dict, list[dict]]:
    """Metrics and one row per image (items from `caption_items`). toolkit=False: the built-in CIDEr-D only (no
    Java, no toolkit), as in validation during training."""
    ids = [item.image_id for item in items]
    predictions = dict(zip(ids, captions, strict=True))
    references = {item.image_id: item.references for item in items}
    if toolkit:
        scores = caption_metrics(predictions, references)
        metrics: dict = dict(scores.metrics)
        per_image, unavailable = scores.per_image, dict(scores.unavailable)
    else:
        cider, per_image_cider = cider_d(predictions, references)
        metrics, per_image = {"CIDEr": cider}, {"CIDEr": per_image_cider}
        unavailable = {"BLEU, METEOR, ROUGE-L": "built-in metrics only were asked for (toolkit=False)"}
    rows = [
        {
            "image_id": i,
            "caption": c,
            "references": references[i],
            "scores": {name: values[i] for name, values in per_image.items()},
        }
        for i, c in zip(ids, captions)
    ]
    scenes = [item.meta.get("scene") for item in items]
    languages = {item.meta.get("language", "en") for item in items}
    if all(scene is not None for scene in scenes) and len(languages) == 1 and languages <= set(LANGUAGES):
        # the built-in scenes (in English, or in a caption folder's language): read the objects off the caption
        language = LANGUAGES[languages.pop()]
        metrics["objects_named_correctly"] = shapes_caption_accuracy(list(captions), scenes, language)
        for row, scene in zip(rows, scenes):
            row["objects_correct"] = names_every_object(row["caption"], scene, language)
    metrics["images"] = len(items)
    if unavailable:
        metrics["unavailable"] = unavailable
    return metrics, rows


def score_answers(samples: Sequence[Sample], answers: Sequence[str]) -> tuple[dict, list[dict]]:
    metrics = vqa_metrics(answers, samples)
    per_question = metrics.pop("per_question")
    rows = [
        {
            "question_id": s.meta.get("question_id", index),
            "image_id": s.image_id,
            "question": s.question,
            "answer": final_answer(a),
            "reply": a,
            "references": list(s.references) or [s.target],
            "score": score,
        }
        for index, (s, a, score) in enumerate(zip(samples, answers, per_question))
    ]
    return metrics, rows


def evaluate(
    predictor: Predictor,
    dataset: Dataset | Sequence[Sample],
    out_dir: str | Path | None = None,
    config: GenerationConfig | None = None,
    batch_size: int = 64,
    toolkit: bool = True,
    limit: int | None = None,
    quiet: bool = False,
) -> dict:
    """Generate for every image (caption sets) or question (VQA sets), score, and with out_dir write
    predictions.json, metrics.json, per_image.json / per_question.json and report.html. Returns the metrics.

    A model trained blind is evaluated blind with `Predictor(..., blind=True)`: it then sees zeros for images.
    toolkit=False scores captions with the built-in CIDEr-D only (no Java)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    samples = load_samples(dataset, limit)
    if not samples:
        raise ValueError("nothing to evaluate: the data set is empty")
    tasks = {s.task for s in samples}
    if len(tasks) > 1:
        raise ValueError("the data set mixes captions and questions; evaluate each on its own")
    if tasks == {"caption"}:
        items = caption_items(samples)
        outputs = predict_captions(predictor, items, config, batch_size, quiet)
        metrics, rows = score_captions(items, outputs, toolkit)
        results = [{"image_id": r["image_id"], "caption": r["caption"]} for r in rows]
        details = "per_image.json"
    else:
        items = samples
        outputs = predict_answers(predictor, items, config, batch_size, quiet)
        metrics, rows = score_answers(items, outputs)
        results = [{"question_id": r["question_id"], "answer": r["answer"]} for r in rows]
        details = "per_question.json"
    metrics["blind"] = predictor.blind
    if out_dir is not None:
        from vlm.evaluation.report import write_report

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "predictions.json").write_text(json.dumps(results, indent=1) + "\n")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (out / details).write_text(json.dumps(rows, indent=1) + "\n")
        write_report(out / "report.html", items, rows, metrics)
    return metrics


def quick_metrics(
    predictor: Predictor,
    caption_samples: Sequence[Sample],
    question_samples: Sequence[Sample],
    limit: int | None = None,
) -> dict[str, float]:
    """Cheap validation metrics for the training loop, on at most `limit` samples of each kind: built-in CIDEr-D
    (no Java), object accuracy on the shapes set, and VQA accuracy."""
    metrics: dict[str, float] = {}
    if caption_samples:
        items = caption_items(load_samples(caption_samples, limit))
        scores, _ = score_captions(items, predict_captions(predictor, items), toolkit=False)
        metrics["val_cider"] = scores["CIDEr"]
        if "objects_named_correctly" in scores:
            metrics["val_objects_named_correctly"] = scores["objects_named_correctly"]
    if question_samples:
        samples = load_samples(question_samples, limit)
        scores, _ = score_answers(samples, predict_answers(predictor, samples))
        metrics["val_vqa_accuracy"] = scores["overall"]
    return metrics


def format_table(metrics: dict, title: str) -> str:
    """A plain-text table of the metrics for the terminal: scores to 4 places, breakdowns indented."""
    lines = [title, "-" * len(title)]
    for key, value in metrics.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [
                f"  {sub:<30} {v:8.4f}" if isinstance(v, float) else f"  {sub:<30} {v}" for sub, v in value.items()
            ]
        elif isinstance(value, float):
            lines.append(f"{key:<32} {value:8.4f}")
        else:
            lines.append(f"{key:<32} {value}")
    return "\n".join(lines)
