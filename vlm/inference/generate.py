"""The one generation loop, used by caption, ask, evaluation and the benchmarks: greedy, beam search and sampling.

Batched: prompts of different lengths are left-padded (so every row's next token lands in the same slot), each row
stops at its own end token, and several prompts may share one image, which is encoded once. With the key/value
cache each new token costs one decoder position; `use_cache=False` recomputes the whole sequence every step (the
baseline the cache is measured against). `stream` yields one prompt's tokens as the same loop makes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from vlm.data.batch import left_pad
from vlm.model.vision_language_model import DecodingState, VisionLanguageModel
from vlm.runtime import autocast

STRATEGIES = ("greedy", "beam", "sample")


@dataclass
class GenerationConfig:
    # The command-line flags are made from these fields (vlm/cli/common.py); `metadata` holds their help.
    max_new_tokens: int = 32
    strategy: str = field(default="greedy", metadata={"choices": STRATEGIES})
    num_beams: int = field(default=4, metadata={"help": "beam width (with --strategy beam)"})
    length_penalty: float = field(
        default=1.0, metadata={"help": "beam score = sum of log-probabilities / length ** length_penalty"}
    )
    temperature: float = field(default=1.0, metadata={"help": "with --strategy sample"})
    top_k: int = field(default=0, metadata={"help": "sample from the k likeliest tokens only; 0: off"})
    top_p: float = field(default=1.0, metadata={"help": "sample from the smallest set of this probability; 1: off"})
    seed: int | None = field(default=None, metadata={"help": "seed for --strategy sample"})
    use_cache: bool = True
    min_new_tokens: int = field(default=0, metadata={"help": "the end token is forbidden before this many tokens"})

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be greedy, beam or sample, got {self.strategy!r}")
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ValueError("max_new_tokens and num_beams must be at least 1")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("temperature must be > 0, top_p in (0, 1], top_k >= 0")


class _Stepper:
    """Next-token logits for a batch of rows, with or without the cache, behind one interface."""

    def __init__(
        self,
        model: VisionLanguageModel,
        image_tokens: torch.Tensor,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        config: GenerationConfig,
    ):
        self.model, self.use_cache = model, config.use_cache
        self.image_tokens, self.ids, self.mask = image_tokens, prompt_ids, prompt_mask
        self.state: DecodingState | None = None
        if self.use_cache:
            self.first_logits, self.state = model.prefill(image_tokens, prompt_ids, prompt_mask, config.max_new_tokens)
        else:
            self.first_logits = self._recompute()

    def _recompute(self) -> torch.Tensor:
        hidden = self.model.text_hidden_states(self.image_tokens, self.ids, self.mask)
        return self.model.decoder.forward_head(hidden[:, -1])

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.use_cache:
            return self.model.decode_step(tokens, self.state)
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        return self._recompute()

    def select(self, rows: torch.Tensor) -> None:
        """Keep/reorder rows (beam search)."""
        self.image_tokens = self.image_tokens.index_select(0, rows)
        if self.use_cache:
            self.state.select(rows)
        else:
            self.ids, self.mask = self.ids.index_select(0, rows), self.mask.index_select(0, rows)


def generate(
    model: VisionLanguageModel,
    images: torch.Tensor,
    prompts: Sequence[Sequence[int]],
    eos_id: int,
    pad_id: int,
    config: GenerationConfig | None = None,
    image_index: Sequence[int] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> list[list[int]]:
    """New token ids for each prompt (the end token not included).

    images: (N_images, 3, H, W) pixels, or (N_images, N_img, D) image tokens that `model.encode_images` already made
    (an app asking about one image over many calls encodes it once); prompts: token ids per row; image_index[row]
    says which image a row is about (default: row i uses image i), so many questions in one call share an image.
    autocast_dtype: e.g. torch.bfloat16 to run under autocast (None or float32: off).
    """
    config = config or GenerationConfig()
    config.validate()
    if not prompts:
        return []
    outputs: list[list[int]] = [[] for _ in prompts]
    # One context for the whole call: autocast keeps its cast weights until it exits (see inference_context).
    with inference_context(images.device, autocast_dtype):
        for tokens in _steps(model, images, prompts, eos_id, pad_id, config, image_index):
            for row, token in enumerate(tokens):
                if token is not None:
                    outputs[row].append(token)
    return outputs


def stream(
    model: VisionLanguageModel,
    images: torch.Tensor,
    prompt: Sequence[int],
    eos_id: int,
    pad_id: int,
    config: GenerationConfig | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Iterator[int]:
    """The new token ids of one prompt about images[0], each as soon as the loop makes it: what `generate` returns
    for that prompt, one at a time. Beam search knows its winner only at the end, so it yields all at once then."""
    config = config or GenerationConfig()
    config.validate()
    steps = _steps(model, images[:1], [prompt], eos_id, pad_id, config, None)
    while True:
        # The context is entered around each step, not held across `yield`: grad mode and autocast are per thread,
        # and the caller's code between tokens must not run inside them.
        with inference_context(images.device, autocast_dtype):
            tokens = next(steps, None)
        if tokens is None:
            return
        if tokens[0] is not None:
            yield tokens[0]


@contextlib.contextmanager
def inference_context(device: torch.device, autocast_dtype: torch.dtype | None) -> Iterator[None]:
    """No gradients, and autocast to `autocast_dtype` (None or float32: off), as generation runs."""
    # Autocast caches each weight's low-precision copy while it is entered, but not under inference_mode: there
    # every step would cast every weight again. no_grad keeps the cache.
    no_grad = torch.inference_mode() if autocast_dtype in (None, torch.float32) else torch.no_grad()
    with no_grad, autocast(device, autocast_dtype):
        yield


def _steps(model, images, prompts, eos_id, pad_id, config, image_index) -> Iterator[list[int | None]]:
    """The loop itself: one token per row at each step, None for a row that has already ended (beam search: its
    winners' tokens, column by column, once the search is over). The caller provides the grad/autocast context."""
    device = images.device
    image_index = list(range(len(prompts))) if image_index is None else list(image_index)
    if len(image_index) != len(prompts) or not all(0 <= i < len(images) for i in image_index):
        raise ValueError(
            f"{len(prompts)} prompts need an image each; got image_index {image_index} for {len(images)} images"
        )
    image_tokens = images if images.dim() == 3 else model.encode_images(images)  # (N_images, N_img, D)
    image_tokens = image_tokens.index_select(0, torch.tensor(image_index, device=device))
    prompt_ids, prompt_mask = left_pad([list(p) for p in prompts], pad_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    if config.strategy == "beam":
        winners = _beam_search(model, image_tokens, prompt_ids, prompt_mask, eos_id, config)
        for step in range(max(map(len, winners), default=0)):
            yield [row[step] if step < len(row) else None for row in winners]
        return
    yield from _greedy_or_sample(model, image_tokens, prompt_ids, prompt_mask, eos_id, pad_id, config)


def _greedy_or_sample(model, image_tokens, prompt_ids, prompt_mask, eos_id, pad_id, config) -> Iterator[list]:
    stepper = _Stepper(model, image_tokens, prompt_ids, prompt_mask, config)
    logits = stepper.first_logits
    batch = len(prompt_ids)
    generator = None
    if config.strategy == "sample":
        generator = torch.Generator(device=logits.device)
        if config.seed is not None:
            generator.manual_seed(config.seed)
        else:  # a fresh random seed for this generator only: the global RNG (training's) is left alone
            generator.seed()
    finished = torch.zeros(batch, dtype=torch.bool, device=logits.device)
    for step in range(config.max_new_tokens):
        logits = logits.float()
        if step < config.min_new_tokens:
            logits[:, eos_id] = -torch.inf
        if config.strategy == "sample":
            tokens = sample_tokens(logits, config, generator)
        else:
            tokens = logits.argmax(dim=-1)
        tokens = torch.where(finished, torch.full_like(tokens, pad_id), tokens)
        newly_finished = tokens == eos_id
        done = (finished | newly_finished).tolist()
        finished |= newly_finished
        if bool(finished.all()):
            break
        yield [None if done[row] else token for row, token in enumerate(tokens.tolist())]
        if step == config.max_new_tokens - 1:
            break
        logits = stepper.step(tokens)


def sample_tokens(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator) -> torch.Tensor:
    """One token per row from softmax(logits / temperature), restricted to the top-k and the top-p nucleus."""
    logits = logits / config.temperature
    if config.top_k > 0:
        kth = torch.topk(logits, min(config.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probabilities = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the best token always stays.
        drop = probabilities.cumsum(dim=-1) - probabilities >= config.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, -torch.inf))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def _beam_search(model, image_tokens, prompt_ids, prompt_mask, eos_id, config) -> list[list[int]]:
    """Per prompt, keep the `num_beams` best partial sequences. A beam that emits the end token becomes a finished
    hypothesis scored by sum log p / length ** length_penalty; a prompt is done once it has `num_beams` of them
    (so width 1 is exactly greedy). Rows of the cache follow their beams."""
    batch, beams = len(prompt_ids), config.num_beams
    expand = torch.arange(batch, device=prompt_ids.device).repeat_interleave(beams)
    stepper = _Stepper(model, image_tokens[expand], prompt_ids[expand], prompt_mask[expand], config)
    log_probs = stepper.first_logits.float().log_softmax(dim=-1)  # (B*K, V)
    vocab = log_probs.shape[-1]
    # Only the first beam of each prompt is live at the start, so the K beams do not all pick the same token.
    scores = torch.full((batch, beams), -torch.inf, device=log_probs.device)
    scores[:, 0] = 0.0
    sequences: list[list[int]] = [[] for _ in range(batch * beams)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]

    def normalised(score: float, sequence: list[int]) -> float:
        return score / max(1, len(sequence)) ** config.length_penalty

    for step in range(config.max_new_tokens):
        if step < config.min_new_tokens:
            log_probs[:, eos_id] = -torch.inf
        candidates = (scores.view(-1, 1) + log_probs).view(batch, beams * vocab)
        top_scores, top_ids = candidates.topk(2 * beams, dim=-1)  # 2K: room for K live beams after end tokens
        last_step = step == config.max_new_tokens - 1
        next_rows, next_tokens, next_scores = [], [], []
        for b in range(batch):
            live = []
            if len(finished[b]) < beams:
                for score, flat in zip(top_scores[b].tolist(), top_ids[b].tolist()):
                    beam, token = divmod(flat, vocab)
                    row = b * beams + beam
                    if score == -float("inf") or len(finished[b]) >= beams or len(live) == beams:
                        break
                    if token == eos_id:
                        finished[b].append((normalised(score, sequences[row]), sequences[row]))
                    elif last_step:
                        finished[b].append((normalised(score, sequences[row] + [token]), sequences[row] + [token]))
                    else:
                        live.append((row, token, score))
            live += [(b * beams, eos_id, -float("inf"))] * (beams - len(live))  # dead beams keep the shape
            for row, token, score in live:
                next_rows.append(row)
                next_tokens.append(token)
                next_scores.append(score)
        if last_step or all(len(f) >= beams for f in finished):
            break
        sequences = [sequences[r] + [t] for r, t in zip(next_rows, next_tokens)]
        scores = torch.tensor(next_scores, device=log_probs.device).view(batch, beams)
        rows = torch.tensor(next_rows, device=log_probs.device)
        stepper.select(rows)
        log_probs = stepper.step(torch.tensor(next_tokens, device=log_probs.device)).float().log_softmax(dim=-1)
    return [max(hypotheses, key=lambda h: h[0])[1] if hypotheses else [] for hypotheses in finished]
