"""The built-in scenes described in French, from their objects: "un petit cercle rouge et un grand carré bleu".

French puts the size before the noun and the colour after it, and both agree with the noun in gender and number
("deux grandes croix vertes"; "orange" never changes). Used by scripts/make_french_shapes.py (a caption folder for
the fine-tuning demonstration in docs/results.md) and by the French object accuracy
(vlm/evaluation/metrics/shapes_accuracy.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from vlm.data.shapes import Scene, annotated_scene, groups_left_to_right, rendered_image

# shape -> (singular, plural, gender)
NOUNS = {
    "circle": ("cercle", "cercles", "m"),
    "square": ("carré", "carrés", "m"),
    "triangle": ("triangle", "triangles", "m"),
    "cross": ("croix", "croix", "f"),
}
# English word -> (masculine singular, feminine singular, masculine plural, feminine plural)
COLOURS = {
    "red": ("rouge", "rouge", "rouges", "rouges"),
    "green": ("vert", "verte", "verts", "vertes"),
    "blue": ("bleu", "bleue", "bleus", "bleues"),
    "yellow": ("jaune", "jaune", "jaunes", "jaunes"),
    "purple": ("violet", "violette", "violets", "violettes"),
    "orange": ("orange", "orange", "orange", "orange"),  # a colour named after a fruit: invariable
}
SIZES = {"small": ("petit", "petite", "petits", "petites"), "big": ("grand", "grande", "grands", "grandes")}
COUNTS = {2: "deux", 3: "trois", 4: "quatre"}


def agreeing(forms: tuple[str, str, str, str], count: int, gender: str) -> str:
    return forms[2 * (count > 1) + (gender == "f")]


def phrase(count: int, size: str | None, colour: str, shape: str) -> str:
    """'un petit cercle rouge', 'deux grandes croix vertes': count, size, noun, colour."""
    singular, plural, gender = NOUNS[shape]
    article = ("une" if gender == "f" else "un") if count == 1 else COUNTS[count]
    words = [article] + ([agreeing(SIZES[size], count, gender)] if size else [])
    return " ".join([*words, singular if count == 1 else plural, agreeing(COLOURS[colour], count, gender)])


def french_caption(scene: Scene) -> str:
    """Every group of identical objects, left to right, as the English canonical caption has them."""
    phrases = [phrase(*group) for group in groups_left_to_right(scene)]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " et " + phrases[-1]


def write_caption_folder(out: str | Path, splits: dict[str, int], seed: int = 0) -> None:
    """A caption folder (vlm/data/folder.py) of the built-in scenes with French captions: out/{split}/NNNNNN.png
    and out/{split}/metadata.jsonl, each row with its `scene` and `language` "fr", so that evaluation can score
    which objects a French caption names. splits: split -> number of images (the first of that split)."""
    for split, count in splits.items():
        folder = Path(out, split)
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for index in range(count):
            scene = annotated_scene(seed, split, index).scene
            file_name = f"{index:06d}.png"
            rendered_image(seed, split, index, 64).save(folder / file_name)
            row = {"file_name": file_name, "text": french_caption(scene), "scene": scene.to_json(), "language": "fr"}
            rows.append(json.dumps(row, ensure_ascii=False))
        (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
