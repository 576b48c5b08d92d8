"""PIL image -> normalised tensor at the encoder's input size, for evaluation and for training.

Training augmentation must keep the text true: captions and answers name colours and say "left of", so there is
no colour jitter and no horizontal flip (unless a data set's text is known to be flip-safe); only a small random
shift, which leaves colours, shapes, sizes and relations as they were.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import v2

# Images are mapped to [-1, 1]: our encoders start from random weights, so ImageNet statistics buy nothing; a
# pretrained timm ViT loaded from a file may want its own (see its pretrained_cfg) - pass mean/std then.
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


def build_transform(
    image_size: int,
    train: bool = False,
    allow_flip: bool = False,
    mean: tuple[float, float, float] = IMAGE_MEAN,
    std: tuple[float, float, float] = IMAGE_STD,
) -> Callable[[Image.Image], torch.Tensor]:
    """Evaluation: the centre square, resized. Training: the same view shifted by up to 6% of the side, the
    uncovered border filled by repeating the edge pixels (so no new edge or object appears)."""
    steps: list = [center_square, v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]
    if train:
        shift = max(1, round(0.06 * image_size))
        steps += [v2.Pad(shift, padding_mode="edge"), v2.RandomCrop(image_size)]
        if allow_flip:
            steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), v2.ToPureTensor()]
    return v2.Compose(steps)


def center_square(image: Image.Image) -> Image.Image:
    """The largest centred square. Cropping BEFORE resizing (rather than resizing the shorter side first) keeps a
    1x10000 strip from becoming a 64x640000 tensor on the way; the result is the same view."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))
