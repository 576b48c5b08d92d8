"""A self-contained HTML report of an evaluation: sample images (inlined as PNG) with what the model wrote and
what the references say, the per-image CIDEr-D for captions, the worst cases first and then the best."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from vlm.data.images import ImageLoadError, load_image
from vlm.data.sample import Sample

THUMBNAIL = 160


def _image_tag(source) -> str:
    try:
        image = load_image(source)
    except ImageLoadError as error:
        return f"<div class=missing>{html.escape(str(error))}</div>"
    if max(image.size) > THUMBNAIL:
        image.thumbnail((THUMBNAIL, THUMBNAIL))
    elif max(image.size) < THUMBNAIL:  # small images (64 px) are enlarged with visible pixels rather than blurred
        scale = THUMBNAIL // max(image.size)
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def write_report(
    path: Path, samples: Sequence[Sample], rows: Sequence[dict], metrics: dict, blind: bool = False, per_side: int = 24
) -> None:
    is_caption = "caption" in rows[0]
    score_key = "cider" if is_caption else "score"
    order = sorted(range(len(rows)), key=lambda i: rows[i][score_key])
    chosen = order[:per_side] + [i for i in order[-per_side:] if i not in order[:per_side]]
    cards = []
    for rank, i in enumerate(chosen):
        row, sample = rows[i], samples[i]
        heading = "worst" if rank < per_side else "best"
        if is_caption:
            text = (
                f"<p class=pred>{html.escape(row['caption']) or '<i>(empty)</i>'}</p><p>CIDEr-D {row['cider']:.3f}"
                + (
                    f" &middot; objects {'right' if row['objects_correct'] else 'wrong'}"
                    if "objects_correct" in row
                    else ""
                )
                + "</p><ul>"
                + "".join(f"<li>{html.escape(r)}</li>" for r in row["references"])
                + "</ul>"
            )
        else:
            text = (
                f"<p>Q: {html.escape(row['question'])}</p><p class=pred>A: {html.escape(row['answer'])}</p>"
                f"<p>references: {html.escape(', '.join(row['references']))} &middot; score {row['score']:.2f}</p>"
            )
        cards.append(
            f"<div class='card {heading}'>{_image_tag(sample.image)}<div><b>{heading}</b> "
            f"{html.escape(str(row['image_id']))}{text}</div></div>"
        )
    summary = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in metrics.items() if isinstance(v, float)
    )
    note = "<p><b>Blind model:</b> images were replaced by zeros.</p>" if blind else ""
    page = f"""<!doctype html><meta charset=utf-8><title>vlm evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}} .card{{display:flex;gap:1em;margin:.8em 0;padding:.6em;border-radius:6px}}
.worst{{background:#fdecea}} .best{{background:#e8f5e9}} .pred{{font-weight:bold}} img{{image-rendering:pixelated}}
table{{border-collapse:collapse}} td{{padding:2px 10px;border-bottom:1px solid #ddd}}</style>
<h1>vlm evaluation</h1>{note}<table>{summary}</table><h2>Worst and best {per_side} of {len(rows)}</h2>{"".join(cards)}"""
    Path(path).write_text(page)
