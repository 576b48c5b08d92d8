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


@dataclass
class Initialization:
    """What a new run starts from: the model's config (vocab_size set to the extended vocabulary's), the extended
    tokenizer, and the weights with the new embedding rows added."""

    config: VLMConfig
    tokenizer: Tokenizer
    weights: dict[str, torch.Tensor]
    added_tokens: int


def initialization_from(model_dir: str | Path, texts: Iterable[str]) -> Initialization:
    """The model in `model_dir`, its vocabulary extended with the BPE tokens of `texts` it lacks."""
    model_dir = Path(model_dir)
    model, old_tokenizer = load_model(model_dir)  # checks every file and shape, errors naming them
    tokenizer = old_tokenizer.extend(texts)
    config = VLMConfig.from_json(model_dir / CONFIG_FILE)
    config.vision.weights_file = None  # the encoder's weights come from the model
    config.decoder.vocab_size = tokenizer.vocab_size
    weights = model.state_dict()
    if EMBEDDING not in weights:
        raise CheckpointError(f"{model_dir / WEIGHTS_FILE}: no {EMBEDDING!r} to extend")
    weights[EMBEDDING] = extend_embedding(weights[EMBEDDING], old_tokenizer, tokenizer)
    return Initialization(config, tokenizer, weights, tokenizer.num_tokens - old_tokenizer.num_tokens)


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
