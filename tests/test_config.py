import json
from dataclasses import replace

import pytest

from vlm.model.config import PRESETS, VLMConfig, apply_overrides, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name, tmp_path):
    config = get_preset(name)
    config.to_json(tmp_path / "config.json")
    assert VLMConfig.from_json(tmp_path / "config.json") == config
    assert VLMConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_get_preset_returns_a_copy():
    config = get_preset("tiny")
    config.decoder.depth = 99
    assert get_preset("tiny").decoder.depth != 99


def test_image_token_count_follows_patches_and_reduction():
    config = get_preset("default")
    assert config.vision.num_patches == (64 // 16) ** 2 == 16
    assert config.num_image_tokens == 16  # reduction 1: a token per patch
    assert config.max_positions == 16 + config.decoder.max_text_len == 64
    assert config.max_text_len == config.decoder.max_text_len


def test_image_size_alone_sets_the_decoder_positions():
    config = apply_overrides(get_preset("tiny"), ["vision.image_size=224"])
    assert config.num_image_tokens == (224 // 8 // 2) ** 2 == 196
    assert config.max_text_len == get_preset("tiny").max_text_len
    assert config.max_positions == 196 + config.max_text_len


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["decoder.max_positions=48", "vision.image_size=224"], "set decoder.max_positions=none"),
        (["vision.image_size=200"], "set vision.image_size=192"),
        (["vision.image_size=36"], "set vision.image_size=32"),
    ],
)
def test_an_image_size_that_does_not_fit_names_the_setting_to_change(overrides, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(get_preset("tiny"), overrides)


# A config.json of the tiny preset as written before the decoder's positions followed the image size and before
# pretrained encoders (decoder.max_positions fixed; no pretrained, mean, std, interpolation or max_text_len).
OLD_TINY_CONFIG = {
    "vision": {
        "image_size": 32,
        "patch_size": 8,
        "width": 32,
        "depth": 1,
        "heads": 2,
        "mlp_ratio": 4.0,
        "timm_model": "vit_tiny_patch16_224",
        "class_token": False,
        "stem": "patch",
        "stem_channel_mult": 1,
        "weights_file": None,
        "freeze": False,
    },
    "projector": {"reduction": 2, "mode": "pixel_shuffle", "hidden_mult": 1.0},
    "decoder": {
        "vocab_size": 512,
        "max_positions": 48,
        "width": 32,
        "depth": 2,
        "heads": 2,
        "mlp_ratio": 4.0,
        "dropout": 0.0,
    },
    "prefix_lm": True,
}


def test_a_config_written_before_the_image_size_setting_builds_the_same_model():
    import torch

    from vlm.model.vision_language_model import VisionLanguageModel

    old = VLMConfig.from_dict(json.loads(json.dumps(OLD_TINY_CONFIG)))
    assert old.max_positions == get_preset("tiny").max_positions == 48
    models = []
    for config in (old, get_preset("tiny")):
        torch.manual_seed(0)
        models.append(VisionLanguageModel(config).state_dict())
    assert models[0].keys() == models[1].keys()
    assert all(torch.equal(models[0][name], models[1][name]) for name in models[0])


def test_overrides_parse_by_field_type():
    config = apply_overrides(get_preset("tiny"), ["decoder.depth=3", "prefix_lm=false", "projector.mode=avg_pool"])
    assert config.decoder.depth == 3 and config.prefix_lm is False and config.projector.mode == "avg_pool"
    assert apply_overrides(config, ["vision.weights_file=none"]).vision.weights_file is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("decoder.depth", "not of the form"),
        ("decoder.nope=3", "no config field 'decoder.nope'"),
        ("nope.depth=3", "no config section 'nope'"),
        ("decoder.depth=three", "override decoder.depth='three': expected a int"),
        ("projector.reduction=3", "does not divide the patch grid"),
        ("vision.stem_channel_mult=0", "vision.stem_channel_mult must be a positive whole number, got 0"),
        ("vision.mean=0.5,0.5", "expected 3 comma-separated numbers"),
        ("vision.interpolation=cubic", "vision.interpolation must be nearest, bilinear or bicubic"),
        ("vision.class_token=yes", "expected a bool"),
        ("decoder.dropout=nan", "expected a float"),
        ("decoder.dropout=inf", "expected a float"),
        ("decoder.max_positions=many", "expected a int"),
        ("vision.mean=0.1,0.2,0.3,0.4", "expected 3 comma-separated numbers"),
        ("vision.std=a,b,c", "expected 3 comma-separated numbers"),
        ("vision.heads=3", "vision.width=32 is not divisible by vision.heads=3"),
        ("decoder.heads=3", "decoder.width=32 is not divisible by decoder.heads=3"),
        ("decoder.max_positions=11", "decoder.max_positions=11 leaves 7 text positions after 4 image tokens"),
        ("decoder.max_text_len=7", "decoder.max_text_len must be at least 8, got 7"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(get_preset("tiny"), [override])


def test_unknown_fields_and_bad_json_are_reported(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config field\(s\) in decoder: \['colour'\]"):
        VLMConfig.from_dict({"decoder": {"colour": 1}})
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        VLMConfig.from_json(path)


@pytest.mark.parametrize(
    "override, field, expected",
    [
        ("decoder.dropout=0.25", ("decoder", "dropout"), 0.25),
        ("decoder.mlp_ratio=3", ("decoder", "mlp_ratio"), 3.0),
        ("vision.class_token=TRUE", ("vision", "class_token"), True),
        ("vision.class_token=1", ("vision", "class_token"), True),
        ("prefix_lm=0", ("prefix_lm",), False),
        ("prefix_lm=False", ("prefix_lm",), False),
        ("vision.mean=0.1,0.2,0.3", ("vision", "mean"), (0.1, 0.2, 0.3)),
        (" decoder.depth = 3 ", ("decoder", "depth"), 3),  # spaces around the key and the value
        ("decoder.max_positions=80", ("decoder", "max_positions"), 80),  # None now: parsed as its int
        ("vision.weights_file=NULL", ("vision", "weights_file"), None),
        ("projector.mode= avg_pool", ("projector", "mode"), "avg_pool"),
        ("vision.interpolation=nearest", ("vision", "interpolation"), "nearest"),
        ("decoder.max_positions=12", ("decoder", "max_positions"), 12),  # 8 text positions after 4 image tokens
        ("decoder.max_text_len=8", ("decoder", "max_text_len"), 8),
    ],
)
def test_each_kind_of_field_parses_to_its_type(override, field, expected):
    config = apply_overrides(get_preset("tiny"), [override])
    value = config
    for name in field:
        value = getattr(value, name)
    assert value == expected and type(value) is type(expected)


# Pretrained encoders described as timm publishes them (built on the meta device: nothing is downloaded or made).
@pytest.mark.parametrize(
    "name, expected",
    [
        (  # a class token, a bilinear resize filter, no normalization
            "vit_base_patch16_224_miil.in21k",
            dict(
                pretrained="vit_base_patch16_224_miil.in21k",
                timm_model="vit_base_patch16_224_miil",
                image_size=224,
                patch_size=16,
                width=768,
                depth=12,
                heads=12,
                mlp_ratio=4.0,
                class_token=True,
                mean=(0.0, 0.0, 0.0),
                std=(1.0, 1.0, 1.0),
                interpolation="bilinear",
            ),
        ),
        (  # named without its tag (timm's default one is recorded); no class token; MLPs 5 times the width
            "vit_wee_patch16_reg1_gap_256",
            dict(
                pretrained="vit_wee_patch16_reg1_gap_256.sbb_in1k",
                timm_model="vit_wee_patch16_reg1_gap_256",
                image_size=256,
                patch_size=16,
                width=256,
                depth=14,
                heads=4,
                mlp_ratio=5.0,
                class_token=False,
                mean=(0.5, 0.5, 0.5),
                std=(0.5, 0.5, 0.5),
                interpolation="bicubic",
            ),
        ),
        (  # parallel blocks: attention and MLP in one projection, so the MLP ratio asked for is kept
            "vit_dpwee_patch16_reg1_gap_256.sbb_in1k",
            dict(
                pretrained="vit_dpwee_patch16_reg1_gap_256.sbb_in1k",
                timm_model="vit_dpwee_patch16_reg1_gap_256",
                width=256,
                heads=4,
                mlp_ratio=3.0,
                class_token=False,
            ),
        ),
    ],
)
def test_a_pretrained_encoder_is_described_by_timms_model_and_pretrained_config(name, expected):
    from dataclasses import asdict

    from vlm.model.config import pretrained_vision_config

    asked = replace(get_preset("tiny").vision, pretrained=name, image_size=32, mlp_ratio=3.0)
    described = asdict(pretrained_vision_config(asked))
    assert {key: described[key] for key in expected} == expected and described["stem"] == "patch"
    assert pretrained_vision_config(asked, keep_image_size=True).image_size == 32


@pytest.mark.parametrize("setting", ["pretrained", "timm_model"])
def test_a_name_timm_does_not_know_is_refused_under_the_setting_that_gave_it(setting):
    from vlm.model.config import pretrained_vision_config

    asked = replace(get_preset("tiny").vision, **{"pretrained": None, setting: "vit_nope"})
    with pytest.raises(ValueError, match=rf"^vision\.{setting}='vit_nope' is not a timm model"):
        pretrained_vision_config(asked)


def test_a_value_may_hold_an_equals_sign():
    config = apply_overrides(get_preset("tiny"), ["vision.weights_file=/data/run=3/vit.safetensors"])
    assert config.vision.weights_file == "/data/run=3/vit.safetensors"


def test_later_overrides_of_a_pretrained_encoders_config_keep_its_image_size():
    # A fine-tune from a model with a pretrained encoder at 32 px: its config names the encoder; --set of another
    # field must not describe the encoder afresh at timm's 224 px.
    named = apply_overrides(
        get_preset("tiny"), ["vision.pretrained=vit_xsmall_patch16_clip_224", "vision.image_size=32"]
    )
    assert named.vision.image_size == 32
    frozen = apply_overrides(named, ["vision.freeze=true"])
    assert frozen.vision == replace(named.vision, freeze=True)


def test_a_config_with_a_field_this_version_does_not_know_is_refused():
    with pytest.raises(ValueError, match=r"unknown config field\(s\): \['nope'\]"):
        VLMConfig.from_dict({**get_preset("tiny").to_dict(), "nope": 1})
