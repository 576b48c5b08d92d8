"""A self-contained HTML page of an evaluation: its metrics, then sample images (inlined as PNG) with what the model
wrote and what the references say, scored one by one (per-image CIDEr-D for captions, accuracy for answers): the
worst cases first, then the best. One file, no external resources, so it can be mailed or archived as it is."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from vlm.data.images import ImageLoadError, load_image
from vlm.data.sample import Sample

THUMBNAIL = 160  # pixels on the longer side

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em} h2{margin-top:1.5em}
.card{display:flex;gap:1em;margin:.6em 0;padding:.6em;border-radius:6px} .card p{margin:.2em 0}
.worst{background:#fdecea} .best{background:#e8f5e9} .pred{font-weight:bold} img{image-rendering:pixelated}
table{border-collapse:collapse} td{padding:2px 10px;border-bottom:1px solid #ddd} .note{color:#555}"""


def image_tag(source: str | Path | Image.Image) -> str:
    """An <img> with the image inlined as base64 PNG; a note instead if the image cannot be read."""
    try:
        image = load_image(source)
    except ImageLoadError as error:
        return f"<div class=note>{html.escape(str(error))}</div>"
    if max(image.size) > THUMBNAIL:
        image.thumbnail((THUMBNAIL, THUMBNAIL))
    elif max(image.size) < THUMBNAIL:  # small images (64 px) are enlarged with visible pixels rather than blurred
        scale = THUMBNAIL // max(image.size)
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _caption_text(row: dict) -> str:
    scores = " &middot; ".join(f"{name} {value:.3f}" for name, value in row["scores"].items())
    objects = ""
    if "objects_correct" in row:
        objects = f" &middot; objects {'all named' if row['objects_correct'] else 'wrong'}"
    references = "".join(f"<li>{html.escape(r)}</li>" for r in row["references"])
    caption = html.escape(row["caption"]) or "<i>(empty)</i>"
    return f"<p class=pred>{caption}</p><p>{scores}{objects}</p><ul>{references}</ul>"


def _answer_text(row: dict) -> str:
    verdict = "correct" if row["score"] >= 1 else "partly right" if row["score"] > 0 else "wrong"
    answer = html.escape(row.get("reply", row["answer"])) or "<i>(empty)</i>"
    return (
        f"<p>Q: {html.escape(row['question'])}</p><p class=pred>A: {answer}</p>"
        f"<p>{verdict} (accuracy {row['score']:.2f}) &middot; annotators: {html.escape(', '.join(row['references']))}</p>"
    )


def _metric_rows(metrics: dict) -> str:
    cells = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            cells += [f"<tr><td>{html.escape(f'{key} / {k}')}</td><td>{_value(v)}</td></tr>" for k, v in value.items()]
        else:
            cells.append(f"<tr><td>{html.escape(key)}</td><td>{_value(value)}</td></tr>")
    return "".join(cells)


def _value(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def write_report(
    path: str | Path, items: Sequence[Sample], rows: Sequence[dict], metrics: dict, per_side: int = 24
) -> None:
    """Write the page: `rows` are evaluate's per-image (caption) or per-question rows, `items` the samples they
    came from (for the images), `per_side` how many worst and how many best cases to show."""
    if len(items) != len(rows) or not rows:
        raise ValueError(f"need one row per sample; got {len(rows)} rows for {len(items)} samples")
    is_caption = "caption" in rows[0]

    def score(i: int) -> float:
        return rows[i]["scores"]["CIDEr"] if is_caption else rows[i]["score"]

    order = sorted(range(len(rows)), key=score)
    worst = order[:per_side]
    best = [i for i in reversed(order[-per_side:]) if i not in set(worst)]
    cards = []
    for heading, chosen in (("worst", worst), ("best", best)):
        cards.append(f"<h2>{len(chosen)} {heading}</h2>")
        for i in chosen:
            row = rows[i]
            key = "image_id" if is_caption else "question_id"
            text = _caption_text(row) if is_caption else _answer_text(row)
            cards.append(
                f"<div class='card {heading}'>{image_tag(items[i].image)}"
                f"<div><p class=note>{html.escape(str(row[key]))}</p>{text}</div></div>"
            )
    blind = "<p><b>Blind model:</b> it saw zeros instead of images.</p>" if metrics.get("blind") else ""
    unit = "images" if is_caption else "questions"
    page = (
        f"<!doctype html><meta charset=utf-8><title>vlm evaluation</title><style>{_STYLE}</style>"
        f"<h1>vlm evaluation</h1>{blind}<table>{_metric_rows(metrics)}</table>"
        f"<p class=note>{len(rows)} {unit}; ranked by {'CIDEr-D' if is_caption else 'accuracy'}.</p>{''.join(cards)}"
    )
    Path(path).write_text(page, encoding="utf-8")
