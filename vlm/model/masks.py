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


def packed_attention_mask(segment_ids: torch.Tensor, num_image: int, num_prefix: int) -> torch.Tensor:
    """(B, 1, N_img + T, N_img + T) mask of packed rows: each text (a run of equal `segment_ids`, (B, T)) sees the
    image tokens and its own earlier tokens, never another text; image tokens are as in `attention_mask`."""
    batch, num_text = segment_ids.shape
    image_segment = segment_ids.new_full((batch, num_image), -2)  # no text has this id
    slots = torch.cat([image_segment, segment_ids], dim=1)  # (B, S)
    layout = prefix_attention_mask(num_image + num_text, num_prefix, segment_ids.device)  # (1, 1, S, S)
    same_text = slots[:, :, None] == slots[:, None, :]  # (B, S, S)
    key_is_image = torch.arange(num_image + num_text, device=segment_ids.device) < num_image
    return layout & (same_text | key_is_image)[:, None]


def packed_position_ids(segment_ids: torch.Tensor, num_image: int) -> torch.Tensor:
    """(B, N_img + T) positions of packed rows: image tokens 0..N_img-1, and every text starts again at N_img, as if
    it followed the image alone."""
    batch, num_text = segment_ids.shape
    slot = torch.arange(num_text, device=segment_ids.device).expand(batch, num_text)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    segment_start = torch.where(starts, slot, torch.zeros_like(slot)).cummax(dim=1).values
    text_positions = (num_image + slot - segment_start).masked_fill(segment_ids < 0, 0)  # padding: any valid position
    image_positions = torch.arange(num_image, device=segment_ids.device).expand(batch, num_image)
    return torch.cat([image_positions, text_positions], dim=1)


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
