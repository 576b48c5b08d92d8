import pytest
import torch

from vlm.model.config import VisionConfig
from vlm.model.vision_encoder import VisionEncoder, conv_stem


@pytest.mark.parametrize("patch_size", [4, 8, 16])
def test_conv_stem_gives_the_patch_grid_of_the_projection_it_replaces(patch_size):
    images = torch.randn(2, 3, 64, 64)
    patch = VisionEncoder(VisionConfig(image_size=64, patch_size=patch_size, width=32, depth=1, heads=2))
    conv = VisionEncoder(VisionConfig(image_size=64, patch_size=patch_size, width=32, depth=1, heads=2, stem="conv"))
    assert conv(images).shape == patch(images).shape == (2, (64 // patch_size) ** 2, 32)


def test_conv_stem_channel_mult_widens_every_convolution_but_keeps_the_output():
    narrow, wide = conv_stem(8, 128), conv_stem(8, 128, channel_mult=2)
    channels = [[m.out_channels for m in stem if isinstance(m, torch.nn.Conv2d)] for stem in (narrow, wide)]
    assert channels == [[16, 32, 64, 128], [32, 64, 128, 128]]
    assert wide(torch.randn(1, 3, 64, 64)).shape == (1, 128, 8, 8)


def test_conv_stem_refuses_a_patch_size_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match="power-of-two"):
        conv_stem(6, 32)


@pytest.mark.parametrize("patch_size", [8, 16])
def test_conv_stem_output_outweighs_the_position_embeddings_at_init(patch_size):
    # If what the stem says about the image is small next to the position embeddings (std 0.02), every image
    # looks alike to the layers above and the model learns its language prior long before it looks.
    torch.manual_seed(0)
    stem = conv_stem(patch_size, 128)
    images = torch.rand(16, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        features = stem(images)  # (B, 128, grid, grid)
    assert features.std(dim=0).mean() > 10 * 0.02


def test_a_weights_file_with_the_conv_stem_is_refused_before_anything_is_loaded(tmp_path):
    weights = tmp_path / "vit.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="vision.stem=patch"):
        VisionEncoder(VisionConfig(stem="conv", weights_file=str(weights)))
