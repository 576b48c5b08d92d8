"""Packing: every text about one image in one training sequence, [image tokens; text 1; text 2; ...].

easy-VQA asks ~10 questions about each image and the built-in set a caption and ~8 questions. One sample per
question encodes the image and runs its 16 image tokens through the decoder ~10 times for one answer each; packed,
they run once and every text of the image is supervised in the same pass. Each text attends to the image tokens and
to itself only (see vlm/masks.py), so a packed sequence trains exactly what separate sequences would.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from vlm.data.sample import Sample


def sample_image_ids(dataset: Dataset) -> list[str | int]:
    """The image id of every sample, without loading images where the data set can say it directly."""
    if hasattr(dataset, "sample_image_ids"):
        return list(dataset.sample_image_ids())
    return [dataset[i].image_id for i in range(len(dataset))]


def sample_source(dataset: Dataset) -> str:
    return dataset[0].source


class ImageGroups(Dataset):
    """Samples of one or more data sets, grouped by image: item i is the list of every Sample of image i.

    The parts must describe the same images under the same ids (e.g. the built-in set's captions and questions).
    """

    def __init__(self, parts: Sequence[Dataset]):
        self.parts = list(parts)
        groups: dict[str | int, list[tuple[int, int]]] = {}
        for part_index, part in enumerate(self.parts):
            for sample_index, image_id in enumerate(sample_image_ids(part)):
                groups.setdefault(image_id, []).append((part_index, sample_index))
        self.groups = list(groups.values())

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> list[Sample]:
        return [self.parts[part][sample] for part, sample in self.groups[index]]


def group_by_image(
    parts: Sequence[Dataset], weights: Sequence[float] | None
) -> tuple[list[Dataset], list[float] | None]:
    """Merge the parts that share a source (the same images) into one `ImageGroups`, adding their weights.

    Weights then count images drawn rather than texts: `shapes:1,shapes_vqa:1,easy_vqa:1` draws two built-in scenes
    (each with its caption and questions) for every easy-VQA image. Without weights, none are returned (the mixture
    then draws as many images as each group has).
    """
    if weights is not None and len(parts) != len(weights):
        raise ValueError(f"need one weight per data set ({len(parts)} sets, {len(weights)} weights)")
    by_source: dict[str, tuple[list[Dataset], float]] = {}
    for index, part in enumerate(parts):
        source = sample_source(part)
        members, total = by_source.get(source, ([], 0.0))
        by_source[source] = (members + [part], total + (weights[index] if weights is not None else 0.0))
    groups = [ImageGroups(members) for members, _ in by_source.values()]
    return groups, [total for _, total in by_source.values()] if weights is not None else None
