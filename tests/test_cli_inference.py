import json

import pytest
from helpers import tiny_model, tiny_tokenizer
from PIL import Image

from vlm.cli import ask, caption
from vlm.model.checkpoint import save_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    tokenizer = tiny_tokenizer()
    save_model(directory, tiny_model(tokenizer), tokenizer)
    return directory


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, colour in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (40, 30), colour).save(folder / f"{index}.png")
    return folder


def run(main, argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_caption_a_folder_as_json(checkpoint, images, capsys):
    code, out, _ = run(
        caption.main, [str(images), "--checkpoint", str(checkpoint), "--json", "--max-new-tokens", "5"], capsys
    )
    assert code == 0
    results = json.loads(out)
    assert [r["image"] for r in results] == [str(images / f"{i}.png") for i in range(3)]
    assert all(isinstance(r["caption"], str) for r in results)


def test_caption_files_with_beam_search_prints_one_line_each(checkpoint, images, capsys):
    argv = [
        str(images / "0.png"),
        str(images / "1.png"),
        "--checkpoint",
        str(checkpoint),
        "--strategy",
        "beam",
        "--beams",
        "2",
    ]
    code, out, _ = run(caption.main, argv, capsys)
    assert code == 0 and len(out.strip().splitlines()) == 2 and out.startswith(str(images / "0.png") + ":")


def test_ask_several_questions_and_from_stdin(checkpoint, images, capsys, monkeypatch):
    argv = ["--image", str(images / "0.png"), "--checkpoint", str(checkpoint), "--json"]
    code, out, _ = run(ask.main, argv + ["--question", "what color?", "--question", "is it red?"], capsys)
    results = json.loads(out)
    assert code == 0 and [r["question"] for r in results] == ["what color?", "is it red?"]
    assert all(r["answer"] == r["reply"].rpartition(", so ")[2] for r in results)  # the answer after any reason
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("what color?\n\nis it red?\n"))
    code, out, _ = run(ask.main, argv, capsys)
    assert code == 0 and len(json.loads(out)) == 2


def test_ask_stream_prints_the_answers_ask_prints(checkpoint, images, capsys, monkeypatch):
    from vlm.inference.predict import Predictor

    encoded = []
    encode = Predictor.encode
    monkeypatch.setattr(Predictor, "encode", lambda self, images: encoded.append(images) or encode(self, images))
    argv = ["--image", str(images / "0.png"), "--checkpoint", str(checkpoint), "--question", "what color?"]
    for questions in (argv, argv + ["--question", "is it red?"]):
        code, expected, _ = run(ask.main, questions, capsys)
        assert code == 0
        code, streamed, _ = run(ask.main, questions + ["--stream"], capsys)
        assert code == 0 and streamed == expected
    assert len(encoded) == 2  # one image encoding per command, however many questions
    code, _, err = run(ask.main, argv + ["--stream", "--json"], capsys)
    assert code == 2 and "does not combine with --json" in err


def test_a_question_longer_than_the_context_is_cut_with_a_warning(checkpoint, images, capsys):
    argv = ["--image", str(images / "0.png"), "--checkpoint", str(checkpoint), "--question", "red " * 200]
    code, out, err = run(ask.main, argv, capsys)
    assert code == 0
    assert "vlm-ask: warning: question of 200 tokens is longer than the model's context allows" in err


def test_caption_and_ask_draw_attention_maps(checkpoint, images, tmp_path, capsys):
    figure = tmp_path / "caption.png"
    argv = [str(images / "0.png"), str(images / "1.png"), "--checkpoint", str(checkpoint), "--max-new-tokens", "4"]
    code, plain, _ = run(caption.main, argv, capsys)
    code_with, with_maps, _ = run(caption.main, argv + ["--attention", str(figure)], capsys)
    assert code == code_with == 0 and plain == with_maps and Image.open(figure).format == "PNG"
    figure = tmp_path / "ask.png"
    argv = ["--image", str(images / "0.png"), "--checkpoint", str(checkpoint), "--question", "what color?"]
    code, _, _ = run(ask.main, argv + ["--question", "is it red?", "--attention", str(figure)], capsys)
    assert code == 0 and Image.open(figure).format == "PNG"
    code, _, _ = run(ask.main, argv + ["--attention", str(figure), "--attention-method", "rollout"], capsys)
    assert code == 0


