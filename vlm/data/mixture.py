"""Training on several data sets at once: a weighted mixture, a resumable order, and Samples -> tokenized examples.

The order of an epoch is a pure function of (seed, epoch): the sampler can start mid-epoch after a resume and each
distributed rank takes its own interleaved share. Each draw also carries its own random seed, so image
augmentation is the same whichever worker process (or resumed run) loads the sample.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from vlm.data.batch import EncodedExample, collate, encode_example, encode_packed
from vlm.data.images import load_image
from vlm.data.sample import Sample
from vlm.data.transforms import mirror_sample
from vlm.data.unreadable import ReplacingUnreadable, collate_reporting_unreadable
from vlm.model.tokenizer import Tokenizer

DATASET_SEED_SALT = 0x5A17  # a draw's seed XOR this seeds the data set's own draws (see TokenizedDataset.sample)


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
    part_sizes: Sequence[int],
    weights: Sequence[float],
    epoch_size: int,
    seed: int,
    epoch: int,
    groups: Sequence[list[list[int]] | None] | None = None,
) -> list[int]:
    """Indices into a `MixtureDataset` for one epoch: part i gets its share `weights[i] / sum(weights)` of the
    `epoch_size` draws, taken without replacement (a fresh permutation each time a part is exhausted), then shuffled.

    groups: for a part whose samples share images (a caption set's captions), its samples grouped by image; a
    group's draws then come one after another, so that they mostly fall in the same batch and the image is decoded
    once for all of them. The groups are shuffled like single draws; a part without groups is drawn as before."""
    if len(part_sizes) != len(weights) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"need one non-negative weight per data set (sizes {list(part_sizes)}, weights {list(weights)})"
        )
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    total_weight = sum(weights)
    if groups is None or all(part_groups is None for part_groups in groups):
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
    units: list[list[int]] = []  # runs of indices kept together: one draw, or the draws of one image
    offset = 0
    for size, weight, part_groups in zip(part_sizes, weights, groups):
        draws = round(epoch_size * weight / total_weight)
        if part_groups is None:
            passes = [torch.randperm(size, generator=generator) for _ in range(-(-draws // size))]
            if passes:
                units.extend([index] for index in (torch.cat(passes)[:draws] + offset).tolist())
        taken = 0
        while part_groups is not None and taken < draws:  # a pass over the part's images, in a fresh order
            for group in torch.randperm(len(part_groups), generator=generator).tolist():
                members = part_groups[group][: draws - taken]
                units.append([offset + member for member in members])
                taken += len(members)
                if taken >= draws:
                    break
        offset += size
    return [index for unit in torch.randperm(len(units), generator=generator).tolist() for index in units[unit]]


class MixtureSampler(Sampler):
    """Yields (index, sample_seed) pairs for this rank, starting `start` draws into the epoch. Ranks take draws in
    turn, so under DDP an image's captions are shared among the ranks (each decodes it once per batch)."""

    def __init__(
        self,
        part_sizes: Sequence[int],
        weights: Sequence[float] | None = None,
        epoch_size: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        groups: Sequence[list[list[int]] | None] | None = None,
    ):
        self.part_sizes = list(part_sizes)
        self.groups = groups  # see mixture_order
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
        order = mixture_order(self.part_sizes, self.weights, self.epoch_size, self.seed, self.epoch, self.groups)
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

    A batch fetched at once (`__getitems__`, which the DataLoader calls) decodes and resizes each image file once,
    however many of its captions the batch holds; only the random shift is drawn per caption. `reduced_decode`
    lets JPEGs decode at the smallest scale that covers the transform's size. Both leave the examples as they
    were (the shift's draws are the same), and can be switched off to measure what they save. `uint8_images`
    leaves the normalisation to the consumer (a quarter of the bytes to collate, share and copy to a GPU).
    """

    def __init__(
        self,
        samples: Dataset,
        tokenizer: Tokenizer,
        transform: Callable[[Image.Image], torch.Tensor],
        max_text_len: int,
        blind: bool = False,
        max_packed_len: int | None = None,
        reduced_decode: bool = True,
        share_decodes: bool = True,
        uint8_images: bool = False,
    ):
        self.samples, self.tokenizer, self.transform = samples, tokenizer, transform
        self.max_text_len, self.blind = max_text_len, blind
        self.max_packed_len = max_packed_len or max_text_len
        self.reduced_decode, self.share_decodes = reduced_decode, share_decodes
        # uint8 images, left for the training loop to normalise (`transform.normalise`) on its device.
        self.uint8_images = uint8_images and hasattr(transform, "normalise")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> EncodedExample:
        index, seed = key if isinstance(key, tuple) else (key, None)
        return self.encode(self.sample(index, seed), seed)

    def __getitems__(self, keys: list[int | tuple[int, int]]) -> list[EncodedExample]:
        resized: dict | None = {} if self.share_decodes else None  # image key -> resized pixels, for this batch
        examples = []
        for key in keys:
            index, seed = key if isinstance(key, tuple) else (key, None)
            examples.append(self.encode(self.sample(index, seed), seed, resized))
        return examples

    def sample(self, index: int, seed: int | None) -> Sample | list[Sample]:
        """The data set's item; a data set that draws (varied renderings) draws from the draw's seed, salted so
        that its stream is not the transform's."""
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.random.default_generator.manual_seed(seed ^ DATASET_SEED_SALT)
            return self.samples[index]

    def encode(self, item: Sample | list[Sample], seed: int | None, resized: dict | None = None) -> EncodedExample:
        """One example; `resized` (image key -> pixels from `transform.resized`) lets samples of one image share
        its decoding."""
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                # The CPU generator alone, which fork_rng restores: torch.manual_seed would also seed every
                # accelerator's generator (left changed afterwards) and add lazy-init bookkeeping to every sample.
                torch.random.default_generator.manual_seed(seed)
            samples = [item[i] for i in torch.randperm(len(item))] if isinstance(item, list) else [item]
            image, mirrored = self.image_tensor(samples[0], resized)
        if mirrored:  # the text must say of the mirrored image what it said of the original
            samples = [mirror_sample(sample) for sample in samples]
            item = samples if isinstance(item, list) else samples[0]
        if self.blind:
            image = torch.zeros(image.shape)  # the normalised zeros, whatever the image's type
        if not isinstance(item, list):
            return encode_example(self.tokenizer, image, item.question, item.target, self.max_text_len, item.given)
        texts = [(sample.question, sample.target) for sample in samples]
        return encode_packed(self.tokenizer, image, texts, self.max_text_len, self.max_packed_len)

    def image_tensor(self, sample: Sample, resized: dict | None) -> tuple[torch.Tensor, bool]:
        """The sample's image as the transform makes it, and whether it was mirrored; `resized` shares an image's
        decoding among its samples where the transform's first step is not random."""
        size = getattr(self.transform, "image_size", None) if self.reduced_decode else None
        name = f"{sample.source} image {sample.image_id}"
        if not hasattr(self.transform, "resized"):
            return self.transform(load_image(sample.image, size, name)), False
        key = image_key(sample) if resized is not None and self.transform.deterministic_resize else None
        if key is None:
            pixels = self.transform.resized(load_image(sample.image, size, name))
        else:
            if key not in resized:
                resized[key] = self.transform.resized(load_image(sample.image, size, name))
            pixels = resized[key]
        pixels, mirrored = self.transform.finish(pixels)
        return (pixels if self.uint8_images else self.transform.normalise(pixels)), mirrored


def image_key(sample: Sample) -> str | tuple | None:
    """What identifies a sample's image file across its captions: the path, or for a file's bytes (a shard's
    record) its source and id; None for an image already in memory (nothing to decode)."""
    if isinstance(sample.image, (str, Path)):
        return str(sample.image)
    if isinstance(sample.image, bytes):
        return (sample.source, sample.image_id)
    return None


def default_num_workers(cores: int | None = None, processes_per_machine: int | None = None) -> int:
    """Loader workers for this process: the cores it may run on, shared among the training processes of the
    machine (torchrun's LOCAL_WORLD_SIZE), less one for the training step itself; at least 1, at most 8 (beyond
    that, memory grows and the GPU rather than decoding sets the pace: see docs/benchmarks.md)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes = processes_per_machine or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, cores // max(1, processes) - 1))


def resolve_num_workers(num_workers: int) -> int:
    """-1 (auto): `default_num_workers()`; 0: load in the training process; N: N worker processes."""
    return default_num_workers() if num_workers < 0 else num_workers


def training_loader(
    dataset: TokenizedDataset,
    sampler: MixtureSampler,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    replace_unreadable: bool = False,
) -> DataLoader:
    """pin_memory: batches in page-locked memory, so that copies to a GPU with non_blocking=True overlap the
    step (CUDA only). Workers persist across epochs rather than being started, and sent the data set, afresh.
    replace_unreadable: a draw whose image cannot be read takes the next readable sample, and each batch lists
    the failed files under `UNREADABLE_KEY` (vlm/data/unreadable.py); otherwise such a draw raises ImageLoadError."""
    workers = resolve_num_workers(num_workers)
    collate_fn = collate_reporting_unreadable if replace_unreadable else collate
    return DataLoader(
        ReplacingUnreadable(dataset) if replace_unreadable else dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=partial(collate_fn, pad_id=dataset.tokenizer.pad_id),
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        drop_last=True,
    )
