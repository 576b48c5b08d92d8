"""Runtime choices every part needs: which device, which autocast dtype, and the autocast context itself.

One place for them, so that training, inference, post-training and the benchmarks pick the device and the
precision the same way.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

DTYPE_CHOICES = ("auto", "bfloat16", "float32")


class DeviceError(ValueError):
    """A device name the user gave that does not exist here."""


def resolve_device(choice: str | torch.device) -> torch.device:
    """auto (a GPU if there is one), cpu, cuda or cuda:N that exists."""
    if isinstance(choice, torch.device):
        return choice
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise DeviceError(f"--device {choice!r} is not a device (cpu, cuda, cuda:N)") from None
    count = torch.cuda.device_count()
    if device.type == "cuda" and (device.index or 0) >= count:
        raise DeviceError(f"--device {choice}: no such CUDA GPU ({count} available)")
    return device


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has bf16 matrix instructions (AVX-512 BF16 or AMX). Elsewhere bf16 is emulated and
    slower than float32 (docs/benchmarks.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, choice: str) -> torch.dtype:
    """choice: "float32", "bfloat16", or "auto" (bfloat16 where the hardware runs it fast, else float32)."""
    if choice == "float32":
        return torch.float32
    if choice == "bfloat16":
        return torch.bfloat16
    if choice != "auto":
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {choice!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast to `dtype` on `device`; float32 (or None) is no autocast at all."""
    if dtype in (None, torch.float32):
        return nullcontext()
    device_type = device if isinstance(device, str) else device.type
    return torch.autocast(device_type, dtype=dtype)
