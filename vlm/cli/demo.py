"""vlm-demo: the model in a browser (Gradio). Drop, paste or pick an image; its caption is written token by token;
ask it any number of questions; see which part of the image each word of the caption looked at.

    vlm-demo                                        # the main job's model, on http://127.0.0.1:7860
    vlm-demo --checkpoint someone/vlm-shapes        # a Hugging Face Hub repo id, or any model folder
    vlm-demo --port 8000 --share                    # a public gradio.live link as well

Needs the `demo` extra: pip install -e '.[demo]'. Each image is encoded once, however many questions ask about it.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from PIL import Image

from vlm.cli.common import UsageError, build_predictor, run_command
from vlm.cli.paths import DEFAULT_CHECKPOINT
from vlm.data.images import ImageLoadError, load_image
from vlm.data.shapes import rendered_image
from vlm.inference.attention_maps import AttendedText, save_attention_figure, token_attention_maps
from vlm.inference.generate import STRATEGIES, GenerationConfig
from vlm.inference.predict import ANSWER_TOKENS, Predictor

DEMO_EXTRA = "pip install -e '.[demo]'"
EXAMPLE_SCENES = 4  # built-in test scenes (seed 0, indices 0..3) offered as examples: never seen in training
CACHED_IMAGES = 16  # images whose tokens are kept; a session rarely looks at more
TOKENS_PER_ROW = 6  # attention panels per row of the figure
# The model sees 64 px images: show them large, with their pixels square rather than blurred.
CSS = "#image img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }"


class DemoError(ValueError):
    """A user's mistake in the page (a file that is not an image, a bad decoding option): shown as a message."""


class Demo:
    """What the page's buttons do, as plain functions of plain values (tests call them without a browser).

    Image tokens are kept per image (keyed by its pixels), so the caption, its attention map and every question
    about one image share a single pass through the vision encoder."""

    def __init__(self, predictor: Predictor, work_dir: str | Path):
        self.predictor = predictor
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._image_tokens: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def read_image(self, image: str | Path | Image.Image | None) -> Image.Image:
        if image is None:
            raise DemoError("Drop, paste or pick an image first.")
        try:
            return load_image(image)
        except ImageLoadError as error:  # its message names the file by its path; the page names it by its name
            message = str(error).replace(str(image), Path(str(image)).name)
            raise DemoError(f"That file is not an image this demo can read: {message}") from None

    def image_tokens(self, image: Image.Image) -> torch.Tensor:
        """(1, N_img, D), encoded on the first request for this image only."""
        key = hashlib.sha256(f"{image.size}{image.mode}".encode() + image.tobytes()).hexdigest()
        with self._lock:  # Gradio runs the caption and a question in threads of their own
            if key not in self._image_tokens:
                self._image_tokens[key] = self.predictor.encode([image])
                if len(self._image_tokens) > CACHED_IMAGES:
                    self._image_tokens.popitem(last=False)
            self._image_tokens.move_to_end(key)
            return self._image_tokens[key]

    def caption(
        self, image, config: GenerationConfig | None = None, token_ids: list[int] | None = None
    ) -> Iterator[str]:
        """The caption so far, after each new piece."""
        picture = self.read_image(image)
        yield from _growing(self.predictor.stream(self.image_tokens(picture), None, config, token_ids))

    def ask(self, image, question: str, config: GenerationConfig | None = None) -> Iterator[str]:
        """The answer so far, after each new piece."""
        if not question or not question.strip():
            raise DemoError("Type a question about the image first.")
        picture = self.read_image(image)
        config = config or GenerationConfig(max_new_tokens=ANSWER_TOKENS)
        yield from _growing(self.predictor.stream(self.image_tokens(picture), question.strip(), config))

    def attention_figure(self, image, caption: str, token_ids: list[int]) -> Path:
        """A picture of the caption's tokens, each with its attention over the image (vlm/inference/attention_maps.py)."""
        picture = self.read_image(image)
        predictor = self.predictor
        pixels = predictor.image_batch([picture])[0]
        prompt = predictor.tokenizer.caption_prompt()
        maps = token_attention_maps(predictor.model, pixels, prompt, token_ids, image_tokens=self.image_tokens(picture))
        tokens = [predictor.tokenizer.decode([token]) for token in token_ids]
        # One figure row per few tokens: a single row of a whole caption would be too wide to read in the page.
        starts = range(0, len(tokens), TOKENS_PER_ROW)
        rows = [AttendedText(caption, tokens[i : i + TOKENS_PER_ROW], maps[i : i + TOKENS_PER_ROW]) for i in starts]
        titles = ["the caption" if i == 0 else "(continued)" for i in starts]
        path = self.work_dir / f"attention-{hashlib.sha256(caption.encode()).hexdigest()[:12]}.png"
        save_attention_figure(path, [picture] * len(rows), rows, titles)
        return path


