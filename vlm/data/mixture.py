"""Training on several data sets at once: a weighted mixture, a resumable order, and Samples -> tokenized examples.

The order of an epoch is a pure function of (seed, epoch): the sampler can start mid-epoch after a resume and each
distributed rank takes its own interleaved share. Each draw also carries its own random seed, so image
augmentation is the same whichever worker process (or resumed run) loads the sample.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from vlm.data.batch import EncodedExample, collate, encode_example, encode_packed
from vlm.data.images import load_image
from vlm.data.sample import Sample
from vlm.data.transforms import ImageTransform, mirror_sample
from vlm.model.tokenizer import Tokenizer


class MixtureDataset(Dataset):
    """Several data sets behind one index space: index i belongs to the part whose range holds it."""

    def __init__(self, parts: Sequence[Dataset]):
        if not parts:
            raise ValueError("a mixture needs at least one data set")
        self.parts = list(parts)
        self.offsets = [0]
        for part in self.parts:
            if len(part) == 0:
                raise ValueError(f"data set {type(part).__name__} in the mixture is empty")
            self.offsets.append(self.offsets[-1] + len(part))

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int) -> Sample:
        part = bisect.bisect_right(self.offsets, index) - 1
        return self.parts[part][index - self.offsets[part]]


def mixture_order(
    part_sizes: Sequence[int], weights: Sequence[float], epoch_size: int, seed: int, epoch: int
) -> list[int]:
    """Indices into a `MixtureDataset` for one epoch: part i gets its share `weights[i] / sum(weights)` of the
    `epoch_size` draws, taken without replacement (a fresh permutation each time a part is exhausted), then shuffled."""
    if len(part_sizes) != len(weights) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"need one non-negative weight per data set (sizes {list(part_sizes)}, weights {list(weights)})"
        )
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    total_weight = sum(weights)
    indices: list[torch.Tensor] = []
    offset = 0
    for size, weight in zip(part_sizes, weights):
        draws = round(epoch_size * weight / total_weight)
        passes = [torch.randperm(size, generator=generator) for _ in range(-(-draws // size))]
        if passes:
            indices.append(torch.cat(passes)[:draws] + offset)
        offset += size
    order = torch.cat(indices)
    return order[torch.randperm(len(order), generator=generator)].tolist()


class MixtureSampler(Sampler):
    """Yields (index, sample_seed) pairs for this rank, starting `start` draws into the epoch."""

    def __init__(
        self,
        part_sizes: Sequence[int],
        weights: Sequence[float] | None = None,
        epoch_size: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.part_sizes = list(part_sizes)
        self.weights = list(weights) if weights is not None else [float(s) for s in self.part_sizes]
        self.epoch_size = epoch_size or sum(self.part_sizes)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        """Draws per rank in a whole epoch (every rank gets the same number, so DDP steps stay in lockstep)."""
        return self.epoch_size // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = mixture_order(self.part_sizes, self.weights, self.epoch_size, self.seed, self.epoch)
        per_rank = len(self)
        for position in range(self.start, per_rank):
            draw = position * self.world_size + self.rank
            yield order[draw], ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + draw) % 2**31


class TokenizedDataset(Dataset):
    """Samples -> EncodedExamples: load the image, transform it, encode prompt and target to fit `max_text_len`.

    Keys may be plain indices or (index, seed) pairs from `MixtureSampler`; with a seed, the random augmentation
    of that draw is reproducible. `blind=True` replaces every image by zeros (the no-image baseline).
    A transform whose view is mirrored (an `ImageTransform` with flips on) has "left" and "right" swapped in the
    texts. An item that is a list of Samples of one image (`ImageGroups`) becomes one packed example of at most
    `max_packed_len` text tokens, its texts in an order drawn from the seed.
    """

    def __init__(
        self,
        samples: Dataset,
        tokenizer: Tokenizer,
        transform: Callable[[Image.Image], torch.Tensor],
        max_text_len: int,
        blind: bool = False,
        max_packed_len: int | None = None,
    ):
        self.samples, self.tokenizer, self.transform = samples, tokenizer, transform
        self.max_text_len, self.blind = max_text_len, blind
        self.max_packed_len = max_packed_len or max_text_len

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> EncodedExample:
        index, seed = key if isinstance(key, tuple) else (key, None)
        item: Sample | list[Sample] = self.samples[index]
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                # The CPU generator alone, which fork_rng restores: torch.manual_seed would also seed every
                # accelerator's generator (left changed afterwards) and add lazy-init bookkeeping to every sample.
                torch.random.default_generator.manual_seed(seed)
            samples = [item[i] for i in torch.randperm(len(item))] if isinstance(item, list) else [item]
            if isinstance(self.transform, ImageTransform):
                image, mirrored = self.transform.view(load_image(samples[0].image))
            else:
                image, mirrored = self.transform(load_image(samples[0].image)), False
        if mirrored:  # the text must say of the mirrored image what it said of the original
            samples = [mirror_sample(sample) for sample in samples]
            item = samples if isinstance(item, list) else samples[0]
        if self.blind:
            image = torch.zeros_like(image)
        if not isinstance(item, list):
            return encode_example(self.tokenizer, image, item.question, item.target, self.max_text_len, item.given)
        texts = [(sample.question, sample.target) for sample in samples]
        return encode_packed(self.tokenizer, image, texts, self.max_text_len, self.max_packed_len)


def training_loader(
    dataset: TokenizedDataset, sampler: MixtureSampler, batch_size: int, num_workers: int = 0
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=partial(collate, pad_id=dataset.tokenizer.pad_id),
        num_workers=num_workers,
        persistent_workers=False,
        drop_last=True,
    )
