"""The language model: a decoder-only GPT Transformer with a key/value cache.

Pre-LayerNorm blocks, attention through `scaled_dot_product_attention`, learned position embeddings, and an output
layer tied to the token embedding (no bias). The decoder takes embeddings rather than token ids so that image tokens
can be placed in front of the text (see `vlm/model/vision_language_model.py`).

The reference path (`Decoder.forward_features` over the padded grid) reads whole from the top; the fast paths that
compute the same thing for less work (a one-token decoding step, training's pass over real tokens only) follow it in
one section at the end, each tested equal to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlm.model.config import DecoderConfig


class KVCache:
    """Keys and values of every layer for positions seen so far, so one more token costs one position.

    Storage is allocated once for `max_len` positions, on the first write, in the dtype the layers produce
    (bfloat16 under autocast), so decoding never reallocates.
    """

    def __init__(self, num_layers: int, max_len: int):
        self.num_layers = num_layers
        self.max_len = max_len
        self.length = 0
        self.keys: torch.Tensor | None = None  # (L, B, H, max_len, hd)
        self.values: torch.Tensor | None = None

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values (B, H, T, hd) for `layer`; return all of them so far (B, H, length + T, hd)."""
        batch, heads, steps, head_dim = keys.shape
        if self.keys is None:
            shape = (self.num_layers, batch, heads, self.max_len, head_dim)
            self.keys = keys.new_empty(shape)
            self.values = values.new_empty(shape)
        end = self.length + steps
        if end > self.max_len:
            raise ValueError(f"sequence of {end} positions exceeds the cache's {self.max_len}")
        # narrow/copy_ rather than indexing with a tuple of slices: a decoding step calls this once a layer, and at
        # batch 1 a step is dispatch-bound.
        keys_so_far = self.keys[layer].narrow(2, 0, end)  # (B, H, end, hd)
        values_so_far = self.values[layer].narrow(2, 0, end)
        keys_so_far.narrow(2, self.length, steps).copy_(keys)
        values_so_far.narrow(2, self.length, steps).copy_(values)
        return keys_so_far, values_so_far

    def advance(self, steps: int) -> None:
        self.length += steps

    def select(self, batch_indices: torch.Tensor) -> None:
        """Keep/reorder batch rows (beam search): row i becomes old row batch_indices[i]."""
        if self.keys is not None:
            self.keys = self.keys.index_select(1, batch_indices)
            self.values = self.values.index_select(1, batch_indices)


