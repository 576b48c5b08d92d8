import pytest
import torch
from PIL import Image

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


def test_conv_stem_initialises_each_3x3_convolution_for_the_activation_after_it_and_the_1x1_as_linear():
    # He init: std sqrt(2 / fan_in) before a GELU (the ReLU gain), sqrt(1 / fan_in) for the projection, which no
    # activation follows.
    torch.manual_seed(0)
    convolutions = [m for m in conv_stem(8, 256) if isinstance(m, torch.nn.Conv2d)]
    for conv in convolutions:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        gain = 2 if conv.kernel_size == (3, 3) else 1
        assert conv.weight.std().item() == pytest.approx((gain / fan_in) ** 0.5, rel=0.15), conv
        assert not conv.bias.any()
    assert [c.kernel_size for c in convolutions] == [(3, 3)] * 3 + [(1, 1)]


@pytest.mark.parametrize("stem, class_token", [("patch", True), ("conv", False)])
def test_an_encoder_from_sizes_has_the_configs_depth_widths_class_token_and_stem(stem, class_token):
    config = VisionConfig(image_size=32, patch_size=8, width=32, depth=3, heads=2, mlp_ratio=2.0)
    config.stem, config.class_token, config.stem_channel_mult = stem, class_token, 2
    vit = VisionEncoder(config).vit
    assert len(vit.blocks) == 3 and vit.blocks[0].attn.num_heads == 2 and vit.blocks[0].mlp.fc1.out_features == 64
    assert (vit.cls_token is not None) == class_token and vit.num_prefix_tokens == int(class_token)
    stem_layers = vit.patch_embed.proj
    if stem == "conv":
        expected = [(m.out_channels, m.kernel_size) for m in conv_stem(8, 32, 2) if isinstance(m, torch.nn.Conv2d)]
        assert [(m.out_channels, m.kernel_size) for m in stem_layers if isinstance(m, torch.nn.Conv2d)] == expected
    else:
        assert (stem_layers.out_channels, stem_layers.kernel_size, stem_layers.stride) == (32, (8, 8), (8, 8))


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


def test_an_encoder_built_for_weights_from_elsewhere_never_reads_its_weights_file(tmp_path):
    # A saved model or a resumed run holds the weights: the file named when it was made may be gone.
    config = VisionConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2, weights_file=str(tmp_path / "gone"))
    assert VisionEncoder(config, load_weights=False)(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 32)
    with pytest.raises(FileNotFoundError, match="gone"):
        VisionEncoder(config)


# Pretrained encoders: timm's architectures with random weights, saved as a user would save downloaded ones.


def save_timm_weights(name: str, path, **kwargs) -> dict[str, torch.Tensor]:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = {k: v.contiguous() for k, v in timm.create_model(name, pretrained=False, **kwargs).state_dict().items()}
    save_file(weights, str(path))
    return weights


def test_a_timm_vit_small_state_dict_loads_into_the_large_preset_by_its_weights_file_alone(tmp_path):
    from vlm.model.config import apply_overrides, get_preset

    weights = save_timm_weights("vit_small_patch16_224", tmp_path / "vits.safetensors")
    config = apply_overrides(get_preset("large"), [f"vision.weights_file={tmp_path / 'vits.safetensors'}"])
    assert config.vision.class_token and config.vision.pretrained.startswith(
        "vit_small_patch16_224."
    )  # timm's default tag
    encoder = VisionEncoder(config.vision)
    loaded = encoder.vit.state_dict()
    assert set(loaded) == set(weights) - {"head.weight", "head.bias"}
    assert all(torch.equal(tensor, weights[name]) for name, tensor in loaded.items())
    assert encoder(torch.zeros(1, 3, 224, 224)).shape == (1, 196, 384)  # patch tokens alone, the class token dropped


