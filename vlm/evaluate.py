"""Run a model over a data set and score it: caption metrics for captions, VQA accuracy for questions, and for the
built-in shapes set the share of images whose caption names every object.

Writes, into one folder: predictions in the benchmark's results format (COCO: [{"image_id", "caption"}], VQA:
[{"question_id", "answer"}]), metrics.json, and report.html (see vlm/report.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from vlm.data.sample import Sample
from vlm.generate import GenerationConfig
from vlm.metrics.cider import cider_d
from vlm.metrics.coco_caption import caption_metrics
from vlm.metrics.shapes_accuracy import names_every_object, shapes_caption_accuracy
from vlm.metrics.vqa import vqa_metrics, vqa_soft_accuracy
from vlm.predict import Predictor


def _batches(samples: Sequence[Sample], batch_size: int, desc: str, quiet: bool):
    for start in tqdm(range(0, len(samples), batch_size), desc=desc, disable=quiet, leave=False):
        yield samples[start : start + batch_size]


def predict_captions(
    predictor: Predictor, samples: Sequence[Sample], config: GenerationConfig, batch_size: int = 64, quiet: bool = True
) -> list[str]:
    captions: list[str] = []
    for batch in _batches(samples, batch_size, "captioning", quiet):
        captions += predictor.caption([s.image for s in batch], config)
    return captions


def predict_answers(
    predictor: Predictor, samples: Sequence[Sample], config: GenerationConfig, batch_size: int = 128, quiet: bool = True
) -> list[str]:
    """Questions in batches; questions about the same image within a batch share one image encoding."""
    answers: list[str] = []
    for batch in _batches(samples, batch_size, "answering", quiet):
        slot: dict = {}
        images, index = [], []
        for sample in batch:
            key = sample.image_id or id(sample.image)
            if key not in slot:
                slot[key] = len(images)
                images.append(sample.image)
            index.append(slot[key])
        answers += predictor.answer(images, [s.question for s in batch], index, config)
    return answers


def score_captions(samples: Sequence[Sample], captions: Sequence[str], full: bool = True) -> tuple[dict, list[dict]]:
    """Metrics and one row per image. full=False: the built-in CIDEr-D only (no Java), for validation in training."""
    ids = [str(s.image_id) for s in samples]
    predictions = dict(zip(ids, captions))
    references = {i: s.references or [s.target] for i, s in zip(ids, samples)}
    if full:
        scores = caption_metrics(predictions, references)
        metrics, per_image = dict(scores.metrics), scores.per_image_cider
        if scores.unavailable:
            metrics["unavailable"] = scores.unavailable
    else:
        cider, per_image = cider_d(predictions, references)
        metrics = {"CIDEr": cider}
    rows = [
        {"image_id": i, "caption": c, "references": references[i], "cider": per_image[i]} for i, c in zip(ids, captions)
    ]
    scenes = [s.meta.get("scene") for s in samples]
    if all(scene is not None for scene in scenes):
        metrics["objects_named_correctly"] = shapes_caption_accuracy(captions, scenes)
        for row, scene in zip(rows, scenes):
            row["objects_correct"] = names_every_object(row["caption"], scene)
    metrics["images"] = len(samples)
    return metrics, rows


def score_answers(samples: Sequence[Sample], answers: Sequence[str]) -> tuple[dict, list[dict]]:
    references = [s.references or [s.target] for s in samples]
    metrics = vqa_metrics(
        answers,
        references,
        answer_types=[s.meta.get("answer_type", "all") for s in samples],
        question_types=[s.meta.get("question_type", s.question.split(" ")[0]) for s in samples],
    )
    rows = [
        {
            "question_id": s.meta.get("question_id", str(s.image_id)),
            "image_id": str(s.image_id),
            "question": s.question,
            "answer": a,
            "references": r,
            "score": vqa_soft_accuracy(a, r),
        }
        for s, a, r in zip(samples, answers, references)
    ]
    return metrics, rows


def evaluate(
    predictor: Predictor,
    samples: Sequence[Sample],
    out_dir: str | Path | None = None,
    config: GenerationConfig | None = None,
    batch_size: int = 64,
    quiet: bool = False,
) -> dict:
    """Generate for every sample, score, and (with out_dir) write predictions.json, metrics.json and report.html."""
    if not samples:
        raise ValueError("nothing to evaluate: the data set is empty")
    is_caption = samples[0].question is None
    if is_caption:
        outputs = predict_captions(predictor, samples, config or GenerationConfig(), batch_size, quiet)
        metrics, rows = score_captions(samples, outputs)
        results = [{"image_id": r["image_id"], "caption": r["caption"]} for r in rows]
    else:
        outputs = predict_answers(
            predictor, samples, config or GenerationConfig(max_new_tokens=8), batch_size * 2, quiet
        )
        metrics, rows = score_answers(samples, outputs)
        results = [{"question_id": r["question_id"], "answer": r["answer"]} for r in rows]
    metrics["blind"] = predictor.blind
    if out_dir is not None:
        from vlm.report import write_report

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "predictions.json").write_text(json.dumps(results, indent=1) + "\n")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_report(out / "report.html", samples, rows, metrics, blind=predictor.blind)
    return metrics


def quick_metrics(predictor: Predictor, caption_samples: Sequence[Sample], question_samples: Sequence[Sample]) -> dict:
    """Cheap validation metrics for the training loop: built-in CIDEr-D (no Java), object accuracy, VQA accuracy."""
    metrics: dict[str, float] = {}
    if caption_samples:
        scores, _ = score_captions(
            caption_samples, predict_captions(predictor, caption_samples, GenerationConfig()), full=False
        )
        metrics["val_cider"] = scores["CIDEr"]
        if "objects_named_correctly" in scores:
            metrics["val_objects_named_correctly"] = scores["objects_named_correctly"]
    if question_samples:
        scores, _ = score_answers(
            question_samples, predict_answers(predictor, question_samples, GenerationConfig(max_new_tokens=8))
        )
        metrics["val_vqa_accuracy"] = scores["accuracy"]
    return metrics


def format_table(metrics: dict, title: str) -> str:
    lines = [title, "-" * len(title)]
    for key, value in metrics.items():
        if isinstance(value, float):
            lines.append(f"{key:<28} {value:8.4f}")
        elif isinstance(value, dict):
            for sub, v in value.items():
                lines.append(
                    f"{key + ' / ' + str(sub):<28} {v:8.4f}" if isinstance(v, float) else f"{key} / {sub}: {v}"
                )
        else:
            lines.append(f"{key:<28} {value}")
    return "\n".join(lines)
