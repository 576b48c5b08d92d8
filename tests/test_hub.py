"""Hugging Face conventions: save_pretrained / from_pretrained, the model card, and Hub repo ids resolved from the
local Hub cache (filled by the test: nothing goes to the network)."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import put_in_hub_cache, tiny_model, tiny_tokenizer
from PIL import Image

from vlm.cli import caption
from vlm.model.checkpoint import CheckpointError, load_model, save_model
from vlm.model.hub import model_card, resolve_model_folder
from vlm.model.tokenizer import Tokenizer
from vlm.model.vision_language_model import VisionLanguageModel

huggingface_hub = pytest.importorskip("huggingface_hub")  # the `hub` extra


@pytest.fixture(scope="module")
def trained():
    tokenizer = tiny_tokenizer()
    return tiny_model(tokenizer, seed=2), tokenizer


def image_batch(model: VisionLanguageModel) -> torch.Tensor:
    size = model.config.vision.image_size
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_save_pretrained_then_from_pretrained_gives_identical_outputs(trained, tmp_path):
    model, tokenizer = trained
    folder = model.save_pretrained(tmp_path / "tiny-vlm", tokenizer)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "vocab.json"]
    loaded = VisionLanguageModel.from_pretrained(folder)
    ids = torch.tensor([tokenizer.question_prompt("what color is the circle?")] * 2)
    with torch.no_grad():
        assert torch.equal(loaded.logits(image_batch(model), ids), model.logits(image_batch(model), ids))
    assert Tokenizer.from_pretrained(folder).bpe_ids == tokenizer.bpe_ids


def write_run(run_dir: Path) -> None:
    """A run folder as vlm-train and vlm-evaluate leave it (only the files the card reads)."""
    run_dir.mkdir()
    train = {"data": ["shapes", "easy_vqa"], "weights": [3.0, 1.0], "max_steps": 1289, "optimizer": "muon"}
    (run_dir / "config.json").write_text(json.dumps({"model": {}, "train": train}))
    (run_dir / "metrics.jsonl").write_text('{"step": 10, "train_loss": 2.0}\n{"step": 20, "val_loss": 1.0}\n')
    captions = {"BLEU-4": 0.948, "METEOR": 0.683, "ROUGE-L": 0.972, "CIDEr": 6.5987, "images": 500, "blind": False}
    answers = {"metric": "exact_match", "overall": 0.99793, "questions": 9673, "per_answer_type": {"yes/no": 0.5}}
    for name, metrics in (("shapes-test", captions), ("easy_vqa-test", answers)):
        (run_dir / f"eval-{name}").mkdir()
        (run_dir / f"eval-{name}" / "metrics.json").write_text(json.dumps(metrics))


def test_the_model_card_lists_the_runs_data_and_metrics(trained, tmp_path):
    model, tokenizer = trained
    write_run(tmp_path / "run")
    folder = model.save_pretrained(tmp_path / "run" / "model", tokenizer, run_dir=tmp_path / "run")
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: vlm\n") and "pipeline_tag: image-to-text" in card
    assert "| shapes-test | 500 images | CIDEr | 6.599 |" in card
    assert "| shapes-test | 500 images | BLEU-4 | 0.948 |" in card
    assert "| easy_vqa-test | 9673 questions | accuracy (exact match) | 0.998 |" in card
    assert "shapes (weight 3), easy_vqa (weight 1)" in card and "steps trained 20, max_steps 1289" in card
    assert 'VisionLanguageModel.from_pretrained("model")' in card
    assert "No evaluation results" in model_card(model, "bare")


def test_a_hub_repo_id_resolves_from_the_local_cache(trained, tmp_path, offline_cache, capsys):
    model, tokenizer = trained
    save_model(tmp_path / "model", model, tokenizer)
    snapshot = put_in_hub_cache(offline_cache, "someone/tiny-vlm", tmp_path / "model")
    (cached,) = huggingface_hub.scan_cache_dir(offline_cache).repos  # the layout is the library's own
    assert cached.repo_id == "someone/tiny-vlm" and cached.nb_files == 3
    assert resolve_model_folder("someone/tiny-vlm") == snapshot
    loaded, _ = load_model("someone/tiny-vlm")
    with torch.no_grad():
        assert torch.equal(loaded.encode_images(image_batch(model)), model.encode_images(image_batch(model)))
    image = tmp_path / "red.png"
    Image.new("RGB", (20, 20), "red").save(image)
    outputs = []
    for checkpoint in ("someone/tiny-vlm", str(tmp_path / "model")):
        caption.main([str(image), "--checkpoint", checkpoint, "--max-new-tokens", "4", "--json"])
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and outputs[0][0]["image"] == str(image)


def test_a_repo_id_missing_from_the_cache_offline_is_one_line_and_exit_2(tmp_path, offline_cache, capsys):
    with pytest.raises(CheckpointError, match="not in the local cache .* while offline"):
        resolve_model_folder("nobody/missing-model")
    with pytest.raises(CheckpointError, match="checkpoint folder 'runs/absent/model' does not exist"):
        resolve_model_folder("runs/absent/model")  # a path, not a repo id: never asked of the Hub
    image = tmp_path / "red.png"
    Image.new("RGB", (20, 20), "red").save(image)
    with pytest.raises(SystemExit) as exit_:
        caption.main([str(image), "--checkpoint", "nobody/missing-model"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert err.startswith("vlm-caption: error: 'nobody/missing-model' is not a folder, and the Hugging Face Hub repo")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "error, reason", [(OSError("no route to host\nretried 5 times"), "no route to host"), (OSError(), "OSError")]
)
def test_online_a_repo_id_the_hub_cannot_give_names_the_first_line_of_its_error(monkeypatch, error, reason):
    def refuse(repo_id):
        raise error

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)  # the network stands in: nothing is sent
    message = f"'nobody/missing-model' is not a folder, and the Hugging Face Hub could not give it: {reason}"
    with pytest.raises(CheckpointError) as raised:
        resolve_model_folder("nobody/missing-model")
    assert str(raised.value) == message


def test_without_huggingface_hub_a_repo_id_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(CheckpointError, match=r"pip install -e '\.\[hub\]'"):
        resolve_model_folder("someone/tiny-vlm")


def test_push_to_hub_uploads_the_model_folder_with_its_card(trained, tmp_path, monkeypatch):
    model, tokenizer = trained
    uploads = []

    class RecordingApi:  # stands in for the Hub's HTTP API
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            uploads.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            uploads.append((repo_id, {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}, commit_message))
            return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/0"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    url = model.push_to_hub("someone/tiny-vlm", tokenizer)
    created, (repo_id, files, message) = uploads
    assert created == (
        "create_repo",
        "someone/tiny-vlm",
        None,
        True,
    )  # the Hub decides privacy unless asked; kept if it exists
    assert repo_id == "someone/tiny-vlm" and message == "Upload vlm model" and url.endswith("someone/tiny-vlm/commit/0")
    assert sorted(files) == ["README.md", "config.json", "model.safetensors", "vocab.json"]
    assert b'from_pretrained("someone/tiny-vlm")' in files["README.md"]
    with pytest.raises(CheckpointError, match="not a Hugging Face Hub repo id"):
        model.push_to_hub("no-owner", tokenizer)


def test_the_model_card_in_full(trained, tmp_path):
    """Every line of the card for a known run: the data and recipe from its config.json, the last step its
    metrics.jsonl logged (lines without an integer step skipped), each evaluation's figures in CARD_METRICS order,
    a blind evaluation marked as such, and usage naming the repo id."""
    model, _ = trained
    run = tmp_path / "run"
    run.mkdir()
    train = {"data": ["shapes", "easy_vqa"], "weights": [3.0, 0.5], "max_steps": 1289, "batch_size": 64,
             "optimizer": "muon", "lr_decoder": 0.0005, "seed": 1, "augment": True}  # fmt: skip
    (run / "config.json").write_text(json.dumps({"model": {}, "train": train}))
    log = ['{"step": 10, "train_loss": 2.0}', "", '{"step": 30, "val_loss": 1.0}', '{"step": "late"}', '{"step": 20}']
    (run / "metrics.jsonl").write_text("\n".join(log) + "\n")
    captions = {"BLEU-4": 0.948, "METEOR": 0.683, "ROUGE-L": 0.972, "CIDEr": 6.5987, "objects_named_correctly": 0.976,
                "images": 500, "blind": False, "SPICE": None}  # fmt: skip
    answers = {"metric": "exact_match", "overall": 0.99793, "questions": 9673, "blind": True}
    for name, metrics in (("shapes-test", captions), ("easy_vqa-test", answers)):
        (run / f"eval-{name}").mkdir()
        (run / f"eval-{name}" / "metrics.json").write_text(json.dumps(metrics))
    config = model.config
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    assert config.max_positions == config.num_image_tokens + config.max_text_len
    expected = f"""---
