from pathlib import Path

import numpy as np
import pytest
from conftest import BLUE, RED
from PIL import Image

import vlm.data.images as images_module
from vlm.data.images import ImageLoadError, load_image, to_rgb
from vlm.data.transforms import build_transform

GOOD_IMAGES = (
    "rgb.jpg",
    "gray.png",
    "cmyk.jpg",
    "rgba.png",
    "gray_alpha.png",
    "palette.png",
    "palette_transparent.png",
    "gray16.png",
    "tiny.png",
    "exif_rotated.jpg",
)


def close_to(pixel: tuple[int, ...], colour: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


@pytest.mark.parametrize("name", GOOD_IMAGES)
def test_every_mode_becomes_rgb(odd_images, name):
    image = load_image(odd_images[name])
    assert image.mode == "RGB"
    assert image.width >= 1 and image.height >= 1
    np.asarray(image)  # decoded, usable after the file is closed


def test_load_image_accepts_a_path_string_and_an_image_in_memory(odd_images):
    from_string = load_image(str(odd_images["gray.png"]))
    from_memory = load_image(Image.open(odd_images["gray.png"]))
    assert from_string.mode == from_memory.mode == "RGB"
    assert np.array_equal(np.asarray(from_string), np.asarray(from_memory))


def test_exif_orientation_is_applied(odd_images):
    image = load_image(odd_images["exif_rotated.jpg"])
    assert image.size == (20, 40)  # stored 40x20; orientation 6 turns it upright
    # The stored left half (red) is on top once rotated 90 degrees clockwise.
    assert close_to(image.getpixel((10, 5)), RED, 30)
    assert close_to(image.getpixel((10, 35)), BLUE, 30)


def test_transparency_is_composited_over_white(odd_images):
    rgba = load_image(odd_images["rgba.png"])
    assert rgba.getpixel((2, 8)) == (255, 255, 255)
    assert rgba.getpixel((12, 8)) == BLUE
    palette = load_image(odd_images["palette_transparent.png"])
    assert palette.getpixel((1, 1)) == (255, 255, 255)
    assert palette.getpixel((6, 1)) == RED
    gray_alpha = load_image(odd_images["gray_alpha.png"])
    assert gray_alpha.getpixel((1, 1)) == (255, 255, 255)
    assert gray_alpha.getpixel((6, 1)) == (90, 90, 90)


def test_cmyk_keeps_its_colour(odd_images):
    assert close_to(load_image(odd_images["cmyk.jpg"]).getpixel((8, 8)), RED, 30)


def test_sixteen_bit_range_is_rescaled_not_clipped(odd_images):
    pixels = np.asarray(load_image(odd_images["gray16.png"]))
    assert pixels.min() == 0 and pixels.max() == 255  # clipping 0..59700 to 8 bits would saturate most pixels
    assert len(np.unique(pixels[..., 0])) > 100


def test_float_and_int_modes_become_rgb():
    ramp = np.linspace(-1.0, 3.0, 64, dtype=np.float32).reshape(8, 8)
    image = to_rgb(Image.fromarray(ramp, mode="F"))
    assert image.mode == "RGB" and np.asarray(image).max() == 255
    flat = to_rgb(Image.new("I", (4, 4), 7))
    assert flat.mode == "RGB" and np.asarray(flat).max() == 0  # a constant image has no range to stretch


@pytest.mark.parametrize(
    "name, problem",
    [
        ("truncated.jpg", "corrupt or truncated"),
        ("empty.jpg", "empty file"),
        ("text.jpg", "not an image file"),
        ("bomb.png", "100000x100000 pixels is over the limit"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(odd_images, name, problem):
    with pytest.raises(ImageLoadError, match=rf"{name}: .*{problem}"):
        load_image(odd_images[name])


def test_image_load_error_is_a_value_error(odd_images):
    with pytest.raises(ValueError, match="empty.jpg"):
        load_image(odd_images["empty.jpg"])


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nowhere\.jpg: image file not found"):
        load_image(tmp_path / "nowhere.jpg")
    with pytest.raises(ImageLoadError, match=rf"{tmp_path.name}: is a folder"):
        load_image(tmp_path)


def test_pixel_limit_is_checked_before_decoding(odd_images, monkeypatch):
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match=r"rgb\.jpg: 48x32 pixels is over the limit of 1,000"):
        load_image(odd_images["rgb.jpg"])
    assert load_image(odd_images["gray.png"]).size == (16, 16)  # 256 pixels: under the limit


def test_pil_bomb_limit_is_restored_after_loading(odd_images):
    before = Image.MAX_IMAGE_PIXELS
    load_image(odd_images["rgb.jpg"])
    with pytest.raises(ImageLoadError):
        load_image(odd_images["bomb.png"])
    assert Image.MAX_IMAGE_PIXELS == before


def test_concurrent_loads_leave_the_pil_limit_as_it_was(odd_images):
    from concurrent.futures import ThreadPoolExecutor

    before = Image.MAX_IMAGE_PIXELS
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(load_image, [odd_images["gray.png"], odd_images["rgb.jpg"]] * 20))
    assert all(image.mode == "RGB" for image in loaded)
    assert Image.MAX_IMAGE_PIXELS == before


def photo_like(path: Path, width: int = 640, height: int = 480, seed: int = 0) -> Path:
    """A JPEG with a photo's detail (gradients, shapes and noise), not a flat colour that decodes trivially."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    pixels[(x - width / 3) ** 2 + (y - height / 2) ** 2 < (height / 5) ** 2] = (200, 40, 60)
    pixels += rng.normal(0, 12, pixels.shape)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return path


@pytest.mark.parametrize(("size", "decoded"), [(224, (320, 240)), (64, (160, 120)), (480, (640, 480))])
def test_a_jpeg_is_decoded_at_the_smallest_scale_that_covers_the_size_asked(tmp_path, size, decoded):
    assert load_image(photo_like(tmp_path / "photo.jpg"), min_size=size).size == decoded


@pytest.mark.parametrize("size", [224, 64])
def test_reduced_decoding_transforms_close_to_the_full_decode(tmp_path, size):
    path = photo_like(tmp_path / "photo.jpg")
    transform = build_transform(size)
    full, reduced = transform(load_image(path)), transform(load_image(path, min_size=size))
    # On the [-1, 1] scale: 0.02 is under 3/255 on average, a difference no one sees; no pixel far off.
    assert (full - reduced).abs().mean() < 0.02 and (full - reduced).abs().max() < 0.3


def test_reduced_decoding_leaves_other_formats_alone_and_keeps_exif_orientation(odd_images):
    assert load_image(odd_images["gray.png"], min_size=4).size == (16, 16)
    upright = load_image(odd_images["exif_rotated.jpg"], min_size=10)  # stored 40 x 20, decoded at half scale
    assert upright.size == (10, 20)
    assert close_to(upright.getpixel((5, 2)), RED, 30) and close_to(upright.getpixel((5, 17)), BLUE, 30)


def test_an_image_file_s_bytes_load_like_the_file_and_errors_name_where_they_came_from(odd_images):
    path = odd_images["rgb.jpg"]
    assert np.array_equal(np.asarray(load_image(path.read_bytes())), np.asarray(load_image(path)))
    with pytest.raises(ImageLoadError, match="shard-3.tar:image 7: empty file"):
        load_image(b"", name="shard-3.tar:image 7")
    with pytest.raises(ImageLoadError, match="shard-3.tar:image 7: not an image"):
        load_image(b"hello", name="shard-3.tar:image 7")
