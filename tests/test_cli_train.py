import json

import pytest

from vlm.cli.train import main
from vlm.data.catalog import parse_data_spec
from vlm.model.checkpoint import load_model


def test_train_command_runs_a_tiny_model_on_the_built_in_data_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "--preset",
        "tiny",
        "--data",
        "shapes:1,shapes_vqa:1,easy_vqa:2",
        "--max-steps",
        "4",
        "--batch-size",
        "4",
        "--eval-every",
        "2",
        "--val-samples",
        "4",
        "--num-workers",
        "0",
        "--dtype",
        "float32",
        "--set",
        "decoder.depth=1",
        "--out-dir",
        str(out),
    ]
    main(argv)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in validation] == [2, 4]
    assert {"val_cider", "val_objects_named_correctly", "val_vqa_accuracy"} <= set(validation[0])
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["model"]["decoder"]["depth"] == 1 and resolved["train"]["weights"] == [1.0, 1.0, 2.0]
    assert resolved["train"]["data"] == ["shapes", "shapes_vqa", "easy_vqa"]  # for the model card
    model, _ = load_model(out / "model")
    assert model.config.decoder.depth == 1
    main(argv[:5] + ["6"] + argv[6:] + ["--resume"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4, 6]
    assert "trained 6 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "imagenet"], "unknown data set 'imagenet'"),
        (["--data", "shapes:heavy"], "weight 'heavy' of 'shapes'"),
        (["--set", "decoder.width=33"], "decoder.width=33 is not divisible by decoder.heads=4"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--loss-mean", "batch"], "loss_mean must be 'token' or 'sample', got 'batch'"),
        (["--optimizer", "sgd"], "optimizer must be 'muon' or 'adamw', got 'sgd'"),
        (["--packed-text-len", "-1"], "packed_text_len must be 0 (off) or a number of tokens, got -1"),
        (["--packed-sources", "easy_vqa"], "packed_sources and packed_texts need packing on: set packed_text_len too"),
        (["--freeze", "encoder,head"], "freeze: no model part 'head'; the parts are encoder, projector, decoder"),
        (["--freeze", "projector,decoder", "--freeze-encoder"], "freeze: every part frozen"),
        (["--set", "vision.pretrained=vit_small_patch16_224", "--set", "vision.depth=6"], "vision.depth is its own"),
        (["--crop-scale", "0"], "crop_scale must be in (0, 1], got 0.0"),
        (["--resize", "stretch"], "invalid choice: 'stretch'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        # An out-dir of the test's own: were the check ever to let the run start, it must not write to runs/main
        main(argv + ["--out-dir", str(tmp_path / "run")] if "--out-dir" not in argv else argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_packing_a_source_the_data_lacks_exits_2_before_training(tmp_path, capsys):
    argv = ["--preset", "tiny", "--data", "shapes", "--packed-text-len", "32", "--packed-sources", "easy_vqa"]
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--val-samples", "2", "--out-dir", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "cannot pack easy_vqa: the training data's sources are shapes" in error
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_data_spec_parsing():
    assert parse_data_spec("shapes, easy_vqa:2.5") == [("shapes", 1.0), ("easy_vqa", 2.5)]


def test_freeze_flags_name_the_parts_training_keeps():
    from vlm.cli.common import config_from_args
    from vlm.cli.train import NOT_FLAGS, build_parser
    from vlm.training.loop import TrainConfig

    def frozen(argv):
        return config_from_args(TrainConfig, build_parser().parse_args(argv), NOT_FLAGS).frozen_parts

    assert frozen([]) == ()
    assert frozen(["--freeze-encoder"]) == ("encoder",)
    assert frozen(["--freeze", "decoder, projector"]) == ("decoder", "projector")
    assert frozen(["--freeze", "projector", "--freeze-encoder"]) == ("projector", "encoder")


def test_a_pretrained_encoder_that_cannot_be_downloaded_is_one_line_of_error(tmp_path, monkeypatch, capsys):
    """Offline (HF_HUB_OFFLINE, an empty hub cache): the user is told what to do, with no traceback."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # huggingface_hub reads the variable once, at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    argv = ["--preset", "tiny", "--data", "shapes", "--val-samples", "2", "--out-dir", str(tmp_path / "run")]
    argv += ["--set", "vision.pretrained=vit_small_patch16_224.augreg_in1k", "--set", "vision.image_size=32"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    error = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and error.count("\n") == 0, error
    assert error.startswith("vlm-train: error: vision.pretrained=vit_small_patch16_224.augreg_in1k: timm could not")
    assert "pass vision.weights_file=PATH" in error


def test_resume_before_the_first_checkpoint_starts_the_run_afresh_without_the_dead_runs_log(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints" / "last.new").mkdir(parents=True)  # a first save killed half-way
    (out / "metrics.jsonl").write_text(json.dumps({"step": 7, "train_loss": 99.0}) + "\n")
    (out / "model").mkdir()
    (out / "model" / "from_the_dead_run.txt").write_text("a best model saved before the checkpoint was killed")
    argv = ["--preset", "tiny", "--data", "shapes", "--max-steps", "2", "--batch-size", "2", "--eval-every", "2"]
    argv += ["--val-samples", "2", "--num-workers", "0", "--dtype", "float32", "--out-dir", str(out), "--resume"]
    main(argv)
    assert "has no checkpoint yet (its run stopped before the first): starting it afresh" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == [2] and all(r["step"] <= 2 for r in records)
    assert (out / "checkpoints" / "last" / "trainer_state.json").is_file()
    assert not (out / "checkpoints" / "last.new").exists() and not (out / "model" / "from_the_dead_run.txt").exists()


def captured_training(monkeypatch, argv: list[str]) -> tuple:
    """(model config, training data) that vlm-train would train with."""
    import vlm.cli.train

    seen = {}

    def fake_train(model_config, train_config, data, **kwargs):
        seen.update(model_config=model_config, data=data)
        raise SystemExit(0)

    monkeypatch.setattr(vlm.cli.train, "train", fake_train)
    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--val-samples", "1", *argv])
    return seen["model_config"], seen["data"]


def test_preprocessing_flags_reach_the_transforms_and_the_saved_config(tmp_path, monkeypatch):
    from PIL import Image

    (tmp_path / "train").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "train" / "a.png")
    (tmp_path / "train" / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "a photo"}) + "\n")
    folder = ["--data", f"folder:{tmp_path}", "--out-dir", str(tmp_path / "run")]

    config, data = captured_training(monkeypatch, folder)  # photos: their defaults
    transform = data.train_transform
    assert (transform.resize, transform.crop_scale, transform.flip) == ("pad", 0.7, True) and transform.jitter
    assert config.vision.resize == "pad" and data.eval_transform.resize == "pad" and not data.eval_transform.flip

    flags = ["--resize", "crop", "--crop-scale", "1", "--jitter", "0", "--shift", "0.1", "--no-flip"]
    config, data = captured_training(monkeypatch, folder + flags)
    transform = data.train_transform
    assert (transform.resize, transform.crop_scale, transform.jitter, transform.flip) == ("crop", 1, None, False)
    assert transform.shift == round(0.1 * config.vision.image_size) and config.vision.resize == "crop"

    config, data = captured_training(monkeypatch, ["--data", "shapes", "--out-dir", str(tmp_path / "run")])
    transform = data.train_transform  # the built-in scenes: the transform they always had
    assert (transform.resize, transform.crop_scale, transform.jitter, transform.flip) == ("crop", 1, None, False)
    config, data = captured_training(monkeypatch, ["--data", "shapes", "--flip", "--out-dir", str(tmp_path / "run")])
    assert data.train_transform.flip


def test_validation_generates_for_a_few_of_its_samples_per_data_set(tmp_path, monkeypatch):
    import vlm.cli.train

    generated_per_set = []
    real_metrics = vlm.cli.train.generation_metrics

    def recording_metrics(mixture, paths, count, tokenizer, blind):
        generated_per_set.append(count)
        return real_metrics(mixture, paths, count, tokenizer, blind)

    monkeypatch.setattr(vlm.cli.train, "generation_metrics", recording_metrics)
    run = ["--data", "shapes", "--out-dir", str(tmp_path / "run")]
    for flags in (["--val-samples", "256"], ["--val-samples", "8"], ["--val-samples", "8", "--val-generations", "3"]):
        captured_training(monkeypatch, run + flags)
    assert generated_per_set == [64, 8, 3]  # never more than the validation samples
