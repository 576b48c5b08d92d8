"""Pure functions for the sequence layout [image tokens; text tokens]: attention masks, positions, loss targets."""

from __future__ import annotations

import torch


def attention_mask(key_valid: torch.Tensor, num_queries: int, num_prefix: int = 0) -> torch.Tensor:
    """Boolean mask (B, 1, Tq, Tk), True where a query may attend to a key.

    key_valid: (B, Tk) True for real tokens, False for padding. The queries are the last `num_queries` slots.
    A query sees valid keys at or before its slot; with `num_prefix` > 0 the first `num_prefix` slots (the image
    tokens) also see each other in both directions (prefix-LM), while text stays causal.
    """
    num_keys = key_valid.shape[1]
    key_slots = torch.arange(num_keys, device=key_valid.device)
    query_slots = key_slots[num_keys - num_queries :]
    allowed = key_slots[None, :] <= query_slots[:, None]  # (Tq, Tk)
    if num_prefix:
        allowed = allowed | ((query_slots[:, None] < num_prefix) & (key_slots[None, :] < num_prefix))
    return allowed[None, None] & key_valid[:, None, None, :]  # (B, 1, Tq, Tk)


def prefix_attention_mask(num_slots: int, num_prefix: int, device: torch.device | None = None) -> torch.Tensor:
    """The (1, 1, T, T) prefix-LM mask of an unpadded sequence (training: padding sits only at the right end,
    after every real token, so causality alone already hides it)."""
    return attention_mask(torch.ones(1, num_slots, dtype=torch.bool, device=device), num_slots, num_prefix)


def position_ids(key_valid: torch.Tensor) -> torch.Tensor:
    """(B, T) positions that count only real tokens, so a left-padded row gets the positions it would have unpadded."""
    return (key_valid.long().cumsum(dim=1) - 1).clamp(min=0)


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """True if every row is real tokens followed only by padding."""
    return bool((attention_mask[:, :-1] >= attention_mask[:, 1:]).all())


def prediction_mask(target_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) True at the positions whose *next* token is a target: position t predicts token t + 1."""
    mask = torch.zeros_like(target_mask)
    mask[:, :-1] = target_mask[:, 1:]
    return mask