def _growing(pieces: Iterator[str]) -> Iterator[str]:
    """The text so far after each piece; an empty text is still yielded once, so the page shows it."""
    text = None
    for piece in pieces:
        text = (text or "") + piece
        yield text
    if text is None:
        yield ""


def decoding_config(
    strategy: str, beams: float, temperature: float, top_k: float, top_p: float, max_new_tokens: float
) -> GenerationConfig:
    """The accordion's options as a GenerationConfig; values a slider cannot reach still get a clear message."""
    config = GenerationConfig(
        max_new_tokens=int(max_new_tokens),
        strategy=strategy,
        num_beams=int(beams),
        temperature=float(temperature),
        top_k=int(top_k),
        top_p=float(top_p),
    )
    try:
        config.validate()
    except ValueError as error:
        raise DemoError(f"Decoding options: {error}") from None
    return config


def example_scenes(folder: Path, image_size: int) -> list[Path]:
    """Built-in test scenes (vlm/data/shapes.py) as PNG files the page offers as examples."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(EXAMPLE_SCENES):
        path = folder / f"scene-{index}.png"
        rendered_image(0, "test", index, image_size).save(path)
        paths.append(path)
    return paths


def _import_gradio():
    try:
        import gradio
    except ImportError:
        raise UsageError(f"vlm-demo needs gradio: {DEMO_EXTRA}") from None
    return gradio


def _shown_as_messages(gr, function: Callable) -> Callable:
    """Gradio shows a gr.Error's text in the page; our own errors become one, never a traceback."""

    @functools.wraps(function)
    def wrapper(*args):
        try:
            yield from function(*args)
        except DemoError as error:
            raise gr.Error(str(error), print_exception=False) from None

    return wrapper


def _read_uploads_politely(gr, image_input) -> None:
    """gr.Image opens every upload with PIL before any function of ours runs, and a file that is not an image
    would fail there with PIL's own words; this instance's preprocess says it plainly instead."""
    preprocess = image_input.preprocess

    def preprocess_or_explain(payload):
        try:
            return preprocess(payload)
        except (OSError, ValueError, SyntaxError):  # PIL's UnidentifiedImageError is an OSError
            name = getattr(payload, "orig_name", None) or "the file"
            raise gr.Error(f"{name} is not an image this demo can read.", print_exception=False) from None

    image_input.preprocess = preprocess_or_explain


