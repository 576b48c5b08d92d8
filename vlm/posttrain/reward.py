"""A reward model: the vision-language model with a scalar head on the decoder's last hidden state, read at the
end token, that scores how well a text fits an image. Trained on preference pairs (vlm/posttrain/preferences.py) with the
pairwise logistic (Bradley-Terry) loss, used for best-of-n reranking and as a reward for SCST.

A reward model folder is an ordinary model folder (vlm/model/checkpoint.py) plus `reward_head.safetensors`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vlm.data.batch import encode_text, left_pad
from vlm.data.images import load_image
from vlm.inference.predict import CandidateScorer
from vlm.model.checkpoint import CheckpointError, load_model, save_model
from vlm.model.hub import resolve_model_folder
from vlm.model.tokenizer import Tokenizer
from vlm.model.vision_language_model import VisionLanguageModel
from vlm.posttrain.preferences import PreferencePair
from vlm.runtime import autocast, autocast_dtype
from vlm.training.loop import TrainConfig, apply_gradients, build_optimizer, lr_factor, set_learning_rate

HEAD_FILE = "reward_head.safetensors"


class RewardModel(nn.Module):
    def __init__(self, backbone: VisionLanguageModel):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.decoder.width, 1)
        # Starts indifferent: every text scores 0 (loss log 2) until the pairs teach it otherwise.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) scores. images (B, 3, H, W); sequences (B, T) prompt + text + end token, LEFT-padded (`left_pad`),
        so that every row's end token is in the last column."""
        hidden = self.backbone.text_hidden_states(self.backbone.encode_images(images), sequences, attention_mask)
        return self.head(hidden[:, -1]).squeeze(-1)  # (B, T, D) -> (B, D) at the end token -> (B,)

    def score(
        self,
        images: torch.Tensor,
        prompts: Sequence[Sequence[int]],
        texts: Sequence[Sequence[int]],
        eos_id: int,
        pad_id: int,
    ) -> torch.Tensor:
        """(B,) scores of generated token ids `texts` (no end token) after `prompts`, row i about images[i]. Texts
        longer than the context are cut before the end token, which is always kept."""
        room = self.backbone.config.max_text_len
        sequences = [(list(p) + list(t))[: room - 1] + [eos_id] for p, t in zip(prompts, texts)]
        ids, mask = left_pad(sequences, pad_id)
        return self(images, ids.to(images.device), mask.to(images.device))

    def scorer(self, tokenizer: Tokenizer) -> CandidateScorer:
        """This model as the `Predictor`'s best-of-n scorer, in eval mode."""
        self.eval()
        return lambda images, prompts, texts: self.score(images, prompts, texts, tokenizer.eos_id, tokenizer.pad_id)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged: the negative log-likelihood that the preferred text wins."""
    return -F.logsigmoid(chosen.float() - rejected.float()).mean()


def save_reward_model(directory: str | Path, model: RewardModel, tokenizer: Tokenizer) -> None:
    directory = Path(directory)
    save_model(directory, model.backbone, tokenizer)
    head = {name: tensor.detach().cpu().contiguous() for name, tensor in model.head.state_dict().items()}
    temporary = directory / (HEAD_FILE + ".tmp")
    save_file(head, str(temporary), metadata={"format": "pt"})
    os.replace(temporary, directory / HEAD_FILE)


def load_reward_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[RewardModel, Tokenizer]:
    """`directory`: a reward model folder, or a Hugging Face Hub repo id holding one."""
    directory = resolve_model_folder(directory)
    backbone, tokenizer = load_model(directory, device)
    if not (directory / HEAD_FILE).is_file():
        raise CheckpointError(f"{directory / HEAD_FILE}: missing; {directory} is a model folder but not a reward model")
    model = RewardModel(backbone)
    try:
        head = load_file(str(directory / HEAD_FILE))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{directory / HEAD_FILE}: not a readable safetensors file ({error})") from None
    expected = {name: tuple(t.shape) for name, t in model.head.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in head.items()}
    if expected != found:
        raise CheckpointError(f"{directory / HEAD_FILE}: holds {found}, but the model's head needs {expected}")
    model.head.load_state_dict(head)
    return model.to(device).eval(), tokenizer


# ---------------------------------------------------------------------------------------------------------------
# Training and evaluation on preference pairs


def pair_batch(
    pairs: Sequence[PreferencePair], tokenizer: Tokenizer, transform: Callable, max_text_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """images (2B, 3, H, W) and left-padded sequences, mask (2B, T): the chosen texts, then the rejected ones."""
    images = torch.stack([transform(load_image(p.image)) for p in pairs])
    texts = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    questions = [p.question for p in pairs] * 2
    sequences = [encode_text(tokenizer, q, t, max_text_len)[0] for q, t in zip(questions, texts)]
    ids, mask = left_pad(sequences, tokenizer.pad_id)
    return images.repeat(2, 1, 1, 1), ids, mask  # (2B, 3, H, W): each image once for each of its two texts


def train_reward_model(
    model: RewardModel,
    pairs: Sequence[PreferencePair],
    tokenizer: Tokenizer,
    transform: Callable,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    log: Callable[[int, float], None] | None = None,
) -> list[float]:
    """`config.max_steps` steps of AdamW on random batches of pairs, with the training schedule (warm-up + cosine),
    per-part learning rates and autocast choice (`config.dtype`) of vlm/training/loop.py; the head learns at the decoder's
    rate. Returns the losses."""
    if not pairs:
        raise ValueError("no preference pairs to train on")
    device = torch.device(device)
    model.to(device).train()
    amp_dtype = autocast_dtype(device, config.dtype)
    amp = autocast(device, amp_dtype)
    optimizer = build_optimizer(model.backbone, config)
    lr = config.lr_decoder
    optimizer.add_param_group({"params": list(model.head.parameters()), "lr": lr, "peak_lr": lr, "weight_decay": 0.0})
    generator = torch.Generator().manual_seed(config.seed)
    max_text_len = model.backbone.config.max_text_len
    losses = []
    for step in range(config.max_steps):
        chosen_rows = torch.randint(len(pairs), (config.batch_size,), generator=generator).tolist()
        images, ids, mask = pair_batch([pairs[i] for i in chosen_rows], tokenizer, transform, max_text_len)
        with amp:
            scores = model(images.to(device), ids.to(device), mask.to(device))  # (2B,)
        loss = bradley_terry_loss(*scores.chunk(2))  # (2B,) -> chosen (B,), rejected (B,)
        loss.backward()
        set_learning_rate(optimizer, lr_factor(step, config))
        apply_gradients(model, optimizer, config.grad_clip)
        losses.append(float(loss.detach()))
        if log is not None:
            log(step + 1, losses[-1])
    model.eval()
    return losses


@torch.no_grad()
def pairwise_accuracy(
    model: RewardModel,
    pairs: Sequence[PreferencePair],
    tokenizer: Tokenizer,
    transform: Callable,
    batch_size: int = 64,
) -> dict[str, float]:
    """Share of pairs whose chosen text scores above the rejected one (a tie counts half), per kind and overall."""
    model.eval()
    device = next(model.parameters()).device
    wins: dict[str, list[float]] = {}
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        images, ids, mask = pair_batch(batch, tokenizer, transform, model.backbone.config.max_text_len)
        chosen, rejected = model(images.to(device), ids.to(device), mask.to(device)).chunk(2)
        outcome = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
        for pair, won in zip(batch, outcome.tolist()):
            wins.setdefault(pair.kind, []).append(won)
    accuracy = {kind: sum(values) / len(values) for kind, values in sorted(wins.items())}
    every = [w for values in wins.values() for w in values]
    accuracy["all"] = sum(every) / max(len(every), 1)
    return accuracy
