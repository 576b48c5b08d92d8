"""The vision-language model: image -> encoder -> projector -> [image tokens; text tokens] -> decoder -> logits.

Image tokens sit in front of the text, so every text token can attend to the whole image. The loss covers only
target tokens (the caption or the answer, and its end token); image, prompt and padding positions never count.
The output layer runs only over the positions that predict a target, which is most of the saving on a CPU, and the
training pass runs the decoder's per-token layers over real tokens only, not padding (`target_hidden_states`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vlm.model import masks
from vlm.model.config import VLMConfig
from vlm.model.decoder import Decoder, KVCache
from vlm.model.projector import Projector
from vlm.model.vision_encoder import VisionEncoder

if TYPE_CHECKING:
    from vlm.model.tokenizer import Tokenizer

F_ = TypeVar("F_", bound=Callable)


def cpu_math_attention(method: F_) -> F_:
    """Run `method` with the math attention backend when its first tensor argument lives on the CPU and gradients
    are being recorded.

    PyTorch's fused CPU attention kernel (flash) is built for long sequences; at our 16-100 positions its backward
    pass is the slow part of a training step, and matmul + softmax runs the whole step faster. Its forward pass
    alone is the faster one, most of all for a decoding step's single query, so inference keeps it, as GPUs keep
    their fused kernels (docs/performance.md, "Attention: the fused kernel at inference, the math backend in
    training").
    """

    @functools.wraps(method)
    def wrapper(self, first: torch.Tensor, *args, **kwargs):
        if first.device.type != "cpu" or not torch.is_grad_enabled():
            return method(self, first, *args, **kwargs)
        with sdpa_kernel(SDPBackend.MATH):
            return method(self, first, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class DecodingState:
    """What a generation loop carries between steps; `select` follows beams."""

    cache: KVCache
    # (B, cache max_len) True for real tokens, generated slots always True; None where no prompt was padded, so that
    # a decoding step builds and applies no mask (its one query attends to every slot).
    key_valid: torch.Tensor | None
    next_position: torch.Tensor  # (B,) position id of the next token

    def select(self, batch_indices: torch.Tensor) -> None:
        self.cache.select(batch_indices)
        if self.key_valid is not None:
            self.key_valid = self.key_valid.index_select(0, batch_indices)
        self.next_position = self.next_position.index_select(0, batch_indices)


# The three parts, by the names training uses to freeze them (TrainConfig.freeze).
PARTS = ("encoder", "projector", "decoder")


class VisionLanguageModel(nn.Module):
    """load_encoder_weights: a pretrained encoder's weights are loaded while building (see VisionEncoder); off
    where every weight comes from elsewhere (a saved model, a resumed run)."""

    def __init__(self, config: VLMConfig, load_encoder_weights: bool = True):
        super().__init__()
        config.validate()
        self.config = config
        self.vision_encoder = VisionEncoder(config.vision, load_encoder_weights)
        self.projector = Projector(config.projector, config.vision.width, config.decoder.width)
        # The decoder's positions follow from the image tokens and the text length, unless an older config fixed them.
        self.decoder = Decoder(dataclasses.replace(config.decoder, max_positions=config.max_positions))
        assert self.vision_encoder.num_patches // config.projector.reduction**2 == config.num_image_tokens

    # Hugging Face conventions (vlm/model/hub.py): a model folder or a Hub repo id in, a folder or a repo out.
    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, device: str | torch.device = "cpu") -> VisionLanguageModel:
        """The model in a model folder or a Hub repo (owner/name); its tokenizer: `Tokenizer.from_pretrained`."""
        from vlm.model.checkpoint import load_model

        return load_model(name_or_dir, device)[0].eval()

    def save_pretrained(self, directory: str | Path, tokenizer: Tokenizer, run_dir: str | Path | None = None) -> Path:
        """A model folder with a README.md model card (the evaluations of `run_dir`, the training run, if given)."""
        from vlm.model.hub import save_pretrained

        return save_pretrained(self, tokenizer, directory, run_dir)

    def push_to_hub(
        self,
        repo_id: str,
        tokenizer: Tokenizer,
        run_dir: str | Path | None = None,
        private: bool | None = None,
        token: str | None = None,
    ) -> str:
        """Upload the model folder and its card to the Hub repo `repo_id` (needs huggingface_hub and a login)."""
        from vlm.model.hub import push_to_hub

        return push_to_hub(self, tokenizer, repo_id, run_dir, private, token)

    def part(self, name: str) -> nn.Module:
        """One of PARTS: "encoder", "projector" or "decoder"."""
        if name not in PARTS:
            raise ValueError(f"no model part {name!r}; the parts are {', '.join(PARTS)}")
        return {"encoder": self.vision_encoder, "projector": self.projector, "decoder": self.decoder}[name]

    @property
    def num_image_tokens(self) -> int:
        return self.config.num_image_tokens

    @property
    def num_prefix(self) -> int:
        """Slots that attend bidirectionally: the image tokens under prefix-LM, none otherwise."""
        return self.num_image_tokens if self.config.prefix_lm else 0

    @cpu_math_attention
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N_img, D) image tokens in the decoder's embedding space. A frozen encoder (no
        parameter to train) runs without recording its graph: no memory held for a backward pass it would not use."""
        if any(p.requires_grad for p in self.vision_encoder.parameters()):
            return self.projector(self.vision_encoder(images))
        with torch.no_grad():
            patches = self.vision_encoder(images)  # (B, N, Dv)
        return self.projector(patches)

    def _embed(self, image_tokens: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        text_embeddings = self.decoder.embed_tokens(input_ids)  # (B, T, D)
        return torch.cat([image_tokens.to(text_embeddings.dtype), text_embeddings], dim=1)  # (B, N_img + T, D)

    @cpu_math_attention
    def text_hidden_states(
        self,
        image_tokens: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        attention_weights: list[torch.Tensor] | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states of the text positions, (B, T, D). Any padding layout is accepted; right padding (what
        `collate` makes) takes the fast path of a fixed causal or prefix mask with no per-row mask. Packed rows
        (`segment_ids`, right-padded) keep their texts apart (see vlm/data/packing.py). A list passed as
        `attention_weights` receives each decoder layer's (B, H, N_img + T, N_img + T) weights (see vlm/inference/attention_maps.py)."""
        num_text = input_ids.shape[1]
        positions, mask = self._layout(input_ids, attention_mask, segment_ids)
        # Only text positions leave the decoder, so its last block skips the image tokens; attention maps need every
        # layer's full (slots x slots) weights, so they keep them.
        num_outputs = num_text if attention_weights is None else None
        hidden = self.decoder.forward_features(
            self._embed(image_tokens, input_ids),
            positions,
            mask,
            attention_weights=attention_weights,
            num_outputs=num_outputs,
        )
        return hidden[:, -num_text:]  # (B, T, D)

    def _layout(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, segment_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Position ids (B or 1, S) and attention mask (B or 1, 1, S, S; None: plain causal) of [image; text]."""
        batch, num_text = input_ids.shape
        num_slots = self.num_image_tokens + num_text
        if segment_ids is not None:
            positions = masks.packed_position_ids(segment_ids, self.num_image_tokens)
            mask = masks.packed_attention_mask(segment_ids, self.num_image_tokens, self.num_prefix)
        elif attention_mask is None or masks.is_right_padded(attention_mask):
            positions = torch.arange(num_slots, device=input_ids.device).unsqueeze(0)
            mask = (
                masks.prefix_attention_mask(num_slots, self.num_prefix, input_ids.device) if self.num_prefix else None
            )
        else:
            key_valid = torch.cat([attention_mask.new_ones(batch, self.num_image_tokens), attention_mask], dim=1)
            positions = masks.position_ids(key_valid)
            mask = masks.attention_mask(key_valid, num_slots, self.num_prefix)
        return positions, mask

    @cpu_math_attention
    def target_hidden_states(
        self,
        image_tokens: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        predicts: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states of the positions that predict a target (`predicts`, (B, T)): the first n_targets rows
        of the (n_targets', D) result equal `text_hidden_states(...)[predicts]`, without the work for padding and for
        the positions no loss reads; the rows after them are to be ignored (`Decoder.forward_rows`: row counts are
        rounded up so that batches share a few shapes)."""
        positions, mask = self._layout(input_ids, attention_mask, segment_ids)
        image_slots = attention_mask.new_ones(input_ids.shape[0], self.num_image_tokens)
        valid = torch.cat([image_slots, attention_mask], dim=1).bool()  # (B, S)
        outputs = torch.cat([torch.zeros_like(image_slots), predicts], dim=1).bool()  # (B, S)
        return self.decoder.forward_rows(self._embed(image_tokens, input_ids), positions, mask, valid, outputs)

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        target_mask: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
        per_sample: bool = False,
    ) -> torch.Tensor:
        """Mean cross-entropy over target tokens. images (B, 3, H, W); the rest (B, T) as made by `collate`.
        per_sample: average each sample's tokens first, then the samples, so that a one-word answer weighs as much as
        a twenty-token caption rather than a twentieth of it (a packed row counts as one sample)."""
        predicts = masks.prediction_mask(target_mask & attention_mask)  # (B, T)
        targets = input_ids[:, 1:][predicts[:, :-1]]  # (n_targets,)
        hidden = self.target_hidden_states(self.encode_images(images), input_ids, attention_mask, predicts, segment_ids)
        logits = self.decoder.forward_head(hidden)[: len(targets)]  # (n_targets, V)
        if not per_sample:
            return F.cross_entropy(logits.float(), targets)
        token_losses = F.cross_entropy(logits.float(), targets, reduction="none")  # (n_targets,)
        counts = predicts.sum(1)  # (B,) targets of each sample
        return (token_losses / counts[:, None].expand_as(predicts)[predicts]).sum() / (counts > 0).sum()

    def logits(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, V) logits at every text position, recomputed from scratch (no cache)."""
        return self.decoder.forward_head(self.text_hidden_states(self.encode_images(images), input_ids, attention_mask))

    # Incremental decoding. Prompts are LEFT-padded so that every row's next token lands in the same slot;
    # padding is masked out of attention and skipped by the position ids, so a row decodes as it would alone.
    @cpu_math_attention
    def prefill(
        self, image_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int
    ) -> tuple[torch.Tensor, DecodingState]:
        """Run image + prompt through the decoder once, filling a cache. Returns next-token logits (B, V) and the state."""
        batch, num_text = input_ids.shape
        if not bool(attention_mask[:, -1].all()):
            raise ValueError("prefill expects left-padded prompts: the last column must be a real token in every row")
        num_slots = self.num_image_tokens + num_text
        cache = self.decoder.new_cache(num_slots + max_new_tokens)
        key_valid = torch.cat([attention_mask.new_ones(batch, self.num_image_tokens), attention_mask.bool()], dim=1)
        positions = masks.position_ids(key_valid)
        mask = masks.attention_mask(key_valid, num_slots, self.num_prefix)
        # Only the last position's output is read: the last block computes its query and MLP alone (the cache still
        # gets every position's keys and values).
        hidden = self.decoder.forward_features(
            self._embed(image_tokens, input_ids), positions, mask, cache, num_outputs=1
        )
        state = DecodingState(
            cache=cache,
            key_valid=None
            if bool(attention_mask.all())
            else torch.cat([key_valid, key_valid.new_ones(batch, max_new_tokens)], dim=1),
            next_position=positions[:, -1] + 1,
        )
        return self.decoder.forward_head(hidden[:, -1]), state

    @cpu_math_attention
    def decode_step(self, token_ids: torch.Tensor, state: DecodingState) -> torch.Tensor:
        """Feed one token per row (B,), reusing the cache: costs one position. Returns next-token logits (B, V)."""
        seen = state.cache.length + 1
        # (B, 1, 1, seen): all earlier slots, padding excluded
        mask = None if state.key_valid is None else state.key_valid[:, None, None, :seen]
        hidden = self.decoder.step(token_ids, state.next_position, state.cache, mask)  # (B, D)
        state.next_position = state.next_position + 1
        return self.decoder.forward_head(hidden)
