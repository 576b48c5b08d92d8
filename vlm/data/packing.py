"""Packing: every text about one image in one training sequence, [image tokens; text 1; text 2; ...].

easy-VQA asks ~10 questions about each image and the built-in set a caption and ~8 questions. One sample per
question encodes the image and runs its 16 image tokens through the decoder ~10 times for one answer each; packed,
they run once and every text of the image is supervised in the same pass. Each text attends to the image tokens and
to itself only (see vlm/model/masks.py), so a packed sequence trains exactly what separate sequences would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

import torch
from torch.utils.data import Dataset

from vlm.data.sample import Sample


def sample_image_ids(dataset: Dataset) -> list[str | int]:
    """The image id of every sample, without loading images where the data set can say it directly."""
    if hasattr(dataset, "sample_image_ids"):
        return list(dataset.sample_image_ids())
    return [dataset[i].image_id for i in range(len(dataset))]


def sample_source(dataset: Dataset) -> str:
    return dataset[0].source


def parse_sources(spec: str) -> list[str] | None:
    """Split a comma-separated list: "easy_vqa,shapes" -> ["easy_vqa", "shapes"]; "" -> None (every source)."""
    return [name.strip() for name in spec.split(",") if name.strip()] or None


def check_sources(present: Sequence[str], sources: Collection[str] | None) -> None:
    unknown = sorted(set(sources or ()) - set(present))
    if unknown:
        raise ValueError(f"cannot pack {', '.join(unknown)}: the training data's sources are {', '.join(present)}")


class ImageGroups(Dataset):
    """Samples of one or more data sets, grouped by image: item i is the list of every Sample of image i.

    The parts must describe the same images under the same ids (e.g. the built-in set's captions and questions).
    With `texts_per_item`, an item is instead at most that many of the image's samples, drawn so that each part's
    share of the drawn texts is its weight's share of `weights` (`draw_in_proportion`); only those are loaded.
    """

    def __init__(self, parts: Sequence[Dataset], weights: Sequence[float] | None = None, texts_per_item: int = 0):
        self.parts = list(parts)
        self.texts_per_item = texts_per_item
        groups: dict[str | int, list[tuple[int, int]]] = {}
        for part_index, part in enumerate(self.parts):
            for sample_index, image_id in enumerate(sample_image_ids(part)):
                groups.setdefault(image_id, []).append((part_index, sample_index))
        self.groups = list(groups.values())
        self.part_weights = list(weights) if weights is not None else None  # None: every sample alike
        if self.part_weights is not None and len(self.part_weights) != len(self.parts):
            raise ValueError(f"need one weight per data set ({len(self.parts)} sets, {len(self.part_weights)} weights)")

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> list[Sample]:
        members = self.groups[index]
        if self.texts_per_item:
            # A part's weight is shared among its samples of this image: a scene's one caption weighs as much as its
            # ten questions together, as in the unpacked mixture.
            in_image = Counter(part for part, _ in members)
            weights = torch.tensor(
                [self.part_weights[part] / in_image[part] if self.part_weights else 1.0 for part, _ in members]
            )
            members = [members[i] for i in draw_in_proportion(weights, self.texts_per_item)]
        return [self.parts[part][sample] for part, sample in members]


def draw_in_proportion(weights: torch.Tensor, count: int) -> list[int]:
    """Up to `count` distinct indices, index i drawn with probability min(1, count * weights[i] / weights.sum()):
    systematic sampling (one random start, then steps of one) over the indices in a random order. Each index's
    expected share of the draws is then its weight's share, as with `count` draws with replacement, but no index is
    drawn twice; one whose share would need more than one draw is drawn once, and the draw then holds fewer. All
    weights zero (an image only a zero-weight data set describes): every index alike."""
    if not weights.sum() > 0:
        weights = torch.ones_like(weights)
    order = torch.randperm(len(weights))
    inclusion = (count * weights / weights.sum()).clamp(max=1.0)[order]
    ends = inclusion.cumsum(0)
    points = torch.rand(()) + torch.arange(count)
    chosen = torch.searchsorted(ends, points, right=True)
    return order[chosen[chosen < len(weights)]].tolist()


def group_by_image(
    parts: Sequence[Dataset],
    weights: Sequence[float] | None,
    sources: Collection[str] | None = None,
    texts_per_item: int = 0,
) -> tuple[list[Dataset], list[float] | None]:
    """Merge the parts that share a source (the same images) into one `ImageGroups`, adding their weights.
    With `sources`, only parts of those sources are grouped; the others stay one text per sample, in their place.

    Weights of a grouped part then count images drawn rather than texts: `shapes:1,shapes_vqa:1,easy_vqa:1` draws
    two built-in scenes (each with its caption and questions) for every easy-VQA image. Without weights, none are
    returned (the mixture then draws as many items as each part has). `texts_per_item`: see `ImageGroups`; the
    members' weights then also set each one's share of an image's drawn texts.
    """
    if weights is not None and len(parts) != len(weights):
        raise ValueError(f"need one weight per data set ({len(parts)} sets, {len(weights)} weights)")
    present = [sample_source(part) for part in parts]
    check_sources(present, sources)
    # Keyed by ("group", source) for the parts to pack, ("keep", index) for a part left as it is.
    merged: dict[tuple[str, str | int], tuple[list[Dataset], list[float]]] = {}
    for index, (part, source) in enumerate(zip(parts, present)):
        key = ("group", source) if sources is None or source in sources else ("keep", index)
        members, member_weights = merged.get(key, ([], []))
        merged[key] = (members + [part], member_weights + [weights[index] if weights is not None else 0.0])
    groups = [
        ImageGroups(members, member_weights if weights is not None else None, texts_per_item)
        if kind == "group"
        else members[0]
        for (kind, _), (members, member_weights) in merged.items()
    ]
    return groups, [sum(member_weights) for _, member_weights in merged.values()] if weights is not None else None
