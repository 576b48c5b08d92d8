"""PIL image -> normalised tensor at the encoder's input size, for evaluation and for training.

Training augmentation must keep the text true: captions and answers name colours and say "left of", so there is
no colour jitter and no horizontal flip (unless a data set's text is known to be flip-safe); only a small random
shift, which leaves colours, shapes, sizes and relations as they were.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from vlm.model.config import VisionConfig

# Images are mapped to [-1, 1]: our encoders start from random weights, so ImageNet statistics buy nothing; a
# pretrained encoder has its own, in its config (`encoder_transform`).
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


class ImageTransform:
    """Evaluation: the centre square, resized. Training: the same view shifted by up to 6% of the side, the
    uncovered border filled by repeating the edge pixels (so no new edge or object appears).

    The same images, and the same random draws, as torchvision's Compose of ToImage, Resize, Pad(mode="edge"),
    RandomCrop, [RandomHorizontalFlip,] ToDtype and Normalize (tests/test_transforms.py checks it), written as a few
    array operations, which take a fraction of that chain's time: the data loader's worker shares the CPU's few
    cores with the training step.
    """

    def __init__(
        self,
        image_size: int,
        train: bool = False,
        allow_flip: bool = False,
        mean: tuple[float, float, float] = IMAGE_MEAN,
        std: tuple[float, float, float] = IMAGE_STD,
        interpolation: str = "bilinear",
    ):
        self.image_size, self.train, self.allow_flip = image_size, train, allow_flip
        self.interpolation = F.InterpolationMode(interpolation)
        self.shift = max(1, round(0.06 * image_size)) if train else 0
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalise(self.finish(self.resized(image)))

    def resized(self, image: Image.Image) -> torch.Tensor:
        """The deterministic part: the centre square at the output size, (3, size, size) uint8. A data loader may
        keep it for every caption of the image and call `finish` on each (the random shift differs per call)."""
        size = self.image_size
        pixels = torch.from_numpy(np.array(center_square(image).convert("RGB"))).permute(2, 0, 1)  # (3, H, W)
        if pixels.shape[1:] != (size, size):
            pixels = F.resize(pixels, [size, size], self.interpolation, antialias=True)
        return pixels.contiguous()

    def finish(self, pixels: torch.Tensor) -> torch.Tensor:
        """(3, size, size) uint8 from `resized` -> the view to train on, still uint8: shifted if training."""
        if not self.train:
            return pixels
        size = self.image_size
        # The crop of the edge-padded image at (top, left) reads rows/columns offset - shift + i, clamped to the
        # image: the padding is never built.
        top, left = (int(torch.randint(0, 2 * self.shift + 1, size=())) for _ in range(2))
        positions = torch.arange(size) - self.shift
        pixels = pixels.index_select(1, (positions + top).clamp(0, size - 1))
        pixels = pixels.index_select(2, (positions + left).clamp(0, size - 1))
        if self.allow_flip and torch.rand(1) < 0.5:
            pixels = pixels.flip(2)
        return pixels

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) -> float32 in the encoder's range, on the pixels' device. Training normalises
        whole batches on the device it trains on: a quarter of the bytes through the loader and the copy."""
        mean, std = self.mean.to(pixels.device), self.std.to(pixels.device)
        return (pixels.float().mul_(1.0 / 255) - mean) / std


def build_transform(
    image_size: int,
    train: bool = False,
    allow_flip: bool = False,
    mean: tuple[float, float, float] = IMAGE_MEAN,
    std: tuple[float, float, float] = IMAGE_STD,
    interpolation: str = "bilinear",
) -> ImageTransform:
    return ImageTransform(image_size, train, allow_flip, mean, std, interpolation)


def encoder_transform(vision: VisionConfig, train: bool = False) -> ImageTransform:
    """The transform for a model's encoder: its image size, and the normalization and resize filter its weights
    learnt with (a pretrained encoder's, from its config), the same in training, evaluation and inference."""
    return build_transform(
        vision.image_size, train, mean=vision.mean, std=vision.std, interpolation=vision.interpolation
    )


def center_square(image: Image.Image) -> Image.Image:
    """The largest centred square. Cropping BEFORE resizing (rather than resizing the shorter side first) keeps a
    1x10000 strip from becoming a 64x640000 tensor on the way; the result is the same view."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))