library_name: vlm
license: mit
pipeline_tag: image-to-text
tags: [vision-language-model, image-captioning, visual-question-answering]
---

# someone/tiny-vlm

A miniature vision-language model made with vlm: a ViT image encoder, a projector and a GPT decoder that caption \
images and answer questions about them.

## Model

- {parameters:.2f} M parameters; 32x32 px images in 4 image tokens
- vision encoder: 1 layers of width 32, 8 px patches
- projector: pixel_shuffle, 2x2 patches per image token
- decoder: 2 layers of width 32, {config.decoder.vocab_size} token rows, {config.max_positions} positions, prefix-LM \
attention over the image
- files: `model.safetensors` (weights), `config.json` (the full config), `vocab.json` (the tokenizer)

## Training data

Data sets (vlm's catalogue, `vlm/data/catalog.py`): shapes (weight 3), easy_vqa (weight 0.5).
Recipe: steps trained 30, max_steps 1289, batch_size 64, optimizer muon, lr_decoder 0.0005, seed 1.

## Evaluation

Measured by `vlm-evaluate` on held-out test splits (eval-*/metrics.json of the training run).

| evaluation | examples | metric | value |
|---|---|---|---|
| easy_vqa-test (blind) | 9673 questions | accuracy (exact match) | 0.998 |
| shapes-test | 500 images | BLEU-4 | 0.948 |
| shapes-test | 500 images | METEOR | 0.683 |
| shapes-test | 500 images | ROUGE-L | 0.972 |
| shapes-test | 500 images | CIDEr | 6.599 |
| shapes-test | 500 images | objects named correctly | 0.976 |

## Usage

```python
from vlm import Tokenizer, VisionLanguageModel
from vlm.inference.predict import Predictor

model = VisionLanguageModel.from_pretrained("someone/tiny-vlm")  # a Hub repo id or a local folder
tokenizer = Tokenizer.from_pretrained("someone/tiny-vlm")
predictor = Predictor(model, tokenizer)
print(predictor.caption(["photo.png"])[0])
print(predictor.answer(["photo.png"], ["what color is the circle?"])[0])
```

or `vlm-caption photo.png --checkpoint someone/tiny-vlm`, `vlm-ask --image photo.png --question ... --checkpoint \
someone/tiny-vlm` and `vlm-demo --checkpoint someone/tiny-vlm`.
"""
    assert model_card(model, "someone/tiny-vlm", run) == expected


def test_the_model_card_without_a_run_config_or_data_names(trained, tmp_path):
    model, _ = trained
    card = model_card(model, "m", tmp_path)  # a folder without config.json or evaluations
    assert "\nThe training run's config.json was not given, so its data and recipe are not recorded here.\n" in card
    assert "\nNo evaluation results were found beside this model (`vlm-evaluate` writes them to eval-*/).\n" in card
    (tmp_path / "config.json").write_text(json.dumps({"train": {"weights": [1.0, 2.0], "seed": 3}}))
    card = model_card(model, "m", tmp_path)
    assert "The run's config.json does not name its data sets; mixture weights [1.0, 2.0].\nRecipe: seed 3.\n" in card
    (tmp_path / "config.json").write_text(json.dumps({"train": {"data": ["shapes", "easy_vqa"]}}))
    assert "Data sets (vlm's catalogue, `vlm/data/catalog.py`): shapes, easy_vqa.\n" in model_card(model, "m", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": {}}))  # no train section at all
    (tmp_path / "metrics.jsonl").write_text('{"train_loss": 2.0}\n')  # no step logged
    card = model_card(model, "m", tmp_path)
    assert "\nThe run's config.json does not name its data sets.\nRecipe: .\n" in card


def test_the_model_card_of_a_causal_model_with_an_evaluation_that_counts_nothing(trained, tmp_path):
    model, _ = trained
    causal = VisionLanguageModel(replace(model.config, prefix_lm=False))
    (tmp_path / "eval-mine").mkdir()
    (tmp_path / "eval-mine" / "metrics.json").write_text(json.dumps({"CIDEr": 1.25}))
    card = model_card(causal, "m", tmp_path)
    assert f"{causal.config.max_positions} positions\n" in card and "prefix-LM" not in card
    assert "\n| mine |  | CIDEr | 1.250 |\n" in card


def test_a_repo_id_is_an_owner_and_a_name_without_a_parent_folder():
    from vlm.model.hub import is_repo_id

    assert is_repo_id("someone/tiny-vlm") and is_repo_id("some.one/tiny_vlm-2")
    for name in ("tiny-vlm", "someone/tiny..vlm", "some..one/tiny-vlm", "./tiny-vlm", "someone/tiny/vlm", "/abs/path"):
        assert not is_repo_id(name), name


def test_push_to_hub_passes_the_token_the_privacy_and_the_runs_figures(trained, tmp_path, monkeypatch):
    model, tokenizer = trained
    calls = {}

    class RecordingApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["private"] = private

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls["card"] = (Path(folder_path) / "README.md").read_text()
            return type("Commit", (), {"commit_url": "url"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    write_run(tmp_path / "run")
    model.push_to_hub("someone/tiny-vlm", tokenizer, run_dir=tmp_path / "run", private=True, token="hf_x")
    assert calls["token"] == "hf_x" and calls["private"] is True
    assert "| shapes-test | 500 images | CIDEr | 6.599 |" in calls["card"]


def test_from_pretrained_loads_onto_the_device_asked_for_in_eval_mode(trained, tmp_path):
    model, tokenizer = trained
    folder = model.save_pretrained(tmp_path / "model", tokenizer)
    loaded = VisionLanguageModel.from_pretrained(folder, device="meta")
    assert not loaded.training and next(loaded.parameters()).device.type == "meta"
