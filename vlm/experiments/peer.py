"""The benchmark's peer: a Hugging Face `VisionEncoderDecoderModel` (a ViT encoder and a GPT-2 decoder that reads the
image through cross-attention), built from configs with random weights and matched to one of our configs, plus the
adapter that trains it on our batches and generates with our token ids. Only `scripts/bench.py` uses it, so
`transformers` (the `bench` extra) is imported here and nowhere else.

Matching: the same ViT (image size, patch size, width, depth, heads) and a GPT-2 of our decoder's width, depth, heads
and vocabulary. Cross-attention and GPT-2's untied output layer add weights our model does not have; GPT-2's MLP
hidden width is narrowed to pay for them, so the two models have the same number of parameters. Where no width can
(the `default` preset's MLP is as wide as the stream, narrower than cross-attention alone), the peer keeps our MLP
width: every shape the two share is then the same, and the peer is the larger model (the benchmark prints both).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from vlm.inference.generate import GenerationConfig
from vlm.inference.predict import Predictor
from vlm.model.config import VLMConfig
from vlm.model.tokenizer import Tokenizer
from vlm.model.vision_language_model import VisionLanguageModel
from vlm.runtime import autocast
from vlm.training.loop import TrainConfig, optimizer_for_parts

IGNORE_INDEX = -100  # what Hugging Face's loss skips


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _hf_model(config: VLMConfig, tokenizer: Tokenizer, mlp_width: int, attn_implementation: str) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel, VisionEncoderDecoderModel, ViTConfig, ViTModel

    vision, decoder = config.vision, config.decoder
    encoder = ViTModel(
        ViTConfig(
            image_size=vision.image_size,
            patch_size=vision.patch_size,
            hidden_size=vision.width,
            num_hidden_layers=vision.depth,
            num_attention_heads=vision.heads,
            intermediate_size=round(vision.width * vision.mlp_ratio),
            attn_implementation=attn_implementation,
        ),
        add_pooling_layer=False,  # the pooled output is never used; its weights would only pad the count
    )
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=decoder.vocab_size,
            n_positions=config.max_text_len,  # text only: the image arrives through cross-attention
            n_embd=decoder.width,
            n_layer=decoder.depth,
            n_head=decoder.heads,
            n_inner=mlp_width,
            # GPT-2 defaults to 0.1 dropout everywhere; ours has config.decoder.dropout (0 in every preset).
            resid_pdrop=decoder.dropout,
            embd_pdrop=decoder.dropout,
            attn_pdrop=decoder.dropout,
            add_cross_attention=True,
            bos_token_id=tokenizer.bos_id,
            eos_token_id=tokenizer.eos_id,
            pad_token_id=tokenizer.pad_id,
            attn_implementation=attn_implementation,
        )
    )
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=gpt2)
    model.config.decoder_start_token_id = tokenizer.bos_id
    model.config.pad_token_id = tokenizer.pad_id
    model.config.eos_token_id = tokenizer.eos_id
    return model


def matched_mlp_width(config: VLMConfig, tokenizer: Tokenizer, attn_implementation: str = "sdpa") -> int:
    """GPT-2's MLP hidden width that gives the peer as many parameters as `VisionLanguageModel(config)`, or our own
    MLP width where no width can (see the module's docstring)."""
    with torch.device("meta"):  # shapes only: counting parameters allocates nothing
        ours = parameter_count(VisionLanguageModel(config))
        usual = round(config.decoder.width * config.decoder.mlp_ratio)
        peer = parameter_count(_hf_model(config, tokenizer, usual, attn_implementation))
    # Each unit of MLP width is a row of the up projection, its bias, and a column of the down projection.
    per_unit = config.decoder.depth * (2 * config.decoder.width + 1)
    narrowed = usual - round((peer - ours) / per_unit)
    return narrowed if narrowed >= 1 else usual


class PeerModel(nn.Module):
    """The Hugging Face model behind our interface: `forward(**batch)` is the loss on target tokens of a batch from
    `vlm.data.batch.collate`, and `config` is the `VLMConfig` it is matched to (image size, text length)."""

    def __init__(self, config: VLMConfig, tokenizer: Tokenizer, attn_implementation: str = "sdpa"):
        super().__init__()
        if config.decoder.vocab_size != tokenizer.vocab_size:
            raise ValueError(
                f"config.decoder.vocab_size={config.decoder.vocab_size} differs from the tokenizer's "
                f"{tokenizer.vocab_size}; set it from the tokenizer first"
            )
        self.config = copy.deepcopy(config)
        self.mlp_width = matched_mlp_width(config, tokenizer, attn_implementation)
        self.hf = _hf_model(config, tokenizer, self.mlp_width, attn_implementation)
        self.eos_id, self.pad_id = tokenizer.eos_id, tokenizer.pad_id

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        target_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Mean cross-entropy over target tokens, through Hugging Face's own loss: the decoder reads ids[:-1] and
        its labels are ids[1:], with everything that is not a target (prompt, padding) set to -100."""
        is_target = (target_mask & attention_mask)[:, 1:]  # (B, T - 1): the token each position predicts
        labels = input_ids[:, 1:].masked_fill(~is_target, IGNORE_INDEX)
        output = self.hf(
            pixel_values=images,
            decoder_input_ids=input_ids[:, :-1],
            decoder_attention_mask=attention_mask[:, :-1].long(),
            labels=labels,
        )
        return output.loss

    def generate_ids(
        self,
        images: torch.Tensor,
        prompts: Sequence[Sequence[int]],
        config: GenerationConfig,
        image_index: Sequence[int] | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> list[list[int]]:
        """New token ids per prompt (end token not included), by Hugging Face's `generate`, with the prompt as the
        decoder's prefix. Each image is encoded once. Prompts are grouped by length rather than padded: GPT-2 in
        `transformers` takes padded decoder prefixes only with position ids it does not make for itself."""
        from transformers.modeling_outputs import BaseModelOutput

        config.validate()
        if not prompts:
            return []
        device = images.device
        image_index = list(range(len(prompts))) if image_index is None else list(image_index)
        amp = autocast(device, autocast_dtype)
        options = {
            "max_new_tokens": config.max_new_tokens,
            "min_new_tokens": config.min_new_tokens,
            "use_cache": config.use_cache,
            "eos_token_id": self.eos_id,
            "pad_token_id": self.pad_id,
            "num_beams": config.num_beams if config.strategy == "beam" else 1,
            "length_penalty": config.length_penalty,
            "do_sample": config.strategy == "sample",
        }
        if config.strategy == "sample":
            options.update(temperature=config.temperature, top_k=config.top_k or None, top_p=config.top_p)
        outputs: list[list[int]] = [[] for _ in prompts]
        with torch.no_grad(), amp:
            patches = self.hf.encoder(pixel_values=images).last_hidden_state  # (N_images, 1 + N, Dv)
            by_length: dict[int, list[int]] = {}
            for row, prompt in enumerate(prompts):
                by_length.setdefault(len(prompt), []).append(row)
            for length, rows in by_length.items():
                which = torch.tensor([image_index[r] for r in rows], device=device)
                prompt_ids = torch.tensor([list(prompts[r]) for r in rows], device=device)  # (n, length)
                sequences = self.hf.generate(
                    encoder_outputs=BaseModelOutput(last_hidden_state=patches.index_select(0, which)),
                    decoder_input_ids=prompt_ids,
                    decoder_attention_mask=torch.ones_like(prompt_ids),  # no padding: rows were grouped by length
                    **options,
                )  # (n, length + new tokens): the prompt comes back in front
                for row, ids in zip(rows, sequences[:, length:].tolist()):
                    outputs[row] = ids[: ids.index(self.eos_id)] if self.eos_id in ids else ids
        return outputs


def peer_generate(
    model: PeerModel,
    images: torch.Tensor,
    prompts: Sequence[Sequence[int]],
    eos_id: int,
    pad_id: int,
    config: GenerationConfig | None = None,
    image_index: Sequence[int] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> list[list[int]]:
    """`vlm.inference.generate.generate`'s signature for the peer, so the generation benchmark times both the same way."""
    assert (eos_id, pad_id) == (model.eos_id, model.pad_id), "the peer was built with other special tokens"
    return model.generate_ids(images, prompts, config or GenerationConfig(), image_index, autocast_dtype)


class PeerPredictor(Predictor):
    """`Predictor` (image loading, prompts, batching) over the peer, so `vlm.evaluation.evaluate` scores it like our model."""

    def generate_ids(
        self, image_batch: torch.Tensor, prompts: list[list[int]], image_index: list[int], config: GenerationConfig
    ) -> list[list[int]]:
        room = self.max_text_len - max(len(p) for p in prompts)  # GPT-2's positions hold the text alone
        config = dataclasses.replace(config, max_new_tokens=min(config.max_new_tokens, room))
        return self.model.generate_ids(image_batch, prompts, config, image_index, self.autocast_dtype)


def build_peer_optimizer(model: PeerModel, config: TrainConfig, fused: bool = True) -> torch.optim.Optimizer:
    """The optimizer exactly as `vlm.training.loop.build_optimizer` sets it up for our model: the encoder, the layer between
    encoder and decoder, and the decoder at their parts' learning rates, Muon or AdamW as `config.optimizer` says."""
    hf = model.hf
    lrs = {"encoder": config.lr_encoder, "enc_to_dec_proj": config.lr_projector, "decoder": config.lr_decoder}
    # no enc_to_dec_proj when encoder and decoder have the same width
    parts = [(getattr(hf, part), lr) for part, lr in lrs.items() if hasattr(hf, part)]
    optimizer = optimizer_for_parts(parts, config, fused)
    grouped = sum(len(g["params"]) for g in optimizer.param_groups)
    assert grouped == len(list(model.parameters())), "a peer parameter has no group"
    return optimizer