@pytest.mark.parametrize(
    "name, class_token, mean, std",
    [
        # CLIP-style: pre-norm, a class token, OpenAI's normalization.
        (
            "vit_xsmall_patch16_clip_224.tinyclip_yfcc15m",
            True,
            (0.48145466, 0.4578275, 0.40821073),
            (0.26862954, 0.26130258, 0.27577711),
        ),
        # SigLIP-style: no class token, an attention-pool head (dropped), pixels to [-1, 1].
        ("vit_base_patch16_siglip_224.webli", False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ],
)
def test_clip_and_siglip_weights_load_with_the_class_token_and_normalization_of_their_pretrained_config(
    tmp_path, name, class_token, mean, std
):
    from vlm.data.transforms import encoder_transform
    from vlm.model.config import apply_overrides, get_preset

    weights = save_timm_weights(name, tmp_path / "encoder.safetensors")
    overrides = [f"vision.pretrained={name}", f"vision.weights_file={tmp_path / 'encoder.safetensors'}"]
    # At 32 px rather than 224: timm resamples the position embeddings to the 2 x 2 grid.
    config = apply_overrides(get_preset("tiny"), [*overrides, "vision.image_size=32"])
    vision = config.vision
    assert (vision.class_token, vision.mean, vision.std, vision.interpolation) == (class_token, mean, std, "bicubic")
    encoder = VisionEncoder(vision)
    loaded = encoder.vit.state_dict()
    assert loaded["pos_embed"].shape[1] == class_token + 4
    assert encoder.vit.global_pool == "" and encoder.vit.attn_pool is None  # no pooling head left to train unused
    for tensor_name, tensor in loaded.items():
        if tensor_name != "pos_embed":
            assert torch.equal(tensor, weights[tensor_name]), tensor_name
    assert encoder(torch.zeros(2, 3, 32, 32)).shape == (2, 4, vision.width)
    grey = encoder_transform(vision)(Image.new("RGB", (32, 32), (128, 128, 128)))
    assert torch.allclose(grey[:, 0, 0], (128 / 255 - torch.tensor(mean)) / torch.tensor(std))


def test_a_model_with_a_pretrained_encoder_saves_and_reloads_its_normalization_without_the_file(tmp_path):
    from helpers import tiny_tokenizer

    from vlm.inference.predict import Predictor
    from vlm.model.checkpoint import load_model, save_model
    from vlm.model.config import apply_overrides, get_preset
    from vlm.model.vision_language_model import VisionLanguageModel

    name = "vit_xsmall_patch16_clip_224.tinyclip_yfcc15m"
    weights = save_timm_weights(name, tmp_path / "clip.safetensors")
    overrides = [f"vision.pretrained={name}", f"vision.weights_file={tmp_path / 'clip.safetensors'}"]
    config = apply_overrides(get_preset("tiny"), [*overrides, "vision.image_size=32"])
    tokenizer = tiny_tokenizer()
    config.decoder.vocab_size = tokenizer.vocab_size
    model = VisionLanguageModel(config)  # a new model reads the encoder's weights file unless told not to
    assert torch.equal(model.vision_encoder.vit.blocks[0].attn.qkv.weight, weights["blocks.0.attn.qkv.weight"])
    assert model.projector.mlp[0].in_features == 4 * 256  # the projector takes the encoder's width, 2 x 2 merged
    save_model(tmp_path / "model", model, tokenizer)
    (tmp_path / "clip.safetensors").unlink()  # the saved model needs neither the file nor the hub
    loaded, _ = load_model(tmp_path / "model")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    transform = Predictor(loaded, tokenizer, "cpu").transform
    assert torch.allclose(transform.mean.flatten(), torch.tensor(config.vision.mean))
    assert transform.interpolation.value == "bicubic"


def last_mismatch(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> str:
    """The last of the model's tensors whose shape the weights do not share: what load_state_dict names last."""
    return [n for n, t in model.state_dict().items() if n in weights and weights[n].shape != t.shape][-1]


def test_a_weights_file_of_another_architecture_is_named_in_one_line(tmp_path):
    import timm

    from vlm.model.config import apply_overrides, get_preset
    from vlm.model.vision_encoder import EncoderWeightsError

    weights = save_timm_weights("vit_xsmall_patch16_clip_224", tmp_path / "clip.safetensors")
    config = apply_overrides(get_preset("large"), [f"vision.weights_file={tmp_path / 'clip.safetensors'}"])
    name = config.vision.pretrained
    mismatch = last_mismatch(timm.create_model(name, pretrained=False, num_classes=0, global_pool=""), weights)
    with pytest.raises(EncoderWeightsError) as error:
        VisionEncoder(config.vision)
    file = tmp_path / "clip.safetensors"
    assert str(error.value).startswith(f"vision.weights_file '{file}' does not hold {name}'s weights: size mismatch ")
    assert f"size mismatch for {mismatch}: copying a param with shape" in str(error.value)
    assert "\n" not in str(error.value)


def test_a_file_that_lacks_some_of_the_encoders_tensors_is_refused(tmp_path):
    import logging

    from safetensors.torch import save_file

    from vlm.model.config import apply_overrides, get_preset
    from vlm.model.vision_encoder import EncoderWeightsError

    weights = save_timm_weights("vit_xsmall_patch16_clip_224", tmp_path / "clip.safetensors")
    del weights["blocks.9.mlp.fc2.weight"], weights["norm.bias"]
    save_file(weights, str(tmp_path / "clip.safetensors"))
    overrides = [
        "vision.pretrained=vit_xsmall_patch16_clip_224",
        f"vision.weights_file={tmp_path / 'clip.safetensors'}",
    ]
    config = apply_overrides(get_preset("tiny"), [*overrides, "vision.image_size=32"])
    timm_log = logging.getLogger("timm.models._builder")
    handlers, level = list(timm_log.handlers), timm_log.level
    with pytest.raises(EncoderWeightsError) as error:
        VisionEncoder(config.vision)
    missing = "['blocks.9.mlp.fc2.weight', 'norm.bias'] (and 0 more)"
    assert str(error.value).endswith(f"lacks tensors of {config.vision.pretrained}: {missing}")
    assert (timm_log.handlers, timm_log.level) == (handlers, level)  # timm's log is left as it was found


# Pretrained encoders by name: timm's copy on the Hugging Face Hub, here laid out in an offline cache by the test.
HUB_ENCODER = "vit_xsmall_patch16_clip_224.tinyclip_yfcc15m"


def hub_encoder_config():
    from vlm.model.config import apply_overrides, get_preset

    return apply_overrides(get_preset("tiny"), [f"vision.pretrained={HUB_ENCODER}", "vision.image_size=32"]).vision


def test_an_encoder_named_alone_loads_timms_copy_from_the_hub_cache(tmp_path, offline_cache):
    from helpers import put_in_hub_cache

    (tmp_path / "repo").mkdir()
    weights = save_timm_weights("vit_xsmall_patch16_clip_224", tmp_path / "repo" / "model.safetensors")
    put_in_hub_cache(offline_cache, f"timm/{HUB_ENCODER}", tmp_path / "repo")
    loaded = VisionEncoder(hub_encoder_config()).vit.state_dict()
    assert all(torch.equal(tensor, weights[name]) for name, tensor in loaded.items() if name != "pos_embed")


def test_the_hubs_copy_of_another_architecture_is_named_in_one_line(tmp_path, offline_cache):
    import timm
    from helpers import put_in_hub_cache

    from vlm.model.vision_encoder import EncoderWeightsError

    (tmp_path / "repo").mkdir()
    weights = save_timm_weights("vit_tiny_patch16_224", tmp_path / "repo" / "model.safetensors")
    put_in_hub_cache(offline_cache, f"timm/{HUB_ENCODER}", tmp_path / "repo")
    built = timm.create_model(HUB_ENCODER, pretrained=False, img_size=32, num_classes=0, global_pool="")
    with pytest.raises(EncoderWeightsError) as error:
        VisionEncoder(hub_encoder_config())
    message = str(error.value)
    assert message.startswith(f"the hub's copy of {HUB_ENCODER} does not hold {HUB_ENCODER}'s weights: size mismatch ")
    assert f"size mismatch for {last_mismatch(built, weights)}: " in message and "\n" not in message


def test_an_encoder_named_alone_offline_and_not_in_the_cache_says_so_in_one_line(offline_cache):
    from vlm.model.vision_encoder import EncoderWeightsError

    with pytest.raises(EncoderWeightsError) as error:
        VisionEncoder(hub_encoder_config())
    message = str(error.value)
    assert message.startswith(f"vision.pretrained={HUB_ENCODER}: timm could not download its weights (")
    assert message.endswith("pass vision.weights_file=PATH") and "\n" not in message


@pytest.mark.parametrize("field, value", [("width", 128), ("patch_size", 8), ("class_token", False)])
def test_an_encoder_config_that_differs_from_the_pretrained_model_it_names_is_refused(field, value):
    from dataclasses import replace

    vision = replace(hub_encoder_config(), **{field: value})
    with pytest.raises(ValueError, match=f"vision.{field}={value} but {HUB_ENCODER} has "):
        VisionEncoder(vision, load_weights=False)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["vision.pretrained=vit_small_patch16_224", "vision.width=512"], "vision.width is its own"),
        (["vision.pretrained=vit_small_patch16_224.nope"], "Invalid pretrained tag"),
        (["vision.pretrained=resnet18"], "not a timm VisionTransformer"),
        (["vision.pretrained=vit_small_patch14_dinov2.lvd142m", "projector.reduction=2"], "set vision.image_size=504"),
    ],
)
def test_a_pretrained_encoder_that_cannot_be_used_as_asked_says_why(overrides, message):
    from vlm.model.config import apply_overrides, get_preset

    with pytest.raises(ValueError, match=message):
        apply_overrides(get_preset("default"), overrides)


def test_a_pretrained_encoder_replaces_the_presets_conv_stem_and_sizes():
    from vlm.model.config import apply_overrides, get_preset

    config = apply_overrides(
        get_preset("default"),
        ["vision.pretrained=vit_small_patch14_dinov2", "vision.image_size=224", "projector.reduction=2"],
    )
    vision = config.vision
    assert (vision.stem, vision.patch_size, vision.width, vision.depth, vision.heads) == ("patch", 14, 384, 12, 6)
    assert vision.mean == (0.485, 0.456, 0.406) and config.num_image_tokens == (224 // 14 // 2) ** 2 == 64
    assert config.max_positions == 64 + get_preset("default").max_text_len
