import json

import pytest
import torch
from helpers import text_batch, tiny_model, tiny_tokenizer
from safetensors import safe_open

from vlm.model.checkpoint import CheckpointError, load_model, save_model
from vlm.model.config import get_preset


@pytest.fixture()
def saved(tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    save_model(tmp_path / "model", model, tokenizer)
    return tmp_path / "model", model, tokenizer


def test_save_then_load_gives_identical_logits(saved):
    directory, model, tokenizer = saved
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    with safe_open(directory / "model.safetensors", "pt") as weights:  # what transformers' loaders look for
        assert weights.metadata() == {"format": "pt"}
    loaded, loaded_tokenizer = load_model(directory)
    batch = text_batch(tokenizer, model.config, [(None, "a red circle"), ("what color?", "red")])
    with torch.no_grad():
        expected = model.logits(batch["images"], batch["input_ids"], batch["attention_mask"])
        actual = loaded.eval().logits(batch["images"], batch["input_ids"], batch["attention_mask"])
    assert torch.equal(expected, actual)
    assert loaded_tokenizer.encode("two blue squares") == tokenizer.encode("two blue squares")


def test_weights_that_do_not_fit_the_config_name_the_tensor_and_both_shapes(saved):
    directory, _, _ = saved
    config = json.loads((directory / "config.json").read_text())
    config["decoder"]["width"] = 48
    config["decoder"]["heads"] = 2
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=r"model.safetensors: tensor 'projector.mlp.0.weight' has shape \(32, 128\) in the file but \(48, 128\)",
    ):
        load_model(directory)


def test_a_tensor_the_file_lacks_or_adds_is_named(saved):
    from safetensors.torch import load_file, save_file

    directory, _, _ = saved
    weights = load_file(directory / "model.safetensors")
    save_file({**weights, "decoder.extra.weight": torch.zeros(2)}, directory / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"model.safetensors: tensors not in the model .*: \['decoder.extra.weight'\]$"
    ):
        load_model(directory)
    name = sorted(weights)[-1]
    save_file({k: v for k, v in weights.items() if k != name}, directory / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"model.safetensors: tensor '{name}' is missing \(the config expects"):
        load_model(directory)


def test_missing_folder_and_files_are_reported(saved, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint folder .*nowhere.* does not exist"):
        load_model(tmp_path / "nowhere")
    directory, _, _ = saved
    (directory / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        load_model(directory)
    (directory / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="vocab.json: missing"):
        load_model(directory)


def test_vocabulary_of_another_size_is_reported(saved):
    directory, _, _ = saved
    config = json.loads((directory / "config.json").read_text())
    config["decoder"]["vocab_size"] = 64
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="vocabulary has 320 rows but the config says decoder.vocab_size=64"):
        load_model(directory)


def test_local_vision_weights_file_is_loaded(tmp_path):
    from safetensors.torch import save_file

    from vlm.model.vision_encoder import VisionEncoder

    config = get_preset("tiny").vision
    source = VisionEncoder(config)
    save_file({k: v.contiguous() for k, v in source.vit.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    config.weights_file = str(tmp_path / "vit.safetensors")
    loaded = VisionEncoder(config)
    for name, tensor in source.vit.state_dict().items():
        assert torch.equal(loaded.vit.state_dict()[name], tensor), name
    config.weights_file = str(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.safetensors' does not exist"):
        VisionEncoder(config)


def test_frozen_encoder_has_no_trainable_parameters():
    config = get_preset("tiny").vision
    config.freeze = True
    from vlm.model.vision_encoder import VisionEncoder

    assert not any(p.requires_grad for p in VisionEncoder(config).parameters())