@pytest.fixture(scope="module")
def reward_checkpoint(tmp_path_factory):
    from vlm.posttrain.reward import RewardModel, save_reward_model

    directory = tmp_path_factory.mktemp("reward")
    tokenizer = tiny_tokenizer()
    save_reward_model(directory, RewardModel(tiny_model(tokenizer)), tokenizer)
    return directory


def test_caption_and_ask_rerank_with_a_reward_model(checkpoint, reward_checkpoint, images, capsys):
    rerank = ["--checkpoint", str(checkpoint), "--rerank", "3", "--reward-model", str(reward_checkpoint), "--json"]
    code, out, _ = run(caption.main, [str(images / "0.png"), "--max-new-tokens", "4", *rerank], capsys)
    assert code == 0 and len(json.loads(out)) == 1
    code, out, _ = run(ask.main, ["--image", str(images / "0.png"), "--question", "what color?", *rerank], capsys)
    assert code == 0 and json.loads(out)[0]["question"] == "what color?"


@pytest.mark.parametrize(
    "main, argv, message",
    [
        (caption.main, ["missing.png"], "vlm-caption: error: missing.png: no such image file or folder"),
        (caption.main, ["{images}/notes.png"], "notes.png: not an image file"),
        (caption.main, ["{empty}"], "folder holds no images"),
        (caption.main, ["{images}/0.png", "--checkpoint", "{images}"], "model.safetensors: missing"),
        (caption.main, ["{images}/0.png", "--checkpoint", "nowhere"], "checkpoint folder 'nowhere' does not exist"),
        (caption.main, ["{images}/0.png", "--top-p", "0"], "top_p in \\(0, 1\\]"),
        (
            ask.main,
            ["--image", "missing.png", "--question", "what?"],
            "vlm-ask: error: missing.png: image file not found",
        ),
        (ask.main, ["--image", "{images}/0.png", "--question", ""], "vlm-ask: error: --question is empty"),
        (ask.main, ["--image", "{images}/0.png", "--question", "what?", "--question", " \t"], "--question is empty"),
        (ask.main, ["--image", "{images}/0.png", "--device", "cuda:99"], "--device cuda:99: no such CUDA GPU"),
        (ask.main, ["--image", "{images}/0.png", "--device", "gpu"], "--device 'gpu' is not a device"),
        (caption.main, ["{images}/0.png", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (caption.main, ["{images}/0.png", "--beams", "0", "--strategy", "beam"], "num_beams must be at least 1"),
        (caption.main, ["{images}/0.png", "--rerank", "0"], "--rerank must be at least 1, got 0"),
        (
            caption.main,
            ["{images}/0.png", "--rerank", "2", "--reward-model", "{empty}"],
            "empty/model.safetensors: missing",
        ),
        (
            ask.main,
            ["--image", "{images}/0.png", "--rerank", "2", "--reward-model", "{checkpoint}"],
            "reward_head.safetensors: missing; .* is a model folder but not a reward model",
        ),
        (caption.main, ["{images}/0.png", "--attention", "maps.txt"], "--attention maps.txt: the figure must end in"),
        (caption.main, ["{images}/0.png", "--attention", "nowhere/maps.png"], "folder 'nowhere' does not exist"),
        (
            ask.main,
            ["--image", "{images}/0.png", "--attention", "{empty}/maps.png"] + ["--question", "what?"] * 17,
            "--attention draws at most 16 images or questions; got 17",
        ),
    ],
)
def test_user_mistakes_print_a_message_and_exit_2(
    main, argv, message, checkpoint, images, tmp_path, capsys, monkeypatch
):
    (images / "notes.png").write_text("this is text, not a picture")
    (tmp_path / "empty").mkdir()
    argv = [a.format(images=images, empty=tmp_path / "empty", checkpoint=checkpoint) for a in argv]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(checkpoint)]
    if main is ask.main and "--question" not in argv:
        argv += ["--question", "what?"]
    code, _, err = run(main, argv, capsys)
    assert code == 2
    assert "Traceback" not in err
    import re

    assert re.search(message, err), err
