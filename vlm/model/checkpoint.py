"""A model directory: weights as safetensors, the config as JSON and the vocabulary. Never pickle.

Every file is written to a temporary name and renamed into place, so a crash mid-save never leaves a torn file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vlm.model.config import VLMConfig
from vlm.model.tokenizer import VOCAB_FILE, Tokenizer
from vlm.model.vision_language_model import VisionLanguageModel

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A model directory that cannot be loaded; the message says which file and why."""


def write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def save_model(directory: str | Path, model: VisionLanguageModel, tokenizer: Tokenizer) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    temporary = directory / (WEIGHTS_FILE + ".tmp")
    save_file(weights, str(temporary), metadata={"format": "pt"})
    os.replace(temporary, directory / WEIGHTS_FILE)
    write_atomic(directory / CONFIG_FILE, (json.dumps(model.config.to_dict(), indent=2) + "\n").encode())
    tokenizer.save(directory)


def load_model(name_or_dir: str | Path, device: str | torch.device = "cpu") -> tuple[VisionLanguageModel, Tokenizer]:
    """Rebuild the model from its config and load its weights; every mismatch is reported by name and shape.
    name_or_dir: a model folder, or a Hugging Face Hub repo id (owner/name) that resolves to one."""
    from vlm.model.hub import resolve_model_folder  # hub.py builds on this module

    directory = resolve_model_folder(name_or_dir)
    for name in (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(
                f"{directory / name}: missing; a model folder holds {WEIGHTS_FILE}, {CONFIG_FILE} and {VOCAB_FILE}"
            )
    try:
        config = VLMConfig.from_json(directory / CONFIG_FILE)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {error}") from None
    tokenizer = Tokenizer.load(directory)
    if tokenizer.vocab_size != config.decoder.vocab_size:
        raise CheckpointError(
            f"{directory}: the vocabulary has {tokenizer.vocab_size} rows but the config says decoder.vocab_size="
            f"{config.decoder.vocab_size}"
        )
    model = VisionLanguageModel(config, load_encoder_weights=False)  # the encoder's weights are in the checkpoint
    try:
        weights = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: not a readable safetensors file ({error})") from None
    check_weights_fit(model.state_dict(), weights, directory / WEIGHTS_FILE)
    model.load_state_dict(weights)
    return model.to(device), tokenizer


def check_weights_fit(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: Path) -> None:
    for name, tensor in expected.items():
        if name not in found:
            raise CheckpointError(
                f"{source}: tensor {name!r} is missing (the config expects shape {tuple(tensor.shape)})"
            )
        if found[name].shape != tensor.shape:
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(found[name].shape)} in the file but "
                f"{tuple(tensor.shape)} in the model built from its config"
            )
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: tensors not in the model built from its config: {unexpected[:5]}")
