"""vlm-demo: the page's functions called directly, then the app launched on 127.0.0.1 and driven by gradio_client."""

import socket

import pytest
from helpers import tiny_model, tiny_tokenizer
from PIL import Image

from vlm.cli.demo import Demo, DemoError, decoding_config, example_scenes, launch, make_app
from vlm.inference.generate import GenerationConfig
from vlm.inference.predict import Predictor
from vlm.model.checkpoint import load_model, save_model


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tokenizer = tiny_tokenizer()
    save_model(folder, tiny_model(tokenizer, seed=3), tokenizer)  # a seed whose outputs are not empty
    return Predictor(*load_model(folder))


@pytest.fixture()
def demo(predictor, tmp_path):
    return Demo(predictor, tmp_path / "work")


@pytest.fixture()
def image_file(tmp_path):
    path = tmp_path / "scene.png"
    example_scenes(tmp_path / "examples", 32)[0].rename(path)
    return path


def counting_encoder(predictor, monkeypatch) -> list[int]:
    calls = []
    encode_images = predictor.model.encode_images
    monkeypatch.setattr(
        predictor.model, "encode_images", lambda images: calls.append(len(images)) or encode_images(images)
    )
    return calls


def test_caption_streams_the_greedy_caption_and_draws_its_attention(demo, predictor, image_file, monkeypatch):
    token_ids = []
    texts = list(demo.caption(str(image_file), GenerationConfig(), token_ids))
    assert texts[-1] == predictor.caption([str(image_file)])[0]
    assert len(texts) > 1 and all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    figure = demo.attention_figure(str(image_file), texts[-1], token_ids)
    with Image.open(figure) as picture:
        assert picture.width > 0 and picture.height > 0


def test_questions_about_one_image_encode_it_once(demo, predictor, image_file, monkeypatch):
    image = Image.open(image_file)
    calls = counting_encoder(predictor, monkeypatch)
    caption_ids = []
    caption = list(demo.caption(image, token_ids=caption_ids))[-1]
    demo.attention_figure(image, caption, caption_ids)
    questions = ["what color is the circle?", "red?", "two blue squares above a green star?"]
    answers = [list(demo.ask(image.copy(), q))[-1] for q in questions]  # the same pixels, a new object each time
    assert calls == [1]
    monkeypatch.undo()
    assert answers == predictor.answer([image_file] * 3, questions) and all(answers)
    list(demo.ask(Image.new("RGB", (32, 32), "blue"), "red?"))
    assert len(demo._image_tokens) == 2


def test_a_file_that_is_not_an_image_gets_a_message_not_a_traceback(demo, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not pixels")
    with pytest.raises(DemoError, match=r"^That file is not an image this demo can read: notes.txt: not an image"):
        list(demo.caption(str(notes)))
    with pytest.raises(DemoError, match="Type a question"):
        list(demo.ask(str(notes), "  "))
    with pytest.raises(DemoError, match="Drop, paste or pick an image first"):
        list(demo.caption(None))
    with pytest.raises(DemoError, match="Decoding options: temperature must be > 0"):
        decoding_config("sample", 4, 0.0, 0, 1.0, 32)
    assert decoding_config("beam", 3.0, 1.0, 0, 1.0, 16) == GenerationConfig(
        max_new_tokens=16, strategy="beam", num_beams=3
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_app_captions_answers_and_refuses_a_bad_file_over_http(predictor, image_file, tmp_path, monkeypatch):
    gradio_client = pytest.importorskip("gradio_client")  # the `demo` extra
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    app, work_dir = make_app(predictor, "test")
    port = free_port()
    launch(app, work_dir, port, prevent_thread_lock=True)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        options = ("greedy", 4, 1.0, 0, 1.0, 32)
        caption, attention = client.predict(gradio_client.handle_file(str(image_file)), *options, api_name="/caption")
        assert caption == predictor.caption([str(image_file)])[0]
        assert Image.open(attention).width > 0
        question = "what color is the circle?"
        history, cleared = client.predict(
            gradio_client.handle_file(str(image_file)), question, [], *options, api_name="/ask"
        )
        assert cleared == "" and [m["role"] for m in history] == ["user", "assistant"]
        answer = history[1]["content"]  # gradio 6 gives a message's content as parts
        answer = answer if isinstance(answer, str) else "".join(part["text"] for part in answer)
        assert answer == predictor.answer([str(image_file)], [question])[0] != ""
        with pytest.raises(Exception, match="Type a question about the image first"):
            client.predict(gradio_client.handle_file(str(image_file)), " ", [], *options, api_name="/ask")
        notes = tmp_path / "notes.txt"
        notes.write_text("not pixels")
        with pytest.raises(Exception, match="notes.txt is not an image this demo can read"):
            client.predict(gradio_client.handle_file(str(notes)), *options, api_name="/caption")
    finally:
        app.close()


def test_without_gradio_vlm_demo_says_which_extra_to_install(monkeypatch, capsys):
    import sys

    from vlm.cli import demo

    monkeypatch.setitem(sys.modules, "gradio", None)  # import fails as if not installed
    with pytest.raises(SystemExit) as exit_:
        demo.main(["--checkpoint", "does/not-matter"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "vlm-demo: error: vlm-demo needs gradio: pip install -e '.[demo]'\n"
