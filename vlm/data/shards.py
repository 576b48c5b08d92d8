"""Caption sets as WebDataset tar shards, for sets larger than one disk or machine: writing them, reading them back
as a data set (validation, tests), and streaming them in training, each process its own shards, resumable.

A shard holds one record per image: `KEY.jpg` (or .png ...: the image file's bytes as they were) and `KEY.json`
({"image_id", "captions", "source"}). `shards.json` in the folder lists each split's shards with their image and
caption counts, which is what lets a stream skip to any position without reading what it skips.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from vlm.data.checks import MODES, check_choice
from vlm.data.errors import AnnotationError
from vlm.data.sample import Sample

INDEX_FILE = "shards.json"


# ---------------------------------------------------------------------------------------------------------------
# Writing


def image_record(sample: Sample) -> tuple[str, bytes]:
    """(extension, bytes) of a sample's image: a file's own bytes (no re-encoding), an image in memory as PNG."""
    if isinstance(sample.image, (str, Path)):
        path = Path(sample.image)
        return (path.suffix.lstrip(".").lower() or "jpg"), path.read_bytes()
    if isinstance(sample.image, bytes):
        return "jpg", sample.image
    buffer = io.BytesIO()
    sample.image.save(buffer, format="PNG")
    return "png", buffer.getvalue()


def write_shards(
    dataset: Dataset, out_dir: str | Path, split: str, shard_size: int, progress: Callable[[int], Any] | None = None
) -> dict[str, Any]:
    """Write `dataset` (a caption set in eval mode: one Sample per image, every caption in `references`) as
    `{split}-000000.tar`, ... of `shard_size` images each, and its entry in `shards.json`; returns that entry."""
    from webdataset import TarWriter  # the `shards` extra; nothing else needs it

    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1 image, got {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    source = ""
    writer = None
    with open(out / f"{split}-captions.txt", "w") as texts:
        for index in range(len(dataset)):
            sample: Sample = dataset[index]
            if sample.question is not None:
                raise ValueError(f"shards hold caption sets; {sample.source} has questions (sample {index})")
            if index % shard_size == 0:
                if writer is not None:
                    writer.close()
                shards.append({"url": f"{split}-{len(shards):06d}.tar", "images": 0, "captions": 0})
                writer = TarWriter(str(out / shards[-1]["url"]), encoder=False, mtime=0.0)
            extension, image_bytes = image_record(sample)
            captions = list(sample.references) or [sample.target]
            meta = {"image_id": sample.image_id, "captions": captions, "source": sample.source}
            writer.write({"__key__": f"{index:09d}", extension: image_bytes, "json": json.dumps(meta).encode()})
            texts.writelines(caption + "\n" for caption in captions)
            shards[-1]["images"] += 1
            shards[-1]["captions"] += len(captions)
            source = source or sample.source
            if progress is not None:
                progress(1)
    if writer is not None:
        writer.close()
    index_path = out / INDEX_FILE
    index = json.loads(index_path.read_text()) if index_path.exists() else {"splits": {}}
    index["splits"][split] = {"source": source, "shards": shards}
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    return index["splits"][split]


# ---------------------------------------------------------------------------------------------------------------
# Reading


def read_index(directory: str | Path, split: str) -> dict[str, Any]:
    path = Path(directory) / INDEX_FILE
    if not path.is_file():
        raise AnnotationError(f"{path}: no shard index (write the shards with vlm-make-shards)")
    try:
        splits = json.loads(path.read_text())["splits"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise AnnotationError(f"{path}: not a shard index ({error})") from None
    if split not in splits or not splits[split]["shards"]:
        raise AnnotationError(f"{path}: no {split!r} shards (there are: {', '.join(splits) or 'none'})")
    return splits[split]


def read_shard(url: str) -> list[tuple[str, bytes, dict[str, Any]]]:
    """(key, image bytes, metadata) of every record of one shard, in order. `url`: a path, or any URL
    webdataset opens (http(s)://, pipe:...)."""
    from webdataset.gopen import gopen
    from webdataset.tariterators import group_by_keys, tar_file_expander

    records = []
    with closing(gopen(url)) as stream:
        for record in group_by_keys(tar_file_expander([{"url": url, "stream": stream}])):
            image = [value for name, value in record.items() if not name.startswith("__") and name != "json"]
            if len(image) != 1 or "json" not in record:
                raise AnnotationError(f"{url}: record {record['__key__']!r} should hold one image and one .json")
            records.append((record["__key__"], image[0], json.loads(record["json"])))
    return records


def shard_url(directory: str | Path, url: str) -> str:
    return url if "://" in url or url.startswith("pipe:") else os.path.join(directory, url)


def record_samples(image: bytes, meta: dict[str, Any]) -> list[Sample]:
    """One Sample per caption of a record; the image stays the file's bytes until a loader decodes it."""
    captions = meta["captions"]
    return [
        Sample(image=image, target=c, references=captions, image_id=meta["image_id"], source=meta["source"])
        for c in captions
    ]


class ShardCaptions(Dataset):
    """A split of a shard folder as an ordinary data set, read shard by shard as it is indexed (validation reads
    its first shard only). mode "train": a Sample per caption; "eval": one per image, its captions as references."""

    def __init__(self, directory: str | Path, split: str, mode: str = "eval"):
        check_choice("mode", mode, MODES)
        self.directory, self.mode = directory, mode
        entry = read_index(directory, split)
        self.urls = [shard_url(directory, shard["url"]) for shard in entry["shards"]]
        counts = [shard["captions" if mode == "train" else "images"] for shard in entry["shards"]]
        self.offsets = [sum(counts[:i]) for i in range(len(counts) + 1)]
        self.split, self.source = split, entry["source"]
        self._cached: tuple[int, list[Sample]] | None = None

    def __len__(self) -> int:
        return self.offsets[-1]

    def shard_samples(self, shard: int) -> list[Sample]:
        if self._cached is None or self._cached[0] != shard:
            samples = []
            for _, image, meta in read_shard(self.urls[shard]):
                per_caption = record_samples(image, meta)
                samples.extend(per_caption if self.mode == "train" else per_caption[:1])
            self._cached = (shard, samples)
        return self._cached[1]

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = next(s for s in range(len(self.urls)) if index < self.offsets[s + 1])
        return self.shard_samples(shard)[index - self.offsets[shard]]

    def texts(self) -> list[str]:
        return (Path(self.directory) / f"{self.split}-captions.txt").read_text().splitlines()


# ---------------------------------------------------------------------------------------------------------------
# Streaming


def draw_seed(seed: int, epoch: int, position: int, rank: int, world_size: int) -> int:
    """The augmentation seed of a process's `position`-th draw of an epoch (as `MixtureSampler` gives its draws)."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + position * world_size + rank) % 2**31


class ShardStream(IterableDataset):
    """A split of a shard folder streamed for training, a Sample (with its draw seed) per caption.

    Each epoch the shards are shuffled by (seed, epoch); process `rank` of `world_size` takes every world_size-th
    of them, and its loader worker w of n every n-th of those: each reads only its own files, start to end.
    A shard's images come in an order shuffled by (seed, epoch, shard), each image's captions one after another
    (decoded once for all of them). A worker yields whole batches; the DataLoader takes them from the workers in
    turn, so the process's order of batches is known in advance (`batch_order`), and every process is given the
    same number of batches (the fewest any of them can make), which keeps DDP in step.

    Resuming at draw `position` of the epoch (a whole number of batches) is exact: each worker skips the batches
    the order says were taken, counting captions from the index without decoding, and the workers take up their
    turns where the interrupted run left them. The order depends on the number of processes and of loader
    workers, so a resumed run must use the same counts (the training loop keeps the worker count it started with).
    """

    def __init__(self, directory: str | Path, split: str = "train"):
        self.directory = directory
        entry = read_index(directory, split)
        self.urls = [shard_url(directory, shard["url"]) for shard in entry["shards"]]
        self.captions = [shard["captions"] for shard in entry["shards"]]
        self.images = [shard["images"] for shard in entry["shards"]]
        self.split, self.source = split, entry["source"]
        self.batch_size, self.seed, self.rank, self.world_size, self.workers = 1, 0, 0, 1, 1
        self.epoch, self.start = 0, 0
        self.encode: Callable[[Sample, int, dict], Any] | None = None

    def configure(
        self,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        encode: Callable[[Sample, int, dict], Any] | None = None,
    ) -> None:
        """encode(sample, seed, resized): what to yield for a draw (a training example); None yields
        (sample, seed) pairs. `workers`: the DataLoader's num_workers (0 and 1 both read as one stream)."""
        if len(self.urls) < world_size:
            raise AnnotationError(
                f"{self.directory}: {len(self.urls)} {self.split} shards for {world_size} processes: every process "
                "needs a shard of its own (write more, smaller shards: --shard-size)"
            )
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.workers, self.encode = max(1, workers), encode

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if start % self.batch_size:
            raise ValueError(
                f"a shard stream resumes at a whole batch; draw {start} is not a multiple of {self.batch_size}"
            )
        self.epoch, self.start = epoch, start

    def image_count(self) -> int:
        return sum(self.images)

    def texts(self) -> list[str]:
        return (Path(self.directory) / f"{self.split}-captions.txt").read_text().splitlines()

    def __len__(self) -> int:
        """Draws this process takes in the current epoch."""
        return len(self.batch_order()) * self.batch_size

    def worker_shards(self, rank: int) -> list[list[int]]:
        """The shards each of process `rank`'s workers reads this epoch, in reading order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.urls), generator=generator).tolist()
        mine = order[rank :: self.world_size]
        return [mine[w :: self.workers] for w in range(self.workers)]

    def batch_order(self) -> list[tuple[int, int]]:
        """(worker, its batch number) of every batch this process takes in the epoch: the workers in turn, one
        that has run out skipped (as the DataLoader does), cut to the number of batches every process can make."""

        def batches(shards: list[int]) -> int:
            return sum(self.captions[s] for s in shards) // self.batch_size

        per_rank = [[batches(shards) for shards in self.worker_shards(r)] for r in range(self.world_size)]
        length = min(sum(counts) for counts in per_rank)
        order = []
        for turn in range(max(per_rank[self.rank], default=0)):
            order.extend((w, turn) for w, count in enumerate(per_rank[self.rank]) if turn < count)
        return order[:length]

    def shard_rows(self, shard: int) -> Iterator[Sample]:
        records = read_shard(self.urls[shard])
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_033 + shard)
        for r in torch.randperm(len(records), generator=generator).tolist():
            yield from record_samples(*records[r][1:])

    def rows_after(self, shards: list[int], skip: int) -> Iterator[Sample]:
        """The captions of `shards` in stream order after the first `skip`: whole shards skipped from the index's
        counts, unread; the rest of the skip read but not decoded."""
        for shard in shards:
            if skip >= self.captions[shard]:
                skip -= self.captions[shard]
                continue
            for sample in self.shard_rows(shard):
                if skip:
                    skip -= 1
                    continue
                yield sample

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker_id = info.id if info is not None else 0
        if (info.num_workers if info is not None else 1) != self.workers:
            raise RuntimeError("ShardStream.configure's workers must be the DataLoader's num_workers")
        order = self.batch_order()
        taken = self.start // self.batch_size
        if taken >= len(order):
            return
        # The DataLoader starts its turns at worker 0; the interrupted run's next turn was that of the worker of
        # batch `taken`: worker j plays the part of the worker j turns after it.
        role = (worker_id + order[taken][0]) % self.workers
        mine = [(q, b) for q, (w, b) in enumerate(order) if w == role]
        done = sum(1 for w, _ in order[:taken] if w == role)
        todo = mine[done:]
        if not todo:
            return
        # A worker's batch b is captions b*B .. (b+1)*B - 1 of its stream: skip those of the batches taken.
        rows = self.rows_after(self.worker_shards(self.rank)[role], todo[0][1] * self.batch_size)
        positions = iter([q * self.batch_size + i for q, _ in todo for i in range(self.batch_size)])
        resized: dict = {}
        previous_key = None
        for sample in rows:
            position = next(positions, None)
            if position is None:
                return
            seed = draw_seed(self.seed, self.epoch, position, self.rank, self.world_size)
            if self.encode is None:
                yield sample, seed
                continue
            key = (sample.source, sample.image_id)
            if key != previous_key:  # a new image: the previous one's pixels are not needed again
                resized.clear()
                previous_key = key
            yield self.encode(sample, seed, resized)
