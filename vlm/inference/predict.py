"""Images and questions in, text out: the layer the scripts and the evaluation call on top of `generate`.

It transforms images the way evaluation does, fits prompts into the context (a question too long for it is cut,
with a warning), and batches the work.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from vlm.data.images import load_image
from vlm.data.transforms import Preprocessing, build_transform
from vlm.inference.attention_maps import AttendedText, token_attention_maps
from vlm.inference.generate import GenerationConfig, generate
from vlm.model.tokenizer import Tokenizer
from vlm.model.vision_language_model import VisionLanguageModel

ANSWER_TOKENS = 32  # default answer length: a reasoned reply (a scene description, then the answer) fits
MIN_ANSWER_TOKENS = 4  # a question may use the context up to this many tokens before its end

# Scores candidate texts for best-of-n: (images (N, 3, H, W), prompts, generated ids) -> (N,) scores, higher better.
# A reward model gives one (`RewardModel.scorer`); inference itself knows nothing of how it was trained.
CandidateScorer = Callable[[torch.Tensor, list[list[int]], list[list[int]]], torch.Tensor]


class Predictor:
    def __init__(
        self,
        model: VisionLanguageModel,
        tokenizer: Tokenizer,
        device: str | torch.device = "cpu",
        autocast_dtype: torch.dtype | None = None,
        blind: bool = False,
        scorer: CandidateScorer | None = None,
        rerank: int = 1,
    ):
        if rerank > 1 and scorer is None:
            raise ValueError(f"rerank={rerank} needs a reward model's scorer")
        self.model = model.to(device).eval()
        # Best-of-n: with rerank > 1 every output is the one the scorer prefers among n candidates.
        self.scorer = scorer
        self.rerank = rerank
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype
        self.blind = blind  # zeros instead of images: for models trained blind
        vision = model.config.vision
        self.transform = build_transform(
            vision.image_size, train=False, preprocessing=Preprocessing(resize=vision.resize)
        )
        self.max_text_len = model.config.max_text_len

    def image_batch(self, images: Sequence[str | Image.Image]) -> torch.Tensor:
        tensor = torch.stack([self.transform(load_image(image)) for image in images]).to(self.device)
        return torch.zeros_like(tensor) if self.blind else tensor

    def question_prompt(self, question: str) -> list[int]:
        prompt = self.tokenizer.question_prompt(question)
        room = self.max_text_len - MIN_ANSWER_TOKENS
        if len(prompt) > room:
            warnings.warn(
                f"question of {len(prompt) - 3} tokens is longer than the model's context allows "
                f"({room - 3}); it was cut to its first {room - 3} tokens: {question[:60]!r}...",
                stacklevel=2,
            )
            prompt = prompt[: room - 1] + [self.tokenizer.answer_id]
        return prompt

    def generate_ids(
        self, image_batch: torch.Tensor, prompts: list[list[int]], image_index: list[int], config: GenerationConfig
    ) -> list[list[int]]:
        """Generated token ids per prompt, at most what the context leaves room for."""
        room = self.max_text_len - max(len(p) for p in prompts)
        config = dataclasses.replace(config, max_new_tokens=min(config.max_new_tokens, room))
        ids = self._generate(image_batch, prompts, image_index, config)
        return ids if self.rerank == 1 else self._best_of_n(image_batch, prompts, image_index, config, ids)

    def _generate(self, image_batch, prompts, image_index, config) -> list[list[int]]:
        return generate(
            self.model,
            image_batch,
            prompts,
            self.tokenizer.eos_id,
            self.tokenizer.pad_id,
            config,
            image_index=image_index,
            autocast_dtype=self.autocast_dtype,
        )

    def _best_of_n(self, image_batch, prompts, image_index, config, first) -> list[list[int]]:
        """Candidates: `first` (the configured strategy's output) and rerank - 1 samples per prompt, drawn in one
        batch; each row keeps the candidate the scorer rates highest (the first on a tie)."""
        extra = self.rerank - 1
        seed = None if config.seed is None else config.seed + 1  # not the draws `first` may already hold
        sampling = dataclasses.replace(config, strategy="sample", seed=seed)
        samples = self._generate(image_batch, list(prompts) * extra, list(image_index) * extra, sampling)
        candidates = list(first) + samples  # candidate k of row i at k * rows + i
        rows = len(prompts)
        with torch.no_grad():
            scores = self.scorer(
                image_batch[list(image_index) * self.rerank], list(prompts) * self.rerank, candidates
            ).view(self.rerank, rows)  # (N * rows,) -> (N, rows)
        best = scores.argmax(dim=0).tolist()
        return [candidates[k * rows + i] for i, k in enumerate(best)]

    def run(
        self,
        images: Sequence[str | Image.Image],
        prompts: list[list[int]],
        image_index: list[int],
        config: GenerationConfig,
    ) -> list[str]:
        ids = self.generate_ids(self.image_batch(images), prompts, image_index, config)
        return [self.tokenizer.decode(row).strip() for row in ids]

    def caption(self, images: Sequence[str | Image.Image], config: GenerationConfig | None = None) -> list[str]:
        prompts = [self.tokenizer.caption_prompt() for _ in images]
        return self.run(images, prompts, list(range(len(images))), config or GenerationConfig())

    def answer(
        self,
        images: Sequence[str | Image.Image],
        questions: Sequence[str],
        image_index: Sequence[int] | None = None,
        config: GenerationConfig | None = None,
    ) -> list[str]:
        """Answers to `questions`; question i is about images[image_index[i]] (default: image i). Each image is
        encoded once however many questions ask about it."""
        index = list(range(len(questions))) if image_index is None else list(image_index)
        prompts = [self.question_prompt(q) for q in questions]
        return self.run(images, prompts, index, config or GenerationConfig(max_new_tokens=ANSWER_TOKENS))

    def attend(
        self,
        images: Sequence[str | Image.Image],
        questions: Sequence[str | None],
        image_index: Sequence[int] | None = None,
        config: GenerationConfig | None = None,
        method: str = "mean",
    ) -> list[AttendedText]:
        """Generate as `caption` (question None) or `answer` do, and return each text with one attention map per
        generated token (see vlm/inference/attention_maps.py)."""
        index = list(range(len(questions))) if image_index is None else list(image_index)
        prompts = [self.tokenizer.caption_prompt() if q is None else self.question_prompt(q) for q in questions]
        image_batch = self.image_batch(images)
        ids = self.generate_ids(image_batch, prompts, index, config or GenerationConfig())
        return [
            AttendedText(
                text=self.tokenizer.decode(row).strip(),
                tokens=[self.tokenizer.decode([token]) for token in row],
                maps=token_attention_maps(self.model, image_batch[i], prompt, row, method),
            )
            for row, prompt, i in zip(ids, prompts, index)
        ]
