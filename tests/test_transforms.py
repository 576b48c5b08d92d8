import numpy as np
import pytest
import torch
from PIL import Image

from vlm.data.transforms import IMAGE_MEAN, IMAGE_STD, build_transform

RED, GREEN, BLUE = (230, 20, 20), (20, 200, 20), (20, 20, 230)


def normalised(colour: tuple[int, int, int]) -> torch.Tensor:
    values = torch.tensor(colour, dtype=torch.float32) / 255
    return (values - torch.tensor(IMAGE_MEAN)) / torch.tensor(IMAGE_STD)


def halves(size: tuple[int, int], left: tuple, right: tuple) -> Image.Image:
    image = Image.new("RGB", size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("size", [(48, 32), (32, 48), (1, 1), (1, 5000), (5000, 1)])
def test_output_is_a_square_normalised_tensor(train, size):
    tensor = build_transform(32, train=train)(Image.new("RGB", size, RED))
    assert type(tensor) is torch.Tensor  # a plain tensor, not a torchvision wrapper class
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    assert torch.allclose(tensor, normalised(RED)[:, None, None].expand(3, 32, 32), atol=1e-5)


def test_white_and_black_map_to_the_normalised_range():
    transform = build_transform(8)
    white, black = transform(Image.new("RGB", (8, 8), "white")), transform(Image.new("RGB", (8, 8), "black"))
    assert torch.allclose(white, normalised((255, 255, 255))[:, None, None].expand(3, 8, 8))
    assert torch.allclose(black, normalised((0, 0, 0))[:, None, None].expand(3, 8, 8))


def test_evaluation_keeps_the_centre_square():
    image = Image.new("RGB", (90, 30), RED)  # red | green | blue thirds: the centre square is the green third
    image.paste(GREEN, (30, 0, 60, 30))
    image.paste(BLUE, (60, 0, 90, 30))
    tensor = build_transform(16)(image)
    assert torch.allclose(tensor[:, 4:12, 4:12].mean(dim=(1, 2)), normalised(GREEN), atol=0.05)


def test_evaluation_is_deterministic():
    image = halves((40, 40), RED, BLUE)
    transform = build_transform(16)
    assert torch.equal(transform(image), transform(image))


def test_training_shifts_but_never_flips_or_recolours():
    image = halves((64, 64), RED, BLUE)
    transform = build_transform(32, train=True)
    views = []
    for seed in range(12):
        torch.manual_seed(seed)
        views.append(transform(image))
    assert any(not torch.equal(views[0], view) for view in views[1:])  # augmentation does something
    for view in views:
        assert torch.allclose(view[:, :, 0], normalised(RED)[:, None].expand(3, 32), atol=1e-5)  # left stays red
        assert torch.allclose(view[:, :, -1], normalised(BLUE)[:, None].expand(3, 32), atol=1e-5)
        assert view.amin() >= -1 - 1e-6 and view.amax() <= 1 + 1e-6  # no colour outside the image's own


def test_flip_only_when_allowed():
    image = halves((32, 32), RED, BLUE)
    transform = build_transform(32, train=True, allow_flip=True)
    left_columns = []
    for seed in range(16):
        torch.manual_seed(seed)
        left_columns.append(transform(image)[0, 16, 0].item())
    assert normalised(RED)[0].item() in [pytest.approx(v) for v in left_columns]
    assert normalised(BLUE)[0].item() in [pytest.approx(v) for v in left_columns]


def test_same_seed_gives_the_same_training_view():
    image = halves((64, 48), RED, BLUE)
    transform = build_transform(24, train=True)
    torch.manual_seed(3)
    first = transform(image)
    torch.manual_seed(3)
    assert torch.equal(first, transform(image))


def torchvision_reference(image_size: int, train: bool, allow_flip: bool):
    """The transform as torchvision's chain of transforms: ours must give the same tensors from the same draws."""
    from torchvision.transforms import v2

    from vlm.data.transforms import center_square

    steps: list = [center_square, v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]
    if train:
        shift = max(1, round(0.06 * image_size))
        steps += [v2.Pad(shift, padding_mode="edge"), v2.RandomCrop(image_size)]
        if allow_flip:
            steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGE_MEAN, IMAGE_STD), v2.ToPureTensor()]
    return v2.Compose(steps)


@pytest.mark.parametrize("train,allow_flip", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("size", [(64, 64), (48, 32), (90, 30), (1, 1)])
def test_same_tensors_as_torchvision_from_the_same_seed(train, allow_flip, size):
    pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    image = Image.fromarray(pixels.numpy())
    for image_size in (24, 64):
        ours, reference = (
            build_transform(image_size, train, allow_flip),
            torchvision_reference(image_size, train, allow_flip),
        )
        for seed in range(4):
            torch.manual_seed(seed)
            expected = reference(image)
            torch.manual_seed(seed)
            assert torch.allclose(ours(image), expected, atol=1e-6)


@pytest.mark.parametrize("train", [False, True])
def test_uint8_views_normalised_as_a_batch_equal_the_transform_s_output(train):
    """Training collates uint8 views and normalises whole batches on its device: the values must not change."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    transform = build_transform(32, train=train)
    whole, views = [], []
    for seed in range(4):
        torch.manual_seed(seed)
        whole.append(transform(image))
        torch.manual_seed(seed)
        views.append(transform.finish(transform.resized(image)))
    assert views[0].dtype == torch.uint8
    assert torch.equal(transform.normalise(torch.stack(views)), torch.stack(whole))
