import json

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
    assert config.vision.num_patches == 64
    assert config.num_image_tokens == 16
    assert config.max_text_len == config.decoder.max_positions - 16


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
        ("decoder.depth=three", "expected a int"),
        ("projector.reduction=3", "does not divide the patch grid"),
        ("vision.stem_channel_mult=0", "vision.stem_channel_mult must be a positive whole number, got 0"),
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
