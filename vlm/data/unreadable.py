"""Training past image files that cannot be read (empty, truncated, not an image): such a draw is replaced by the
next sample whose image reads, and the batch lists the files that failed, so that the training loop, in the main
process whatever the DataLoader's workers, can name each once, count them and stop when too many fail.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from torch.utils.data import Dataset, IterableDataset, Subset

from vlm.data.batch import EncodedExample, collate
from vlm.data.images import ImageLoadError, load_image
from vlm.data.packing import sample_image_ids

UNREADABLE_KEY = "unreadable"  # the batch's list of messages (file and reason), one per failed read
MAX_TRIES = 64  # samples tried in a row for one draw before giving up: a run of bad files this long is no accident


class ReplacingUnreadable(Dataset):
    """Wraps a dataset of EncodedExamples (`TokenizedDataset`, keys an index or an (index, seed) pair): item ->
    (example, messages of the reads that failed before it). A draw whose image cannot be read takes the next
    index's sample instead, with the draw's seed, so the replacement is the same in every worker and on resume."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[EncodedExample, list[str]]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        failures: list[str] = []
        for attempt in range(MAX_TRIES):
            candidate = (index + attempt) % len(self.dataset)
            try:
                return self.dataset[candidate if seed is None else (candidate, seed)], failures
            except ImageLoadError as error:
                failures.append(str(error))
        raise ImageLoadError(
            f"{MAX_TRIES} samples in a row from #{index} have no readable image (the first: {failures[0]}); "
            "check the data set with vlm-check-data"
        )

    def __getitems__(self, keys: list) -> list[tuple[EncodedExample, list[str]]]:
        """A whole batch at once where the data set can (one decode per image); a batch with an unreadable image
        is made again a draw at a time, each failed draw replaced as above."""
        if hasattr(self.dataset, "__getitems__"):
            try:
                return [(example, []) for example in self.dataset.__getitems__(keys)]
            except ImageLoadError:
                pass
        return [self[key] for key in keys]


def collate_reporting_unreadable(items: list[tuple[EncodedExample, list[str]]], pad_id: int) -> dict:
    """`collate` of the examples, plus batch[UNREADABLE_KEY]: the messages of every failed read (a list of
    strings, which the loop takes out before moving the batch to its device)."""
    batch = collate([example for example, _ in items], pad_id)
    batch[UNREADABLE_KEY] = [message for _, failures in items for message in failures]
    return batch


def count_images(parts: list[Dataset]) -> int:
    """Distinct images of the training sets (by image id, without loading any): the share of unreadable images is
    counted against it."""
    # A shard stream's images are counted from its index (its records are its images, one each).
    return sum(
        part.image_count() if isinstance(part, IterableDataset) else len(set(sample_image_ids(part))) for part in parts
    )


def readable(dataset: Dataset, name: str = "") -> Dataset:
    """The samples of a small set (validation) whose image file reads, with a warning that names those left out:
    validation runs in the main process between steps, where one bad file would end the run."""
    if len(dataset) == 0 or not isinstance(dataset[0].image, (str, Path)):
        return dataset  # rendered or in-memory images (one kind per data set): nothing to read
    keep, dropped = [], []
    for index in range(len(dataset)):
        image = dataset[index].image
        if isinstance(image, (str, Path)):
            try:
                load_image(image)
            except ImageLoadError as error:
                dropped.append(str(error))
                continue
        keep.append(index)
    if not dropped:
        return dataset
    warnings.warn(
        f"{len(dropped)} of {len(dataset)} validation samples{' of ' + name if name else ''} left out, their image "
        f"unreadable: {'; '.join(dropped[:3])}",
        stacklevel=2,
    )
    return Subset(dataset, keep)


def failed_reads(batch: dict) -> list[str]:
    """Take the unreadable files' messages out of a batch (none in a batch made by plain `collate`)."""
    return batch.pop(UNREADABLE_KEY, [])


def image_files(dataset: Dataset) -> list[str]:
    """The distinct image files a data set reads, without loading them (none for images drawn in memory)."""
    if hasattr(dataset, "image_paths"):  # COCO, Karpathy, VQAv2
        files = list(dataset.image_paths)
    elif isinstance(getattr(dataset, "paths", None), dict):  # easy-VQA: image id -> file
        files = list(dataset.paths.values())
    else:
        files = [str(s.image) for s in (dataset[i] for i in range(len(dataset))) if isinstance(s.image, (str, Path))]
    return sorted({str(path) for path in files})


def read_error(path: str) -> str | None:
    """Why the image at `path` cannot be used (the loader's message), or None if it loads."""
    try:
        load_image(path)
    except ImageLoadError as error:
        return str(error)
    return None


def find_unreadable(paths: list[str], workers: int) -> list[tuple[str, str]]:
    """(file, the loader's message) for every file of `paths` that cannot be used, decoding each once, in
    `workers` processes (decoding is CPU-bound: threads would share one core)."""
    from tqdm import tqdm

    if workers <= 1:
        errors = [read_error(path) for path in tqdm(paths, desc="checking", unit="image")]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            chunk = max(1, min(256, len(paths) // (8 * workers)))
            results = pool.map(read_error, paths, chunksize=chunk)
            errors = list(tqdm(results, total=len(paths), desc="checking", unit="image"))
    return [(path, error) for path, error in zip(paths, errors) if error is not None]