def causal_mask(num_queries: int, num_keys: int, device: torch.device) -> torch.Tensor:
    """(Tq, Tk) True where a query may attend: queries are the last Tq of the Tk slots (bottom-right aligned)."""
    return torch.ones(num_queries, num_keys, dtype=torch.bool, device=device).tril(num_keys - num_queries)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd)) written out, (B, H, Tq, Tk), under the same mask convention as the fused call
    (None: causal). Only for looking at the weights (attention maps): the fused kernel never materialises them,
    so the normal path stays fast. No dropout: weights are inspected in eval mode."""
    num_queries, num_keys = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if attn_mask is None:
        attn_mask = causal_mask(num_queries, num_keys, q.device)
    return scores.float().masked_fill(~attn_mask, -torch.inf).softmax(dim=-1).to(q.dtype)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer: int = 0,
        attention_weights: list[torch.Tensor] | None = None,
        num_queries: int | None = None,
    ) -> torch.Tensor:
        """(B, T, D) -> (B, Tq, D), the outputs of the last Tq = `num_queries` positions (default: all T); keys and
        values always cover every position. attention_weights: a list to append this layer's (B, H, Tq, Tk) softmax
        weights to (see `explicit_attention`)."""
        batch, steps, width = x.shape
        head_dim = width // self.heads
        if num_queries is None or num_queries == steps:
            num_queries = steps
            # (B, T, 3D) -> (3, B, H, T, hd)
            q, k, v = self.qkv(x).view(batch, steps, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        else:
            # Queries for the wanted positions only; keys and values for all: rows of one weight matrix.
            q = F.linear(x[:, -num_queries:], self.qkv.weight[:width], self.qkv.bias[:width])
            q = q.view(batch, num_queries, self.heads, head_dim).transpose(1, 2)  # (B, H, Tq, hd)
            kv = F.linear(x, self.qkv.weight[width:], self.qkv.bias[width:])  # (B, T, 2D)
            k, v = kv.view(batch, steps, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)  # (2, B, H, T, hd)
            attn_mask = (
                causal_mask(num_queries, steps, x.device) if attn_mask is None else attn_mask[..., -num_queries:, :]
            )
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, Tk, hd), Tk = cached + T
        if attention_weights is not None:
            weights = explicit_attention(q, k, attn_mask)
            attention_weights.append(weights)
            y = weights @ v  # (B, H, Tq, hd)
        else:
            y = self._attend(q, k, v, attn_mask)  # (B, H, Tq, hd)
        return self.out(y.transpose(1, 2).reshape(batch, num_queries, width))

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        # With no mask the sequence is plain causal (training), or one new query that sees every key (a decoding
        # step over unpadded rows). Several queries after cached keys always come with a mask, because is_causal
        # aligns the triangle to the top-left corner, which is wrong once queries start mid-sequence.
        is_causal = attn_mask is None and q.shape[-2] > 1
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Exact GELU, not GPT-2's tanh approximation: on CPUs PyTorch's erf kernel runs forward and backward faster
        # than the tanh one (the approximation dates from when erf was the slow one).
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.norm_attention = nn.LayerNorm(config.width)
        self.attention = SelfAttention(config.width, config.heads, config.dropout)
        self.norm_mlp = nn.LayerNorm(config.width)
        self.mlp = MLP(config.width, round(config.width * config.mlp_ratio), config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        attention_weights: list[torch.Tensor] | None = None,
        num_queries: int | None = None,
    ) -> torch.Tensor:
        """(B, T, D) -> (B, Tq, D): the last `num_queries` positions (default all) go on through the MLP."""
        attended = self.attention(self.norm_attention(x), attn_mask, cache, layer, attention_weights, num_queries)
        x = x[:, x.shape[1] - attended.shape[1] :] + attended  # (B, Tq, D)
        return x + self.mlp(self.norm_mlp(x))


class Decoder(nn.Module):
    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Embedding(config.max_positions, config.width)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(config.width)
        self.apply(self._init_weights)
        # GPT-2: scale the init of projections that write into the residual stream by depth, so its variance
        # does not grow with the number of blocks.
        for name, parameter in self.named_parameters():
            if name.endswith(("attention.out.weight", "mlp.down.weight")):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.depth))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def new_cache(self, max_len: int | None = None) -> KVCache:
        return KVCache(self.config.depth, max_len or self.config.max_positions)

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(token_ids)  # (B, T) -> (B, T, D)

    def forward_features(
        self,
        embeddings: torch.Tensor,
        position_ids: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attention_weights: list[torch.Tensor] | None = None,
        num_outputs: int | None = None,
    ) -> torch.Tensor:
        """(B, T, D) input embeddings -> (B, T, D) final hidden states. attn_mask: bool (B or 1, 1, T, Tk), True = attend.
        attention_weights: a list that receives each layer's (B, H, T, Tk) attention weights, computed explicitly
        (slower; off by default). num_outputs: return only the last `num_outputs` positions, (B, num_outputs, D);
        the last block then runs its queries, attention output and MLP for those positions alone, since nothing
        reads the others' final states (for `VisionLanguageModel.text_hidden_states`: the image tokens)."""
        self._check_positions(position_ids)
        run = self._features if attention_weights is None else self._features_eager
        hidden = run(embeddings, position_ids, attn_mask, cache, attention_weights, num_outputs)
        if cache is not None:
            cache.advance(embeddings.shape[1])
        return hidden

    def _check_positions(self, position_ids: torch.Tensor) -> None:
        if int(position_ids.max()) >= self.config.max_positions:
            raise ValueError(
                f"sequence needs position {int(position_ids.max())}, but decoder.max_positions is {self.config.max_positions}"
            )

    def _features_eager(
        self,
        embeddings: torch.Tensor,
        position_ids: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cache: KVCache | None,
        attention_weights: list[torch.Tensor] | None,
        num_outputs: int | None,
    ) -> torch.Tensor:
        x = self.dropout(embeddings + self.position_embedding(position_ids))
        last = len(self.blocks) - 1
        for layer, block in enumerate(self.blocks):
            x = block(x, attn_mask, cache, layer, attention_weights, num_outputs if layer == last else None)
        return self.final_norm(x)

    _features = _features_eager

    def forward_head(self, hidden: torch.Tensor) -> torch.Tensor:
        # Tied output layer: logits are similarities to the token embeddings.
        return F.linear(hidden, self.token_embedding.weight)  # (..., D) -> (..., V)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Text-only causal language model: (B, T) ids -> (B, T, V) logits."""
        positions = torch.arange(token_ids.shape[1], device=token_ids.device).unsqueeze(0)
        return self.forward_head(self.forward_features(self.embed_tokens(token_ids), positions))

    # The fast paths, written out in the section below: each computes what `forward_features` does, for less work.

    def step(
        self, token_ids: torch.Tensor, position_ids: torch.Tensor, cache: KVCache, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """A decoding step: (B,) new token ids after the `cache`d positions -> (B, D) final hidden states."""
        self._check_positions(position_ids)
        hidden = decoding_step(self, token_ids, position_ids, cache, attn_mask)
        cache.advance(1)
        return hidden

    def forward_rows(
        self,
        embeddings: torch.Tensor,
        position_ids: torch.Tensor,
        attn_mask: torch.Tensor | None,
        valid: torch.Tensor,
        outputs: torch.Tensor,
    ) -> torch.Tensor:
        """Training's pass: `forward_features(...)[outputs]` over real tokens only (see `real_token_pass`)."""
        self._check_positions(position_ids)
        return real_token_pass(self, embeddings, position_ids, attn_mask, valid, outputs)

    def _blocks_step_eager(self, x: torch.Tensor, cache: KVCache, attn_mask: torch.Tensor | None) -> torch.Tensor:
        for layer, block in enumerate(self.blocks):
            x = block_step(block, x, cache, layer, attn_mask)
        return x

    _blocks_step = _blocks_step_eager

    def compile_features(self) -> None:
        """Run the blocks through `torch.compile` from now on, in `forward_features` (not when attention weights are
        asked for) and in decoding steps (`step`). At batch 1 a decoding step is many small operators whose dispatch
        costs far more than their arithmetic; compiled, they fuse into a few kernels (docs/performance.md). Compiled
        for dynamic sizes, so a growing sequence does not recompile at every step; batch 1, prefill and the uncached
        path still get their own compilations, each a long wait on a CPU."""
        self._features = torch.compile(self._features_eager, dynamic=True)
        self._blocks_step = torch.compile(self._blocks_step_eager, dynamic=True)


# ---- Fast paths: each is tested equal to the reference above (tests/test_model.py, tests/test_generate.py) ----
# The one-token decoding step (`Decoder.step` -> `decoding_step`, compiled by `Decoder.compile_features`) and
# training's pass over real tokens (`Decoder.forward_rows` -> `real_token_pass`, on `TokenRows`), each as plain
# functions of the modules above, so that the reference path reads whole first. Tests that hold each to the
# reference: `forward_rows` by test_training_pass_over_real_tokens_gives_the_padded_pass_loss_and_gradients and
# test_row_counts_round_up_by_at_most_a_sixteenth_to_few_shapes (tests/test_model.py); `step` by
# test_cache_logits_equal_recomputed_logits_over_20_steps (tests/test_model.py) and
# test_greedy_with_cache_equals_greedy_without (tests/test_generate.py); `compile_features` by
# test_a_compiled_decoder_generates_what_the_eager_one_does (tests/test_generate.py). How they save work:
# docs/performance.md.


def rounded_row_count(count: int) -> int:
    """`count` rounded up to a multiple of a sixteenth of its power of two (at least 8): 1963 -> 1984, 300 -> 304."""
    step = max(8, 1 << max(0, count.bit_length() - 5))
    return -(-count // step) * step


class TokenRows:
    """The real tokens of a padded (B, S) batch, as the rows of one (N', ...) matrix.

    Norms, projections and MLPs act on each token alone, so they can skip padding; attention needs the (B, S) grid.
    Batches are padded to their longest text, so a good share of the decoder's slots are padding (the main job's
    share: docs/performance.md).

    Row counts are rounded up (`rounded_row_count`, at most a sixteenth more rows, or 7 below 128): the count of real
    tokens changes from batch to batch, and oneDNN, which runs bfloat16 matrix products on a CPU, builds its kernels
    anew for every shape it has not seen; rounded, the main job's batches need a few shapes where unrounded they
    needed many (the counts: docs/performance.md). The extra rows are copies of the first real token; nothing
    reads what the layers make of them, so they add no gradient."""

    def __init__(self, valid: torch.Tensor):
        self.grid_shape = valid.shape  # (B, S)
        self.index = valid.flatten().nonzero().squeeze(1)  # (N,) slot of each row in the flattened grid
        self._row_of_slot = valid.flatten().long().cumsum(0) - 1  # (B * S,) row of each real slot
        extra = rounded_row_count(len(self.index)) - len(self.index)
        self._padded_index = torch.cat([self.index, self.index[:1].expand(extra)])  # (N',)

    def rows_of(self, slots: torch.Tensor) -> torch.Tensor:
        """(M',) indices of the rows of the (B, S) True `slots`, in row-major order, each a real token, then row 0
        up to `rounded_row_count(M)`."""
        rows = self._row_of_slot[slots.flatten()]
        return F.pad(rows, (0, rounded_row_count(len(rows)) - len(rows)))

    def to_grid(self, rows: torch.Tensor) -> torch.Tensor:
        """(N', C) -> (B, S, C), zeros at padding; the rows past the N real ones are dropped."""
        grid = rows.new_zeros(self.grid_shape.numel(), rows.shape[-1])
        # in place: no copy of the zeros
        return grid.index_copy_(0, self.index, rows[: len(self.index)]).view(*self.grid_shape, -1)

    def to_rows(self, grid: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, C) -> (N', C), or (M', C) for the given `rows` only (as `rows_of` gives them)."""
        index = self._padded_index if rows is None else self.index[rows]
        return grid.flatten(0, 1).index_select(0, index)


def attention_step(
    attention: SelfAttention, x: torch.Tensor, cache: KVCache, layer: int, attn_mask: torch.Tensor | None
) -> torch.Tensor:
    """One new position per row after `cache`'s: (B, D) -> (B, D). attn_mask (B, 1, 1, Tk) or None (every cached
    slot is visible)."""
    batch, width = x.shape
    q, k, v = attention.qkv(x).view(batch, 3, attention.heads, 1, width // attention.heads).unbind(1)  # (B, H, 1, hd)
    k, v = cache.update(layer, k, v)
    return attention.out(attention._attend(q, k, v, attn_mask).view(batch, width))  # (B, H, 1, hd) -> (B, D)


def block_step(
    block: Block, x: torch.Tensor, cache: KVCache, layer: int, attn_mask: torch.Tensor | None
) -> torch.Tensor:
    """One new position per row, (B, D) -> (B, D)."""
    x = x + attention_step(block.attention, block.norm_attention(x), cache, layer, attn_mask)
    return x + block.mlp(block.norm_mlp(x))


def decoding_step(
    decoder: Decoder,
    token_ids: torch.Tensor,
    position_ids: torch.Tensor,
    cache: KVCache,
    attn_mask: torch.Tensor | None,
) -> torch.Tensor:
    """`Decoder.step`: what `forward_features` computes for a one-position sequence, on (B, D) rather than (B, 1, D)
    tensors and with fewer operators: at batch 1 a step's cost is mostly the dispatch of its many small operators,
    not their arithmetic (docs/performance.md). (B,) ids and positions -> (B, D); attn_mask: (B, 1, 1, cached + 1)
    or None."""
    x = decoder.dropout(decoder.token_embedding(token_ids) + decoder.position_embedding(position_ids))  # (B, D)
    return decoder.final_norm(decoder._blocks_step(x, cache, attn_mask))


def attention_rows(
    attention: SelfAttention,
    x: torch.Tensor,
    rows: TokenRows,
    attn_mask: torch.Tensor | None,
    outputs: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N', D) real-token rows -> (N', D), or (M', D) for the rows `outputs` alone: the projections run on real
    tokens only, attention on the padded grid."""
    qkv = rows.to_grid(attention.qkv(x))  # (B, S, 3D), zeros at padding, which no real query attends to
    batch, steps, _ = qkv.shape
    q, k, v = qkv.view(batch, steps, 3, attention.heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, S, hd)
    y = attention._attend(q, k, v, attn_mask).transpose(1, 2).reshape(batch, steps, -1)  # (B, S, D)
    return attention.out(rows.to_rows(y, outputs))


def block_rows(
    block: Block, x: torch.Tensor, rows: TokenRows, attn_mask: torch.Tensor | None, outputs: torch.Tensor | None = None
) -> torch.Tensor:
    """(N', D) real-token rows -> (N', D), or (M', D): only the rows `outputs` go on through the MLP."""
    attended = attention_rows(block.attention, block.norm_attention(x), rows, attn_mask, outputs)
    x = (x if outputs is None else x[outputs]) + attended
    return x + block.mlp(block.norm_mlp(x))


def real_token_pass(
    decoder: Decoder,
    embeddings: torch.Tensor,
    position_ids: torch.Tensor,
    attn_mask: torch.Tensor | None,
    valid: torch.Tensor,
    outputs: torch.Tensor,
) -> torch.Tensor:
    """`Decoder.forward_rows`: the final hidden states of the M `outputs` slots, in row-major order, as
    `forward_features(...)[outputs]` would give them, for less work: padding (`valid` False, (B, S)) skips every
    per-token layer, and the last block's output projection and MLP run for the `outputs` slots only (the positions
    that predict a target). Padding must be invisible to real tokens under `attn_mask`. Returns (M', D): M rounded
    up by `rounded_row_count`, the rows past the first M to be ignored."""
    rows = TokenRows(valid)
    x = rows.to_rows(decoder.dropout(embeddings + decoder.position_embedding(position_ids)))  # (N', D)
    last = len(decoder.blocks) - 1
    for layer, block in enumerate(decoder.blocks):
        x = block_rows(block, x, rows, attn_mask, rows.rows_of(outputs) if layer == last else None)
    return decoder.final_norm(x)  # (M', D)
