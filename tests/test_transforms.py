import numpy as np
import pytest
import torch
from PIL import Image

from vlm.data.sample import Sample
from vlm.data.transforms import (
    IMAGE_MEAN,
    IMAGE_STD,
    PREPROCESSING_DEFAULTS,
    Preprocessing,
    build_transform,
    mirror_sample,
    mirror_text,
)

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
    transform = build_transform(32, train=True, preprocessing=Preprocessing(flip=True))
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
            build_transform(image_size, train, Preprocessing(flip=allow_flip)),
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
        views.append(transform.finish(transform.resized(image))[0])
    assert views[0].dtype == torch.uint8
    assert torch.equal(transform.normalise(torch.stack(views)), torch.stack(whole))


@pytest.mark.parametrize(
    "text, mirrored",
    [
        ("a red circle left of a blue square", "a red circle right of a blue square"),
        ("is the circle right of the square?", "is the circle left of the square?"),
        ("Left or RIGHT: Right", "Right or LEFT: Left"),
        ("leftover rightly outright left-handed", "leftover rightly outright right-handed"),
        ("no sides here", "no sides here"),
    ],
)
def test_mirror_text_swaps_left_and_right_as_whole_words(text, mirrored):
    assert mirror_text(text) == mirrored
    assert mirror_text(mirror_text(text)) == text


def test_a_flipped_view_is_the_mirror_image_and_says_so():
    image = halves((32, 32), RED, BLUE)
    transform = build_transform(32, train=True, preprocessing=Preprocessing(flip=True, shift=0.0))
    seen = set()
    for seed in range(16):
        torch.manual_seed(seed)
        tensor, mirrored = transform.view(image)
        left, right = (RED, BLUE) if not mirrored else (BLUE, RED)
        assert torch.allclose(tensor[:, :, 0], normalised(left)[:, None].expand(3, 32), atol=1e-5)
        assert torch.allclose(tensor[:, :, -1], normalised(right)[:, None].expand(3, 32), atol=1e-5)
        seen.add(mirrored)
    assert seen == {True, False}


def test_a_mirrored_training_example_has_left_and_right_swapped_in_its_text():
    from vlm.data.mixture import TokenizedDataset
    from vlm.model.tokenizer import Tokenizer

    sample = Sample(image=halves((32, 32), RED, BLUE), target="red left of blue", question="what is left of blue?")
    tokenizer = Tokenizer.build([sample.target, sample.question, mirror_text(sample.target), "right"])
    transform = build_transform(32, train=True, preprocessing=Preprocessing(flip=True, shift=0.0))
    dataset = TokenizedDataset([sample], tokenizer, transform, max_text_len=32)
    texts = set()
    for seed in range(16):
        example = dataset[(0, seed)]
        red_on_the_left = example.image[0, 16, 0] > 0  # red is bright in the first channel
        text = tokenizer.decode(example.input_ids.tolist())
        assert ("red left of blue" in text) == bool(red_on_the_left), text
        assert ("what is left of blue?" in text) == bool(red_on_the_left), text
        texts.add(text)
    assert len(texts) == 2  # both the original and the mirrored example were drawn


def test_mirror_sample_mirrors_every_text():
    sample = Sample(image="x.png", target="left", question="right?", references=["left", "on the right"], given="left")
    assert mirror_sample(sample) == Sample(
        image="x.png", target="right", question="left?", references=["right", "on the left"], given="right"
    )


def test_padding_keeps_the_whole_of_a_4_by_3_photo():
    image = Image.new("RGB", (80, 60), GREEN)  # a red and a blue band at the edges, outside the centre square
    image.paste(RED, (0, 0, 8, 60))
    image.paste(BLUE, (72, 0, 80, 60))
    tensor = build_transform(16, preprocessing=Preprocessing(resize="pad"))(image)
    # 80x60 -> 16x12, centred: 2 rows of padding above and below, in the mean colour (zero once normalised, to 8 bits)
    padding = torch.cat([tensor[:, :2], tensor[:, 14:]], dim=1)
    assert padding.abs().max() <= 2 / 255 and not torch.allclose(tensor[:, 2:14], padding[:, :1], atol=0.1)
    assert torch.allclose(tensor[:, 2:14, 0], normalised(RED)[:, None].expand(3, 12), atol=1e-5)  # both edges kept
    assert torch.allclose(tensor[:, 2:14, -1], normalised(BLUE)[:, None].expand(3, 12), atol=1e-5)
    cropped = build_transform(16, preprocessing=Preprocessing(resize="crop"))(image)
    assert torch.allclose(cropped, normalised(GREEN)[:, None, None].expand(3, 16, 16), atol=1e-5)  # crop loses them


def test_built_in_defaults_are_the_transform_it_always_was():
    # the same as no preprocessing given (which test_same_tensors_as_torchvision_from_the_same_seed pins down)
    image = halves((48, 40), RED, BLUE)
    for train in (False, True):
        torch.manual_seed(0)
        expected = build_transform(24, train)(image)
        torch.manual_seed(0)
        assert torch.equal(build_transform(24, train, PREPROCESSING_DEFAULTS["built-in"])(image), expected)


def test_photo_training_crops_and_jitters_but_evaluation_does_not():
    pixels = torch.randint(0, 256, (60, 80, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    image = Image.fromarray(pixels.numpy())
    photos = PREPROCESSING_DEFAULTS["photos"]
    evaluation = build_transform(32, False, photos)
    assert torch.equal(evaluation(image), evaluation(image))
    torch.manual_seed(0)
    views = [
        build_transform(32, True, Preprocessing(resize="pad", crop_scale=0.5, flip=False))(image) for _ in range(4)
    ]
    assert all(not torch.equal(views[0], view) for view in views[1:])
    torch.manual_seed(0)
    jittered = build_transform(32, True, Preprocessing(resize="pad", crop_scale=1.0, shift=0.0, jitter=0.5))(image)
    assert not torch.allclose(jittered, evaluation(image), atol=1e-3)


@pytest.mark.parametrize(
    "settings", [Preprocessing(resize="stretch"), Preprocessing(crop_scale=0.0), Preprocessing(jitter=1.5)]
)
def test_bad_settings_are_refused_by_name(settings):
    with pytest.raises(ValueError, match="resize|crop_scale|jitter"):
        settings.validate()
