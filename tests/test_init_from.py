"""Starting a new run from a trained model (`vlm-train --init-from`): the vocabulary grows, every old token keeps its
id and its embedding (= output) row, the config is the model's, and training goes on from there."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlm.cli.train import main
from vlm.data.shapes import ShapesDataset
from vlm.model.checkpoint import load_model
from vlm.model.tokenizer import SPECIAL_TOKENS, Tokenizer
from vlm.training.init_from import extend_embedding, model_config_of

SURFING = "A man riding a wave on top of a surfboard."
COCO_LIKE = [
    SURFING,
    "A man riding a wave on a surfboard in the ocean.",
    "Two dogs playing with a frisbee on the grass.",
]


def shapes_tokenizer() -> Tokenizer:
    return Tokenizer.build(ShapesDataset("train", num_images=200).texts())


def test_an_extended_vocabulary_keeps_every_old_id_and_spells_new_text_in_few_tokens(tmp_path):
    old = shapes_tokenizer()
    new = old.extend(COCO_LIKE)
    assert new.bpe_ids[: len(old.bpe_ids)] == old.bpe_ids
    assert new.num_tokens > old.num_tokens
    for text in ("a big red circle left of two small blue squares", "what color is the cross?"):
        assert new.encode(text) == old.encode(text)
    before, after = len(old.encode(SURFING)), len(new.encode(SURFING))
    assert before >= 30 and after <= 12, (before, after)
    assert new.decode(new.encode(SURFING)) == SURFING
    new.save(tmp_path)  # saved and loaded in its own order, not re-sorted
    assert Tokenizer.load(tmp_path).bpe_ids == new.bpe_ids and new.bpe_ids != sorted(new.bpe_ids)


def test_extend_embedding_keeps_old_rows_and_starts_new_ones_from_their_bytes():
    old = shapes_tokenizer()
    new = old.extend(["surfboard"])
    embedding = torch.randn(old.vocab_size, 8)
    extended = extend_embedding(embedding, old, new)
    assert extended.shape == (new.vocab_size, 8)
    assert torch.equal(extended[: old.num_tokens], embedding[: old.num_tokens])
    new_ids = range(old.num_tokens, new.num_tokens)
    assert len(new_ids) >= 2  # " surfboard" is two cl100k tokens neither of which the scenes use
    for model_id in new_ids:  # each new row: the mean of the rows of the bytes that spelled it
        token = new.encoding.decode_single_token_bytes(new.bpe_ids[model_id - len(SPECIAL_TOKENS)])
        assert torch.allclose(extended[model_id], embedding[old.encode_bytes(token)].mean(dim=0))
    assert torch.equal(extended[new.num_tokens :], torch.zeros(new.vocab_size - new.num_tokens, 8))


def caption_folder(root: Path, captions: list[str]) -> Path:
    for split in ("train", "test"):
        folder = root / split
        folder.mkdir(parents=True)
        rows = []
        for index, caption in enumerate(captions):
            Image.new("RGB", (40, 30), (40 * index, 120, 200)).save(folder / f"{index}.jpg")
            rows.append(json.dumps({"file_name": f"{index}.jpg", "text": caption}))
        (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


TINY_RUN = ["--max-steps", "1", "--time-budget-min", "0", "--batch-size", "2", "--eval-every", "1"]
TINY_RUN += ["--val-samples", "2", "--num-workers", "0", "--dtype", "float32", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def shapes_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "run"
    main(["--preset", "tiny", "--set", "decoder.depth=1", "--data", "shapes", "--out-dir", str(out), *TINY_RUN])
    return out / "model"


def test_init_from_keeps_every_old_embedding_and_output_row_and_adds_the_new_ones(shapes_model, tmp_path, capsys):
    folder = caption_folder(tmp_path / "photos", COCO_LIKE)
    out = tmp_path / "run"
    frozen = ["--lr-decoder", "0", "--lr-projector", "0", "--lr-encoder", "0", "--weight-decay", "0"]
    main(["--init-from", str(shapes_model), "--data", f"folder:{folder}", "--out-dir", str(out), *TINY_RUN, *frozen])
    old_model, old_tokenizer = load_model(shapes_model)
    new_model, new_tokenizer = load_model(out / "model")
    added = new_tokenizer.num_tokens - old_tokenizer.num_tokens
    assert added > 0 and f"extended by {added} from the new data" in capsys.readouterr().out
    assert new_model.config.decoder.depth == 1 and new_model.config.vision.width == old_model.config.vision.width
    old_rows = old_model.decoder.token_embedding.weight[: old_tokenizer.num_tokens]
    assert torch.equal(new_model.decoder.token_embedding.weight[: old_tokenizer.num_tokens], old_rows)
    hidden = torch.randn(3, old_model.config.decoder.width)
    with torch.no_grad():  # the output layer: every old token's logit as before
        old_logits, new_logits = old_model.decoder.forward_head(hidden), new_model.decoder.forward_head(hidden)
    assert torch.equal(new_logits[:, : old_tokenizer.num_tokens], old_logits[:, : old_tokenizer.num_tokens])
    for name, tensor in old_model.state_dict().items():  # and every other weight, at learning rate 0
        if name != "decoder.token_embedding.weight":
            assert torch.equal(new_model.state_dict()[name], tensor), name


def test_a_run_from_a_model_trains(shapes_model, tmp_path):
    folder = caption_folder(tmp_path / "photos", COCO_LIKE)
    out = tmp_path / "run"
    main(["--init-from", str(shapes_model), "--data", f"folder:{folder}", "--out-dir", str(out), *TINY_RUN])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == [1]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in records if "train_loss" in r)
    old_model, _ = load_model(shapes_model)
    new_model, _ = load_model(out / "model")
    changed = [
        n
        for n, t in old_model.state_dict().items()
        if n in new_model.state_dict()
        and t.shape == new_model.state_dict()[n].shape
        and not torch.equal(t, new_model.state_dict()[n])
    ]
    assert changed  # a step was taken from the model's weights
    assert json.loads((out / "config.json").read_text())["model"]["decoder"]["depth"] == 1


def test_init_from_refuses_a_preset_and_a_missing_model(shapes_model, tmp_path, capsys):
    for argv, message in [
        (["--init-from", str(shapes_model), "--preset", "tiny"], "--init-from takes the model's config"),
        (["--init-from", str(tmp_path / "nothing")], "no config.json"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--data", "shapes", "--out-dir", str(tmp_path / "run"), *TINY_RUN])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_models_config_is_used_without_the_weights_file_it_began_with(shapes_model, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    config = json.loads((shapes_model / "config.json").read_text())
    config["vision"]["weights_file"] = str(tmp_path / "long_gone.safetensors")  # its encoder began from a file
    (model_dir / "config.json").write_text(json.dumps(config))
    loaded = model_config_of(model_dir)
    assert loaded.vision.weights_file is None and loaded.decoder.depth == 1
