"""Self-critical sequence training (Rennie et al. 2017): fine-tune a captioner on the metric it is judged by.

For each image, sample captions and decode one greedily; a sample's advantage is its reward minus the greedy
caption's reward (the baseline: the model's own test-time output), and the loss is -advantage * log p(sample).
Samples better than what the model would write greedily are made more likely, worse ones less. The reward is
CIDEr-D against the image's references or a reward model's score (vlm/posttrain/reward.py).

Sampling uses the one generation loop (no gradients); the log-probabilities are then recomputed with gradients
by one teacher-forced pass, as in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from vlm.evaluation.metrics.cider import DocumentFrequencies, cider_d
from vlm.inference.generate import GenerationConfig, generate
from vlm.model import masks
from vlm.model.tokenizer import Tokenizer
from vlm.model.vision_language_model import VisionLanguageModel
from vlm.posttrain.reward import RewardModel
from vlm.runtime import autocast, autocast_dtype
from vlm.training.loop import TrainConfig, apply_gradients, build_optimizer, lr_factor, set_learning_rate


@dataclass
class SCSTConfig:
    samples_per_image: int = 5
    max_new_tokens: int = 32
    temperature: float = 1.0  # of the sampled captions; the baseline is always greedy


class CaptionReward(Protocol):
    def __call__(
        self, images: torch.Tensor, texts: list[list[int]], references: Sequence[Sequence[str]]
    ) -> torch.Tensor:
        """(B,) rewards of one caption per image: images (B, 3, H, W), texts token ids (no end token)."""
        ...


class CiderReward:
    """CIDEr-D of each caption against its image's references. Document frequencies are the training corpus's
    (`document_frequencies` of every training image's references), as in SCST; without them, the batch's own."""

    def __init__(self, tokenizer: Tokenizer, frequencies: DocumentFrequencies | None = None):
        self.tokenizer, self.frequencies = tokenizer, frequencies

    def __call__(
        self, images: torch.Tensor, texts: list[list[int]], references: Sequence[Sequence[str]]
    ) -> torch.Tensor:
        candidates = {row: self.tokenizer.decode(ids).strip() for row, ids in enumerate(texts)}
        references = {row: list(refs) for row, refs in enumerate(references)}
        _, scores = cider_d(candidates, references, frequencies=self.frequencies)
        return torch.tensor([scores[row] for row in range(len(texts))])


class RewardModelReward:
    """The reward model's score of (image, caption); it must share the captioner's vocabulary and image size."""

    def __init__(self, model: RewardModel, tokenizer: Tokenizer):
        self.model, self.tokenizer = model.eval(), tokenizer

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, texts: list[list[int]], references: Sequence[Sequence[str]]
    ) -> torch.Tensor:
        prompts = [self.tokenizer.caption_prompt()] * len(texts)
        scores = self.model.score(images, prompts, texts, self.tokenizer.eos_id, self.tokenizer.pad_id)
        return scores.float().cpu()


def scst_loss(log_probs: torch.Tensor, rewards: torch.Tensor, baselines: torch.Tensor) -> torch.Tensor:
    """-(reward - baseline) * log p(sample), averaged over samples: the REINFORCE estimate with the greedy
    caption's reward as baseline. log_probs (N,) carry gradients; rewards and baselines (N,) do not."""
    advantages = (rewards - baselines).to(log_probs.device, log_probs.dtype).detach()
    return -(advantages * log_probs).mean()


def sequence_log_probs(
    model: VisionLanguageModel,
    image_tokens: torch.Tensor,
    prompts: Sequence[Sequence[int]],
    texts: Sequence[Sequence[int]],
    ended: Sequence[bool],
    eos_id: int,
    pad_id: int,
) -> torch.Tensor:
    """(B,) sum of log p over each row's generated tokens, plus its end token where generation ended with one (a
    caption cut at the length limit has none), recomputed with gradients. image_tokens (B, N_img, D)."""
    rows = [list(p) + list(t) + ([eos_id] if e else []) for p, t, e in zip(prompts, texts, ended)]
    longest = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    target_mask = torch.zeros((len(rows), longest), dtype=torch.bool)
    for i, (row, prompt) in enumerate(zip(rows, prompts)):
        input_ids[i, : len(row)] = torch.tensor(row)
        target_mask[i, len(prompt) : len(row)] = True
    device = image_tokens.device
    input_ids, target_mask = input_ids.to(device), target_mask.to(device)
    lengths = torch.tensor([len(r) for r in rows], device=device)
    attention_mask = torch.arange(longest, device=device)[None] < lengths[:, None]  # (B, T) right padding
    hidden = model.text_hidden_states(image_tokens, input_ids, attention_mask)  # (B, T, D), right-padded
    predicts = masks.prediction_mask(target_mask)  # (B, T): position t predicts token t + 1
    targets = input_ids[:, 1:][predicts[:, :-1]]  # (n,)
    logits = model.decoder.forward_head(hidden[predicts])  # (n, V)
    token_log_probs = logits.float().log_softmax(dim=-1).gather(1, targets[:, None]).squeeze(1)  # (n,)
    row_of = torch.arange(len(rows), device=device)[:, None].expand_as(predicts)[predicts]  # (n,)
    return torch.zeros(len(rows), device=device).index_add(0, row_of, token_log_probs)


def scst_step(
    model: VisionLanguageModel,
    tokenizer: Tokenizer,
    images: torch.Tensor,
    references: Sequence[Sequence[str]],
    reward: CaptionReward,
    config: SCSTConfig,
    seed: int,
    amp_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch of images (B, 3, H, W) and what it was made of: mean sample reward, mean greedy
    (baseline) reward, the share of samples that beat the baseline."""
    batch, k = len(images), config.samples_per_image
    prompts = [tokenizer.caption_prompt()] * batch
    eos, pad = tokenizer.eos_id, tokenizer.pad_id
    # Room for the prompt, the caption and its end token, all fed back in by `sequence_log_probs`.
    max_new_tokens = min(config.max_new_tokens, model.config.max_text_len - len(prompts[0]) - 1)
    was_training = model.training
    model.eval()
    greedy_config = GenerationConfig(max_new_tokens=max_new_tokens)
    greedy = generate(model, images, prompts, eos, pad, greedy_config, autocast_dtype=amp_dtype)
    sampling = GenerationConfig(
        max_new_tokens=max_new_tokens, strategy="sample", temperature=config.temperature, seed=seed
    )
    # (K * B) rows, sample j of image i at row j * B + i: one generate call draws them all.
    samples = generate(
        model, images, prompts * k, eos, pad, sampling, image_index=list(range(batch)) * k, autocast_dtype=amp_dtype
    )
    model.train(was_training)
    baseline = reward(images, greedy, references)  # (B,)
    rewards = torch.cat(
        [reward(images, samples[j * batch : (j + 1) * batch], references) for j in range(k)]
    )  # (K * B,)
    amp = autocast(images.device, amp_dtype)
    with amp:
        image_tokens = model.encode_images(images).repeat(k, 1, 1)  # (K * B, N_img, D)
        ended = [len(s) < max_new_tokens for s in samples]
        log_probs = sequence_log_probs(model, image_tokens, prompts * k, samples, ended, eos, pad)
    baselines = baseline.repeat(k)  # (K * B,): each sample against its own image's greedy caption
    loss = scst_loss(log_probs, rewards, baselines)
    stats = {
        "sample_reward": float(rewards.mean()),
        "greedy_reward": float(baseline.mean()),
        "better_than_greedy": float((rewards > baselines).float().mean()),
    }
    return loss, stats


def finetune(
    model: VisionLanguageModel,
    tokenizer: Tokenizer,
    image_batches: Callable[[int], tuple[torch.Tensor, list[list[str]]]],
    reward: CaptionReward,
    config: SCSTConfig,
    train_config: TrainConfig,
    device: torch.device | str = "cpu",
    log: Callable[[int, float, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """`train_config.max_steps` SCST steps with the optimizer and schedule of vlm/training/loop.py. image_batches(step)
    gives that step's images (B, 3, H, W) and their references. Returns each step's loss and rewards."""
    device = torch.device(device)
    model.to(device).train()
    optimizer = build_optimizer(model, train_config)
    amp_dtype = autocast_dtype(device, train_config.dtype)
    history = []
    for step in range(train_config.max_steps):
        images, references = image_batches(step)
        loss, stats = scst_step(
            model,
            tokenizer,
            images.to(device),
            references,
            reward,
            config,
            seed=train_config.seed * 1_000_003 + step,
            amp_dtype=amp_dtype,
        )
        loss.backward()
        set_learning_rate(optimizer, lr_factor(step, train_config))
        apply_gradients(model, optimizer, train_config.grad_clip)
        history.append({"step": step + 1, "loss": float(loss.detach()), **stats})
        if log is not None:
            log(step + 1, float(loss.detach()), stats)
    model.eval()
    return history
