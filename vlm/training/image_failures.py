"""The training images that could not be read: each named once in a warning, counted over every DDP rank, and the
run stopped when their share of the training set's images passes `max_unreadable_share`.

The files come from the batches (see vlm/data/unreadable.py), so counts made in DataLoader workers reach the main
process with the data; ranks exchange the new ones at each optimizer step, so all keep the same list and stop
together.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

from vlm.data.errors import UnreadableImagesError


class ImageFailures:
    """`messages` (file and reason, one per distinct unreadable file) and `reads` (failed reads, each replaced by
    another sample) are the run's totals over all ranks; a resumed run starts from its checkpoint's. The list of
    `messages` given is appended to in place (the training state's, saved with each checkpoint)."""

    def __init__(
        self,
        image_count: int,
        max_share: float,
        device: torch.device,
        distributed: bool = False,
        is_main: bool = True,
        messages: list[str] | None = None,
        reads: int = 0,
    ):
        self.image_count, self.max_share = image_count, max_share
        self.device, self.distributed, self.is_main = device, distributed, is_main
        self.messages = messages if messages is not None else []
        self.reads = reads
        self._known = set(self.messages)
        self._pending: list[str] = []  # this rank's failed reads since the last `sync`

    def add(self, failed: list[str]) -> None:
        """One micro-batch's failed reads on this rank."""
        self._pending.extend(failed)

    def sync(self) -> None:
        """At each optimizer step, on every rank: gather the new files, warn once for each, check the share."""
        new = [m for m in dict.fromkeys(self._pending) if m not in self._known]
        reads = len(self._pending)
        self._pending = []
        if self.distributed:
            counts = torch.tensor([len(new), reads], device=self.device)
            dist.all_reduce(counts)
            new_anywhere, reads = (int(c) for c in counts.tolist())
            if new_anywhere:  # rare: the names travel only then
                gathered: list[list[str]] = [[] for _ in range(dist.get_world_size())]
                dist.all_gather_object(gathered, new)
                new = [m for m in dict.fromkeys(m for part in gathered for m in part) if m not in self._known]
        self.reads += reads
        for message in new:
            self._known.add(message)
            self.messages.append(message)
            if self.is_main:
                warnings.warn(
                    f"unreadable training image, replaced by the next readable sample: {message}", stacklevel=2
                )
        if len(self.messages) > self.max_share * self.image_count:
            if self.distributed:  # every rank stops here, at the same step: leave the group as a finished run does
                dist.barrier()
                dist.destroy_process_group()
            raise UnreadableImagesError(
                f"{len(self.messages)} of the {self.image_count} training images ({self.share:.1%}) could not be read, "
                f"more than --max-unreadable-share {self.max_share:g} allows; list them all with vlm-check-data and "
                "remove or fix them, or raise the share"
            )

    @property
    def share(self) -> float:
        return len(self.messages) / max(self.image_count, 1)

    def record(self) -> dict[str, int]:
        """For metrics.jsonl."""
        return {"unreadable_images": len(self.messages), "unreadable_reads": self.reads}
