"""Run by test_unreadable.py under torchrun: two gloo processes find different unreadable files; each writes the
list and counts it ends with, and whether the share check stopped it."""

import json
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from vlm.data.errors import UnreadableImagesError
from vlm.training.image_failures import ImageFailures

out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
dist.init_process_group("gloo")
failures = ImageFailures(image_count=10, max_share=0.3, device=torch.device("cpu"), distributed=True, is_main=rank == 0)
with warnings.catch_warnings(record=True) as warned:
    warnings.simplefilter("always")
    failures.add(["a.jpg: empty file (0 bytes)"] if rank == 0 else ["a.jpg: empty file (0 bytes)", "b.jpg: truncated"])
    failures.sync()  # 2 distinct files of 10: under the share
    first = {"messages": list(failures.messages), "reads": failures.reads, "warnings": [str(w.message) for w in warned]}
    failures.add([] if rank == 0 else ["c.jpg: not an image file"])
    failures.sync()
    failures.add(["d.jpg: empty file (0 bytes)"] if rank == 0 else [])
    try:
        failures.sync()  # 4 of 10: over 30%, on both ranks at once
        stopped = False
    except UnreadableImagesError:
        stopped = True
(out / f"rank{rank}.json").write_text(json.dumps({**first, "stopped": stopped, "total": len(failures.messages)}))
if dist.is_initialized():  # the stop leaves the process group itself
    dist.barrier()
    dist.destroy_process_group()