def build_app(demo: Demo, examples: list[Path], title: str):
    """The page: an image, its streamed caption and attention map, questions, and the decoding options."""
    gr = _import_gradio()

    def caption_events(image, *options):
        if image is None:  # the image was cleared
            yield "", None
            return
        config = decoding_config(*options)
        token_ids: list[int] = []
        text = ""
        for text in demo.caption(image, config, token_ids):
            yield text, None
        yield text, str(demo.attention_figure(image, text, token_ids)) if token_ids else None

    def ask_events(image, question, history, *options):
        options = list(options)
        options[-1] = ANSWER_TOKENS  # answers keep their own length; the slider is the caption's
        config = decoding_config(*options)
        history = list(history or [])
        asked = history + [{"role": "user", "content": question}]
        for answer in demo.ask(image, question, config):
            yield asked + [{"role": "assistant", "content": answer}], ""

    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"# {title}\nDrop or paste an image, or pick a scene below; ask it questions.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    label="image", type="pil", sources=["upload", "clipboard"], height=320, elem_id="image"
                )
                _read_uploads_politely(gr, image)
                gr.Examples([[str(p)] for p in examples], inputs=[image], label="built-in scenes (test split)")
                with gr.Accordion("decoding options", open=False):
                    strategy = gr.Radio(list(STRATEGIES), value="greedy", label="strategy")
                    beams = gr.Slider(1, 8, value=4, step=1, label="beams (beam search)")
                    temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="temperature (sampling)")
                    top_k = gr.Slider(0, 100, value=0, step=1, label="top-k (sampling; 0: off)")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p (sampling; 1: off)")
                    max_new_tokens = gr.Slider(1, 64, value=32, step=1, label="caption length limit (tokens)")
            with gr.Column():
                caption = gr.Textbox(label="caption", interactive=False, elem_id="caption")
                attention = gr.Image(label="where each word of the caption looked", type="filepath", height=300)
                chat = gr.Chatbot(label="questions", elem_id="answers", height=260)
                question = gr.Textbox(label="question", placeholder="what color is the circle?", elem_id="question")
                ask_button = gr.Button("Ask", elem_id="ask")
        options = [strategy, beams, temperature, top_k, top_p, max_new_tokens]
        caption_inputs = dict(
            fn=_shown_as_messages(gr, caption_events), inputs=[image, *options], outputs=[caption, attention]
        )
        image.change(**caption_inputs, api_name="caption")
        ask_inputs = dict(
            fn=_shown_as_messages(gr, ask_events), inputs=[image, question, chat, *options], outputs=[chat, question]
        )
        ask_button.click(**ask_inputs, api_name="ask")
        question.submit(**ask_inputs, api_name=False)
    return app


def make_app(predictor: Predictor, title: str):
    """The app and the folder its example scenes and attention figures are written to."""
    work_dir = Path(tempfile.mkdtemp(prefix="vlm-demo-"))
    examples = example_scenes(work_dir / "examples", predictor.model.config.vision.image_size)
    return build_app(Demo(predictor, work_dir), examples, title), work_dir


def launch(app, work_dir: Path, port: int, share: bool = False, prevent_thread_lock: bool = False) -> None:
    """Serve on 127.0.0.1 (no server-side rendering: that needs Node); with prevent_thread_lock, return at once."""
    app.queue().launch(
        server_name="127.0.0.1",
        server_port=port,
        share=share,
        prevent_thread_lock=prevent_thread_lock,
        allowed_paths=[str(work_dir)],
        ssr_mode=False,
        quiet=prevent_thread_lock,
        css=CSS,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vlm-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        default=str(DEFAULT_CHECKPOINT),
        help=f"model folder or Hugging Face Hub repo id (default: {DEFAULT_CHECKPOINT}, written by the main job)",
    )
    parser.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    parser.add_argument("--share", action="store_true", help="also serve a public gradio.live link")
    args = parser.parse_args(argv)
    args.compile = False

    def body() -> None:
        # Gradio's server leaves event loops to the garbage collector: ResourceWarnings that are not the user's.
        warnings.filterwarnings("ignore", category=ResourceWarning)
        _import_gradio()  # before loading a model: a missing extra is the first thing to say
        app, work_dir = make_app(build_predictor(args), f"vlm demo: {args.checkpoint}")
        launch(app, work_dir, args.port, share=args.share)

    run_command("vlm-demo", body)


if __name__ == "__main__":
    main()
