"""The one image loader: any file PIL can read becomes an upright RGB image, or an error that names the file.

EXIF orientation is applied (phone photos are stored sideways); every mode becomes RGB (transparency is composited
over white, 16-bit and float images are rescaled to 8 bits); images over `MAX_IMAGE_PIXELS` are refused from their
header, before any pixel is decoded, so a decompression bomb costs nothing. Given the size the caller needs, a JPEG
is decoded at a reduced scale (1/2, 1/4 or 1/8, JPEG's own DCT scaling) that still covers it: a quarter or less of
the work for a photo shrunk to the encoder's input.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_PIXELS = 64_000_000  # ~8000 x 8000; COCO's largest images are well under 1 Mpx
_PIL_LIMIT_LOCK = threading.Lock()  # PIL's limit is a global we lift while opening: one thread at a time


class ImageLoadError(ValueError):
    """An image that cannot be used; the message names the file and what was wrong."""


def load_image(
    source: str | Path | Image.Image | bytes, min_size: int | None = None, name: str = "<image bytes>"
) -> Image.Image:
    """source: a file, an image in memory, or a file's contents (bytes, e.g. from a tar shard; `name` then stands
    for the file in errors). min_size: the caller needs no more than a min_size x min_size square of the image (its
    centre square resized); a JPEG may then be decoded smaller, its shorter side never below min_size."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, bytes):
        path: Path | str = name
        if not source:
            raise ImageLoadError(f"{name}: empty file (0 bytes)")
        opened: Path | io.BytesIO = io.BytesIO(source)
    else:
        path = opened = Path(source)
        if path.is_dir():
            raise ImageLoadError(f"{path}: is a folder, not an image file")
        if not path.is_file():
            raise ImageLoadError(f"{path}: image file not found")
        if path.stat().st_size == 0:
            raise ImageLoadError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings(), _PIL_LIMIT_LOCK:
            # We enforce our own pixel limit below; PIL's warning (and its error at 2x) would fire first otherwise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(opened)
            finally:
                Image.MAX_IMAGE_PIXELS = previous_limit
        with image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageLoadError(
                    f"{path}: {width}x{height} pixels is over the limit of {MAX_IMAGE_PIXELS:,} "
                    "(refused before decoding, as a possible decompression bomb)"
                )
            if min_size is not None and image.format == "JPEG":
                # draft() picks the largest DCT scale whose result still covers the requested box; no-op otherwise.
                image.draft("RGB", (min_size, min_size))
            image.load()
            return to_rgb(image)
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file (PIL cannot identify its format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageLoadError):
            raise
        raise ImageLoadError(f"{path}: corrupt or truncated image ({error})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB, whatever the mode."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit depth: rescale the actual range to 0..255 rather than clipping (16-bit PNGs, TIFFs).
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image
