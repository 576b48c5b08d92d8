"""PIL image -> normalised tensor at the encoder's input size, for evaluation and for training, with the choices of
`Preprocessing`: how a non-square image becomes a square (centre crop or padding) and which training augmentations
run. Each kind of data has its own defaults (`PREPROCESSING_DEFAULTS`): augmentation must keep the text true.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import ColorJitter
from torchvision.transforms.v2 import functional as F

from vlm.data.sample import Sample
from vlm.model.config import VisionConfig

# Images are mapped to [-1, 1]: our encoders start from random weights, so ImageNet statistics buy nothing; a
# pretrained encoder has its own, in its config (`encoder_transform`).
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)

RESIZE_MODES = ("crop", "pad")


@dataclass
class Preprocessing:
    """How images are prepared; None: the data kind's default (`PREPROCESSING_DEFAULTS`). One flag per field."""

    resize: str | None = field(
        default=None,
        metadata={
            "choices": RESIZE_MODES,
            "help": "a non-square image becomes the square input by its centre square (crop) or whole, its aspect "
            "kept, with padding (pad); saved with the model, so inference does the same",
        },
    )
    crop_scale: float | None = field(
        default=None,
        metadata={"help": "training: random resized crops keeping at least this share of the image's area (1: off)"},
    )
    shift: float | None = field(
        default=None, metadata={"help": "training: random shift by up to this share of the side, edges repeated"}
    )
    jitter: float | None = field(
        default=None,
        metadata={"help": "training: brightness, contrast and saturation scaled by up to 1 +- this (hue kept; 0: off)"},
    )
    flip: bool | None = field(
        default=None,
        metadata={"help": "training: mirror half the images, swapping 'left' and 'right' in their text"},
    )

    def validate(self) -> None:
        if self.resize is not None and self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.crop_scale is not None and not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        for name in ("shift", "jitter"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")

    def filled(self, defaults: Preprocessing) -> Preprocessing:
        """Each unset field from `defaults`."""
        return Preprocessing(
            **{
                f.name: getattr(defaults, f.name) if getattr(self, f.name) is None else getattr(self, f.name)
                for f in dataclasses.fields(self)
            }
        )


# built-in: the built-in scenes and easy-VQA. Their captions and answers name colours and sizes, and the scenes fill
# the square: the centre square, a small shift, no jitter. No flips: a scene's caption lists its objects left to
# right and its reasoned answers give x positions ("red circle 6 2"), which a mirror makes false whatever words are
# swapped.
# photos: COCO, Karpathy, VQAv2 and caption folders. A photo is kept whole (padding, not a quarter of a 4:3
# photo cut off); crops keep most of it, so the objects a caption names stay in view; colours change a little, never
# their hue ("a red bus" stays red). Chosen as the usual photo augmentations, not measured here.
PREPROCESSING_DEFAULTS = {
    "built-in": Preprocessing(resize="crop", crop_scale=1.0, shift=0.06, jitter=0.0, flip=False),
    "photos": Preprocessing(resize="pad", crop_scale=0.7, shift=0.0, jitter=0.1, flip=True),
}


class ImageTransform:
    """Evaluation: the image made square (`resize`), resized. Training: a random resized crop first, then the
    square view shifted by up to `shift` of the side (the uncovered border filled by repeating the edge pixels, so
    no new edge or object appears), colour jitter and a horizontal flip, each as `preprocessing` says.

    In three steps, so that a data loader can share the first among an image's captions and leave the last to the
    training device: `resized` (the square at the output size, uint8; random only with resized crops, see
    `deterministic_resize`), `finish` (shift, flip, jitter; still uint8) and `normalise`.

    The built-in defaults give the same images, and the same random draws, as torchvision's Compose of ToImage,
    Resize, Pad(mode="edge"), RandomCrop, [RandomHorizontalFlip,] ToDtype and Normalize (tests/test_transforms.py
    checks it), written as a few tensor operations, which take a fraction of that chain's time: the data loader's
    worker shares the CPU's few cores with the training step.
    """

    def __init__(
        self,
        image_size: int,
        train: bool = False,
        preprocessing: Preprocessing | None = None,
        mean: tuple[float, float, float] = IMAGE_MEAN,
        std: tuple[float, float, float] = IMAGE_STD,
        interpolation: str = "bilinear",
    ):
        settings = (preprocessing or Preprocessing()).filled(PREPROCESSING_DEFAULTS["built-in"])
        settings.validate()
        self.image_size, self.train, self.resize = image_size, train, settings.resize
        self.interpolation = F.InterpolationMode(interpolation)
        self.crop_scale = settings.crop_scale if train else 1.0
        self.shift = max(1, round(settings.shift * image_size)) if train and settings.shift else 0
        self.jitter = (
            ColorJitter(settings.jitter, settings.jitter, settings.jitter) if train and settings.jitter else None
        )
        self.flip = train and settings.flip
        self.pad_colour = [round(m * 255) for m in mean]  # padding is the mean colour: zeros after normalising
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    @property
    def deterministic_resize(self) -> bool:
        """Whether `resized` gives an image the same pixels every time (so its captions may share them)."""
        return self.crop_scale >= 1

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """The tensor alone: for images whose text says nothing of left and right (or with flips off)."""
        return self.view(image)[0]

    def view(self, image: Image.Image) -> tuple[torch.Tensor, bool]:
        """(3, size, size) normalised tensor, and whether it was mirrored (then mirror the text: `mirror_sample`)."""
        pixels, mirrored = self.finish(self.resized(image))
        return self.normalise(pixels), mirrored

    def resized(self, image: Image.Image) -> torch.Tensor:
        """(3, size, size) uint8: a random resized crop first if training asks for one, then the square."""
        if self.crop_scale < 1:
            top, left, height, width = RandomResizedCrop.get_params(image, (self.crop_scale, 1.0), (3 / 4, 4 / 3))
            image = image.crop((left, top, left + width, top + height))
        return self.square(image)

    def finish(self, pixels: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """(3, size, size) uint8 from `resized` -> the view to train on, still uint8, and whether it was mirrored."""
        size = self.image_size
        if self.shift:
            # The crop of the edge-padded image at (top, left) reads rows/columns offset - shift + i, clamped to
            # the image: the padding is never built.
            top, left = (int(torch.randint(0, 2 * self.shift + 1, size=())) for _ in range(2))
            positions = torch.arange(size) - self.shift
            pixels = pixels.index_select(1, (positions + top).clamp(0, size - 1))
            pixels = pixels.index_select(2, (positions + left).clamp(0, size - 1))
        mirrored = bool(self.flip and torch.rand(1) < 0.5)
        if mirrored:
            pixels = pixels.flip(2)
        if self.jitter is not None:
            pixels = self.jitter(pixels)
        return pixels, mirrored

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) -> float32 in the encoder's range, on the pixels' device. Training normalises
        whole batches on the device it trains on: a quarter of the bytes through the loader and the copy."""
        mean, std = self.mean.to(pixels.device), self.std.to(pixels.device)
        return (pixels.float().mul_(1.0 / 255) - mean) / std

    def square(self, image: Image.Image) -> torch.Tensor:
        """The image as (3, size, size) uint8: its centre square, or all of it padded to a square."""
        size = self.image_size
        if self.resize == "crop":
            pixels = torch.from_numpy(np.array(center_square(image).convert("RGB"))).permute(2, 0, 1)  # (3, H, W)
            if pixels.shape[1:] != (size, size):
                pixels = F.resize(pixels, [size, size], self.interpolation, antialias=True)
            return pixels.contiguous()
        width, height = image.size
        scale = size / max(width, height)
        new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
        pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)  # (3, H, W)
        if (new_height, new_width) != (height, width):
            pixels = F.resize(pixels, [new_height, new_width], self.interpolation, antialias=True)
        left, top = (size - new_width) // 2, (size - new_height) // 2
        padding = [left, top, size - new_width - left, size - new_height - top]
        return F.pad(pixels, padding, fill=self.pad_colour).contiguous()


def build_transform(
    image_size: int,
    train: bool = False,
    preprocessing: Preprocessing | None = None,
    mean: tuple[float, float, float] = IMAGE_MEAN,
    std: tuple[float, float, float] = IMAGE_STD,
    interpolation: str = "bilinear",
) -> ImageTransform:
    return ImageTransform(image_size, train, preprocessing, mean, std, interpolation)


def encoder_transform(
    vision: VisionConfig, train: bool = False, preprocessing: Preprocessing | None = None
) -> ImageTransform:
    """The transform for a model's encoder: its image size, and the normalization and resize filter its weights
    learnt with (a pretrained encoder's, from its config), the same in training, evaluation and inference; the
    square made as the model was trained (`vision.resize`) unless `preprocessing` says more."""
    preprocessing = preprocessing or Preprocessing(resize=vision.resize)
    return build_transform(vision.image_size, train, preprocessing, vision.mean, vision.std, vision.interpolation)


def center_square(image: Image.Image) -> Image.Image:
    """The largest centred square. Cropping BEFORE resizing (rather than resizing the shorter side first) keeps a
    1x10000 strip from becoming a 64x640000 tensor on the way; the result is the same view."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_MIRRORED_WORD = {"left": "right", "right": "left"}


def mirror_text(text: str) -> str:
    """ "left" <-> "right" as whole words, their capitals kept: "Left of the right cup" -> "Right of the left cup";
    "leftover" and "rightly" stay."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = _MIRRORED_WORD[word.lower()]
        return other.upper() if word.isupper() else other.capitalize() if word[0].isupper() else other

    return _LEFT_RIGHT.sub(swap, text)


def mirror_sample(sample: Sample) -> Sample:
    """The Sample's texts as they read for its mirrored image."""
    question = None if sample.question is None else mirror_text(sample.question)
    return dataclasses.replace(
        sample,
        question=question,
        target=mirror_text(sample.target),
        references=[mirror_text(r) for r in sample.references],
        given=mirror_text(sample.given),
    )
