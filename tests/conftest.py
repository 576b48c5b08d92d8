"""Shared fixtures. `odd_images`: a folder of small image files in every mode a user's data set may hold, plus the
broken ones (truncated, empty, text, decompression bomb); used by the image loader and the data set tests.
`offline_cache`: an empty Hugging Face Hub cache, offline; used by the Hub and the pretrained-encoder tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RED, BLUE = (230, 20, 20), (20, 20, 230)


def write_bomb_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels but holds almost no data: costs nothing unless decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )


def make_odd_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}

    def save(name: str, image: Image.Image, **options) -> None:
        paths[name] = folder / name
        image.save(paths[name], **options)

    save("rgb.jpg", Image.new("RGB", (48, 32), RED), quality=95)
    save("gray.png", Image.new("L", (16, 16), 128))
    save("cmyk.jpg", Image.new("RGB", (16, 16), RED).convert("CMYK"), quality=95)
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # fully transparent ...
    rgba.paste((*BLUE, 255), (8, 0, 16, 16))  # ... except the right half, opaque blue
    save("rgba.png", rgba)
    gray_alpha = Image.new("LA", (8, 8), (0, 0))  # transparent black ...
    gray_alpha.paste((90, 255), (4, 0, 8, 8))  # ... except the right half, opaque grey
    save("gray_alpha.png", gray_alpha)
    save("palette.png", Image.new("RGB", (16, 16), BLUE).quantize(4))
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, *RED] + [0] * (254 * 3))
    palette.paste(1, (4, 0, 8, 8))
    save("palette_transparent.png", palette, transparency=0)  # left half transparent, right half red
    ramp = (np.arange(20 * 10, dtype=np.uint32).reshape(10, 20) * 300).astype(np.uint16)
    save("gray16.png", Image.fromarray(ramp))  # mode I;16, values 0 .. 59700
    save("tiny.png", Image.new("RGB", (1, 1), RED))
    # Stored 40 wide x 20 tall, left half red; EXIF orientation 6 says "rotate 90 degrees clockwise to view".
    sideways = Image.new("RGB", (40, 20), BLUE)
    sideways.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif_rotated.jpg", sideways, exif=exif, quality=95)

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "whole.jpg").unlink()
    paths["truncated.jpg"] = folder / "truncated.jpg"
    paths["truncated.jpg"].write_bytes(data[: len(data) // 2])
    paths["empty.jpg"] = folder / "empty.jpg"
    paths["empty.jpg"].write_bytes(b"")
    paths["text.jpg"] = folder / "text.jpg"
    paths["text.jpg"].write_text("this is not an image\n")
    paths["bomb.png"] = folder / "bomb.png"
    write_bomb_png(paths["bomb.png"], 100_000, 100_000)
    return paths


@pytest.fixture
def odd_images(tmp_path: Path) -> dict[str, Path]:
    return make_odd_images(tmp_path / "odd_images")


@pytest.fixture()
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache in tmp_path, offline: set in the environment (for subprocesses) and in the constants
    huggingface_hub read from it at import."""
    huggingface_hub = pytest.importorskip("huggingface_hub")  # the `hub` extra
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache
