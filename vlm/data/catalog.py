"""Data sets by name, for the command line: `--data shapes:1,shapes_vqa:1,easy_vqa:2` (name:weight).

Built-in sets need no files. COCO, Karpathy and VQAv2 need the folders of `DataPaths` (see data/*/README.md); a
caption folder of your own is named by its path, `folder:PATH` (vlm/data/folder.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import ConcatDataset, Dataset, Subset

from vlm.data.sample import Sample


@dataclass
class DataPaths:
    # annotations/captions_{train,val}2017.json, train2017/, val2017/; --data coco trains on train2017 less a 1%
    # validation share, and tests on val2017
    coco_root: str = "data/coco/prepared"
    karpathy_json: str = "data/coco/prepared/dataset_coco.json"
    karpathy_images: str = "data/coco/prepared"  # image paths in the JSON are relative to this folder
    vqa_root: str = (
        "data/vqa/prepared"  # v2_OpenEnded_mscoco_{split}2014_questions.json, v2_mscoco_..._annotations.json
    )
    on_missing: str = "error"  # images named by annotations but absent: "error" or "skip"
    shards_dir: str = "data/shards"  # `--data shards`: a folder written by vlm-make-shards (docs/data.md)


# easy_vqa_shapes: easy-VQA's questions whose answer is a shape, to give them a larger share of a mixture
# (with a quarter of each batch made of them, far more of the shape questions came out right: docs/results.md,
# "The recipe", and docs/recipe_sweep.md).
# easy_vqa_balanced: easy-VQA with every yes/no question also asked so that the answer flips (see
# `flipped_counterparts`), so that its yes/no answers cannot come from the question's wording alone.
# shapes_vqa_reasoned: the built-in questions, each answer after the steps that find it ("circle red, so red"; "small
# yellow square, big red circle, so big"; see `reasoned_answer`), scored by the answer after the reason.
# shapes_vqa_reading: the same, the steps given and the final answer the only target (practice in reading them).
# shapes_walks: the built-in scenes' objects named top to bottom on request, a walk that the reasoned answers take
# (training practice; no question type of the built-in questions).
# shapes_what_is: every "what is left of/above the B?" a built-in scene answers, reasoned (the built-in questions ask
# at most one a scene): practice in the kind answered worst.
# shapes_robust, shapes_vqa_robust: the built-in test scenes, captions and questions, drawn with variations the
# training renderer never makes (`robust_rendering`); test split only.
# easy_vqa_reasoned: easy-VQA with each yes/no answer worked out in steps ("asked red, saw blue, different, so no";
# see `reasoned_target`); scored, like any reply, by the answer after the reason.
SHAPES_NAMES = (
    "shapes",
    "shapes_vqa",
    "shapes_vqa_reasoned",
    "shapes_vqa_reading",
    "shapes_walks",
    "shapes_what_is",
    "shapes_robust",
    "shapes_vqa_robust",
)
DATASET_NAMES = (
    *SHAPES_NAMES,
    "easy_vqa",
    "easy_vqa_shapes",
    "easy_vqa_balanced",
    "easy_vqa_reasoned",
    "coco",
    "karpathy",
    "vqa",
    "shards",
)
FOLDER_PREFIX = "folder:"  # --data folder:PATH[:weight]


def data_kind(name: str) -> str:
    """ "built-in" (the built-in scenes and easy-VQA) or "photos": which preprocessing defaults a data set takes
    (vlm/data/transforms.py, PREPROCESSING_DEFAULTS)."""
    return "built-in" if name in SHAPES_NAMES or name.startswith("easy_vqa") else "photos"


def build_dataset(
    name: str, split: str, paths: DataPaths | None = None, mode: str | None = None, varied: float = 0.0
) -> Dataset:
    """A Dataset of Samples. split: "train", "val" or "test"; mode "train" (one sample per target) or "eval"
    (one per image or question, with every reference); by default "train" for the train split. varied: the share of
    the built-in scenes drawn with varied renderings (training augmentation; other data sets ignore it)."""
    paths = paths or DataPaths()
    mode = mode or ("train" if split == "train" else "eval")
    if name.startswith(FOLDER_PREFIX):
        from vlm.data.folder import CaptionFolder, split_folder

        folder = split_folder(name[len(FOLDER_PREFIX) :], split)
        return CaptionFolder(folder, mode=mode, on_missing=paths.on_missing)
    if name in SHAPES_NAMES:
        from vlm.data.shapes import ShapesDataset

        robust = name.endswith("_robust")
        if robust and split != "test":
            raise ValueError(f"{name} is a held-out test split (--split test); training never sees its renderings")
        task = {
            "shapes": "caption",
            "shapes_robust": "caption",
            "shapes_walks": "walk",
            "shapes_what_is": "what_is",
        }.get(name, "vqa")
        reasoned, reading = name == "shapes_vqa_reasoned", name == "shapes_vqa_reading"
        return ShapesDataset(split, task=task, reasoned=reasoned, robust=robust, reading=reading, varied=varied)
    if name in ("easy_vqa", "easy_vqa_shapes", "easy_vqa_balanced", "easy_vqa_reasoned"):
        from vlm.data.easy_vqa import EasyVQA

        return EasyVQA(
            split,
            answer_types=("shape",) if name == "easy_vqa_shapes" else None,
            balanced=name == "easy_vqa_balanced",
            reasoned=name == "easy_vqa_reasoned",
        )
    if name == "coco":
        from vlm.data.coco import CocoCaptions

        # COCO 2017 has no public test captions: val2017 is the test split, and validation (choosing checkpoints)
        # is a held-out share of train2017 (`validation_images`), so that the two never share an image.
        folder = "val2017" if split == "test" else "train2017"
        root = Path(paths.coco_root)
        return CocoCaptions(
            root / "annotations" / f"captions_{folder}.json",
            root / folder,
            mode=mode,
            on_missing=paths.on_missing,
            part="all" if split == "test" else split,
        )
    if name == "karpathy":
        from vlm.data.coco import KarpathyCaptions

        karpathy_split = "train+restval" if split == "train" else split
        return KarpathyCaptions(
            paths.karpathy_json, paths.karpathy_images, split=karpathy_split, mode=mode, on_missing=paths.on_missing
        )
    if name == "vqa":
        from vlm.data.vqa import VQADataset

        vqa_split = {"train": "train2014", "val": "val2014", "test": "val2014"}[split]
        root = Path(paths.vqa_root)
        return VQADataset(
            root / f"v2_OpenEnded_mscoco_{vqa_split}_questions.json",
            root / f"v2_mscoco_{vqa_split}_annotations.json",
            root / vqa_split,
            mode=mode,
            on_missing=paths.on_missing,
        )
    if name == "shards":
        from vlm.data.shards import ShardCaptions, ShardStream

        # Training streams its split (each process and worker its own shards); anything else reads it in order.
        if split == "train" and mode == "train":
            return ShardStream(paths.shards_dir, "train")
        return ShardCaptions(paths.shards_dir, split, mode)
    raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASET_NAMES)}")


def parse_data_spec(spec: str) -> list[tuple[str, float]]:
    """ "shapes:1,easy_vqa:2" -> [("shapes", 1.0), ("easy_vqa", 2.0)]; a missing weight means 1."""
    parts = []
    for item in spec.split(","):
        name, _, weight = item.strip().partition(":")
        if name == FOLDER_PREFIX[:-1]:  # folder:PATH or folder:PATH:weight
            path, _, weight = weight.rpartition(":") if _is_number(weight.rpartition(":")[2]) else (weight, "", "")
            name = FOLDER_PREFIX + path
            if not path:
                raise ValueError(f"--data {spec!r}: 'folder' needs its path, as folder:PATH")
        elif name not in DATASET_NAMES:
            raise ValueError(
                f"unknown data set {name!r} in --data {spec!r}; choose from {', '.join(DATASET_NAMES)} or folder:PATH"
            )
        try:
            parts.append((name, float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"weight {weight!r} of {name!r} in --data {spec!r} is not a number") from None
    return parts


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def texts_of(dataset: Dataset) -> list[str]:
    """Every text a data set can train on (questions, targets, references), without loading its images."""
    if hasattr(dataset, "texts"):
        return list(dataset.texts())
    if isinstance(dataset, ConcatDataset):
        return [t for part in dataset.datasets for t in texts_of(part)]
    texts: list[str] = []
    for index in range(len(dataset)):
        sample: Sample = dataset[index]
        texts.extend([sample.target, *sample.references] + ([sample.question] if sample.question else []))
    return texts


def limit(dataset: Dataset, count: int | None) -> Dataset:
    """The first `count` samples (all if None): validation on a fixed, cheap subset."""
    return dataset if count is None or count >= len(dataset) else Subset(dataset, range(count))
