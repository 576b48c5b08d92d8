"""Starting a new run from a trained model (`vlm-train --init-from MODEL_DIR`): its config and weights, with its
vocabulary extended by the new data's tokens. Every old token keeps its id and its embedding row (which is also its
output row: the output layer is tied to the embedding), so the model reads and writes its old text exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from vlm.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, load_model
from vlm.model.config import VLMConfig
from vlm.model.tokenizer import SPECIAL_TOKENS, Tokenizer

EMBEDDING = "decoder.token_embedding.weight"  # (vocab rows, width); the output layer reads the same matrix


def model_config_of(model_dir: str | Path) -> VLMConfig:
    """The config a run from `model_dir` builds its model with (before the vocabulary's extension)."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{model_dir}: no {CONFIG_FILE}; a model folder is a run's model/")
    try:
        config = VLMConfig.from_json(path)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: {error}") from None
    config.vision.weights_file = None  # the encoder's weights come from the model, not from the file it began with
    return config


@dataclass
class Initialization:
    """What a new run starts from: the extended tokenizer, and the model's weights with the new embedding rows."""

    tokenizer: Tokenizer
    weights: dict[str, torch.Tensor]


def initialization_from(model_dir: str | Path, texts: Iterable[str]) -> Initialization:
    """The model in `model_dir`, its vocabulary extended with the BPE tokens of `texts` it lacks."""
    model, old_tokenizer = load_model(model_dir)  # checks every file and shape, errors naming them
    tokenizer = old_tokenizer.extend(texts)
    weights = model.state_dict()
    if EMBEDDING not in weights:
        raise CheckpointError(f"{Path(model_dir) / WEIGHTS_FILE}: no {EMBEDDING!r} to extend")
    weights[EMBEDDING] = extend_embedding(weights[EMBEDDING], old_tokenizer, tokenizer)
    return Initialization(tokenizer, weights)


def extend_embedding(embedding: torch.Tensor, old: Tokenizer, new: Tokenizer) -> torch.Tensor:
    """(old rows, D) -> (new.vocab_size, D): the old tokens' rows unchanged, each new token's row the mean of the
    rows of the bytes the old vocabulary spelled it with (so it starts near what the model read for that text);
    the padding rows beyond the tokens are zero (never produced, never read)."""
    assert new.bpe_ids[: len(old.bpe_ids)] == old.bpe_ids, "an extended vocabulary keeps the old ids in place"
    extended = embedding.new_zeros(new.vocab_size, embedding.shape[1])
    extended[: old.num_tokens] = embedding[: old.num_tokens]
    offset = len(SPECIAL_TOKENS)
    for model_id in range(old.num_tokens, new.num_tokens):
        spelling = old.encode_bytes(new.encoding.decode_single_token_bytes(new.bpe_ids[model_id - offset]))
        extended[model_id] = embedding[spelling].mean(dim=0)
    return extended
