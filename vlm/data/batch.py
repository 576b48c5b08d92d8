"""Examples -> padded batches: token ids for prompt + target, and the masks the model needs.

One example is an image with a prompt (a question, or none for a caption) and a target text, or, packed, an image
with several of them one after another (`segment_ids` says which text each token belongs to). In a batch, text is
right-padded to the longest row; `attention_mask` marks real tokens and `target_mask` the tokens the loss is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlm.model.tokenizer import Tokenizer


@dataclass
class EncodedExample:
    image: torch.Tensor  # (3, H, W), normalised
    input_ids: torch.Tensor  # (T,) prompt then target then end token
    target_mask: torch.Tensor  # (T,) True on the target tokens and the end token
    segment_ids: torch.Tensor | None = None  # (T,) packed: which text (0, 1, ...) each token belongs to


def encode_text(
    tokenizer: Tokenizer, question: str | None, target: str, max_len: int, given: str = ""
) -> tuple[list[int], list[bool]]:
    """Token ids of prompt + given + target + end, and which of them are targets (the target and the end), fitted
    into `max_len` tokens. `given` is text the model reads after the prompt and is not trained to write.

    A caption that does not fit is cut (the end token is kept, so the model still learns to stop); a question
    that leaves no room for at least one target token is cut from its start, keeping the answer marker.
    """
    prompt = tokenizer.prompt(question) + (tokenizer.encode(given) if given else [])
    target_ids = tokenizer.encode(target)
    room_for_prompt = max_len - 2  # at least one target token and the end token
    if len(prompt) > room_for_prompt:
        if room_for_prompt < 3:
            raise ValueError(f"max_len={max_len} leaves no room for a prompt")
        head = prompt[:2]  # begin + task token
        prompt = head + prompt[len(prompt) - (room_for_prompt - 2) :]
    target_ids = target_ids[: max_len - len(prompt) - 1] + [tokenizer.eos_id]
    ids = prompt + target_ids
    return ids, [False] * len(prompt) + [True] * len(target_ids)


def encode_example(
    tokenizer: Tokenizer, image: torch.Tensor, question: str | None, target: str, max_len: int, given: str = ""
) -> EncodedExample:
    ids, is_target = encode_text(tokenizer, question, target, max_len, given)
    return EncodedExample(image, torch.tensor(ids, dtype=torch.long), torch.tensor(is_target, dtype=torch.bool))


def encode_packed(
    tokenizer: Tokenizer,
    image: torch.Tensor,
    texts: list[tuple[str | None, str]],
    max_len: int,
    max_packed_len: int,
) -> EncodedExample:
    """Several (question, target) pairs about one image, one after another, each fitted into `max_len` tokens as
    `encode_text` does. Whole texts are added in order while they fit in `max_packed_len` tokens (the first always)."""
    ids: list[int] = []
    is_target: list[bool] = []
    segments: list[int] = []
    for segment, (question, target) in enumerate(texts):
        text_ids, text_is_target = encode_text(tokenizer, question, target, max_len)
        if segment and len(ids) + len(text_ids) > max_packed_len:
            break
        ids += text_ids
        is_target += text_is_target
        segments += [segment] * len(text_ids)
    return EncodedExample(
        image,
        torch.tensor(ids, dtype=torch.long),
        torch.tensor(is_target, dtype=torch.bool),
        torch.tensor(segments, dtype=torch.long),
    )


def collate(examples: list[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack images, right-pad text to the longest row. Returns images (B,3,H,W); input_ids, attention_mask,
    target_mask (B, T); and, if any example is packed, segment_ids (B, T) (-1 on padding, 0 for unpacked rows)."""
    longest = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.bool)
    target_mask = torch.zeros((len(examples), longest), dtype=torch.bool)
    packed = any(e.segment_ids is not None for e in examples)
    segment_ids = torch.full((len(examples), longest), -1, dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = example.input_ids
        attention_mask[row, :length] = True
        target_mask[row, :length] = example.target_mask
        segment_ids[row, :length] = 0 if example.segment_ids is None else example.segment_ids
    batch = {
        "images": torch.stack([e.image for e in examples]),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "target_mask": target_mask,
    }
    if packed:
        batch["segment_ids"] = segment_ids
    return batch


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts for generation, left-padded so that every row's next token lands in the same slot.
    Returns input_ids and attention_mask, (B, T)."""
    longest = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), longest), dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        input_ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, longest - len(prompt) :] = True
    return input_ids, attention_mask
