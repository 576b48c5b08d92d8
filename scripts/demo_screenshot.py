"""The demo in a real browser: launch vlm-demo's app on a model folder, open it in headless Chromium (Playwright,
pointed at the system's chromium), upload a built-in scene, wait for its caption, ask a question, wait for the
answer, and save a screenshot. Not part of the test run: it needs a browser.

    python scripts/demo_screenshot.py --checkpoint runs/main/model --out docs/demo.png
"""

from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path

from vlm.cli.demo import example_scenes, launch, make_app
from vlm.inference.predict import Predictor
from vlm.model.checkpoint import load_model

WAIT_MS = 120_000  # a cold CPU may take a while over the first caption


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/main/model", help="model folder or Hub repo id")
    parser.add_argument("--out", type=Path, default=Path("docs/demo.png"))
    parser.add_argument("--scene", type=int, default=0, help="which built-in test scene to upload")
    parser.add_argument("--question", default="what color is the circle?")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser Playwright drives")
    args = parser.parse_args()

    from playwright.sync_api import expect, sync_playwright

    model, tokenizer = load_model(args.checkpoint)
    app, work_dir = make_app(Predictor(model, tokenizer), f"vlm demo: {args.checkpoint}")
    scene = example_scenes(Path(tempfile.mkdtemp()), model.config.vision.image_size)[args.scene]
    port = free_port()
    launch(app, work_dir, port, prevent_thread_lock=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("input[type=file]").first.set_input_files(str(scene))
            caption = page.locator("#caption textarea")
            expect(caption).not_to_have_value("", timeout=WAIT_MS)
            # The caption is complete once its attention map (drawn after the last token) is shown.
            expect(page.locator("img[src*='attention']")).to_be_visible(timeout=WAIT_MS)
            page.locator("#question textarea").fill(args.question)
            page.locator("#ask").click()
            answer = page.locator("#answers .bot").last
            expect(answer).not_to_be_empty(timeout=WAIT_MS)
            expect(page.locator("#question textarea")).to_have_value("", timeout=WAIT_MS)  # cleared when answered
            page.wait_for_timeout(500)  # let the last render settle
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            print(f"caption: {caption.input_value()}\nQ: {args.question}\nA: {answer.inner_text()}\nsaved {args.out}")
            browser.close()
    finally:
        app.close()


if __name__ == "__main__":
    main()
