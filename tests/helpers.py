"""Small builders shared by the tests: a tiny model with a real tokenizer, batches made from text, a crash after a
checkpoint, files laid out as a Hub download."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from vlm.data.batch import collate, encode_example
from vlm.model.config import VLMConfig, get_preset
from vlm.model.tokenizer import Tokenizer
from vlm.model.vision_language_model import VisionLanguageModel

TEXTS = ["a red circle", "two blue squares above a green star", "what color is the circle?", "red", "yes"]


def tiny_tokenizer() -> Tokenizer:
    return Tokenizer.build(TEXTS)


def tiny_model(tokenizer: Tokenizer, config: VLMConfig | None = None, seed: int = 0) -> VisionLanguageModel:
    config = config or get_preset("tiny")
    config.decoder.vocab_size = tokenizer.vocab_size
    torch.manual_seed(seed)
    return VisionLanguageModel(config).eval()


def text_batch(tokenizer: Tokenizer, config: VLMConfig, pairs: list[tuple[str | None, str]], seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    size = config.vision.image_size
    examples = [
        encode_example(tokenizer, torch.randn(3, size, size, generator=generator), q, t, config.max_text_len)
        for q, t in pairs
    ]
    return collate(examples, tokenizer.pad_id)


COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}


class ColourSamples(torch.utils.data.Dataset):
    """Solid-colour images captioned with their colour, or asked about it: learnable in a few steps. With
    `both_tasks`, every image has a caption and a question (two samples, one image id), as packing needs."""

    def __init__(self, count: int, size: int = 32, seed: int = 0, both_tasks: bool = False):
        from PIL import Image

        from vlm.data.sample import Sample

        generator = torch.Generator().manual_seed(seed)
        names = list(COLOURS)
        self.samples = []
        for index in range(count):
            name = names[int(torch.randint(len(names), (1,), generator=generator))]
            image = Image.new("RGB", (size, size), COLOURS[name])
            for question in (
                ("what color is it?", None) if both_tasks else ("what color is it?" if index % 2 else None,)
            ):
                target = name if question else f"a {name} picture"
                self.samples.append(
                    Sample(
                        image=image,
                        target=target,
                        question=question,
                        references=[target],
                        image_id=index,
                        source="colours",
                    )
                )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.samples[index]


@contextmanager
def killed_after_checkpoint(monkeypatch: pytest.MonkeyPatch, step: int) -> Iterator[None]:
    """Training inside the block is killed (KeyboardInterrupt) right after it saves its step-`step` checkpoint, as
    `kill -9` would leave it; the block must be killed, and saving is itself again afterwards."""
    import vlm.training.loop as train_module

    save = train_module.save_training_checkpoint

    def save_then_crash(directory, model, tokenizer, optimizer, state, config):
        save(directory, model, tokenizer, optimizer, state, config)
        if state.step == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_training_checkpoint", save_then_crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(train_module, "save_training_checkpoint", save)


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Lay `folder`'s files out as a download of `repo_id`'s main branch would: blobs named by hash, a snapshot of
    links to them, refs/main naming the snapshot's commit."""
    from huggingface_hub.file_download import repo_folder_name

    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sorted(folder.iterdir()):
        blob = storage / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.write_bytes(file.read_bytes())
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    return snapshot
