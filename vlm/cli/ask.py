"""vlm-ask: ask questions about an image.

    vlm-ask --image photo.jpg --question "what color is the circle?"
    vlm-ask --image photo.jpg --question "how many shapes are there?" --question "is there a red square?"
    printf 'what shape is it?\\nwhat color is it?\\n' | vlm-ask --image photo.jpg     # one question per line
    vlm-ask --image photo.jpg --question "what color is the circle?" --attention attention.png
    vlm-ask --image photo.jpg --question "describe it" --stream     # print the answer as it is written

A question longer than the model's context is cut to fit, with a warning on stderr. A reply that gives its reason
first ("asked red, saw blue, different, so no") is printed whole; `--json` gives its "answer" ("no") and the whole
"reply".
"""

from __future__ import annotations

import argparse
import json
import sys

from vlm.cli.common import (
    UsageError,
    add_attention_arguments,
    add_decoding_arguments,
    add_model_arguments,
    build_predictor,
    check_attention_output,
    generation_config,
    run_command,
)
from vlm.data.images import load_image
from vlm.data.sample import final_answer
from vlm.inference.attention_maps import save_attention_figure
from vlm.inference.generate import GenerationConfig
from vlm.inference.predict import ANSWER_TOKENS, Predictor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vlm-ask", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", required=True, help="the image to ask about")
    parser.add_argument("--question", action="append", default=[], help="a question (repeatable); none: read stdin")
    add_model_arguments(parser)
    add_decoding_arguments(parser, max_new_tokens=ANSWER_TOKENS)
    add_attention_arguments(parser)
    parser.add_argument("--stream", action="store_true", help="print each answer piece by piece as it is written")
    args = parser.parse_args(argv)

    def body() -> None:
        questions = args.question or [line.strip() for line in sys.stdin if line.strip()]
        if not questions:
            raise UsageError("no question given: pass --question or write questions on standard input")
        if any(not question.strip() for question in questions):
            raise UsageError("--question is empty: ask something about the image")
        check_attention_output(args.attention, len(questions))
        if args.stream and (args.json or args.attention):
            raise UsageError("--stream prints text as it comes; it does not combine with --json or --attention")
        config = generation_config(args)
        predictor = build_predictor(args)
        image_index = [0] * len(questions)
        if args.stream:
            stream_answers(predictor, args.image, questions, config)
            return
        if args.attention:
            attended = predictor.attend([args.image], questions, image_index, config, args.attention_method)
            answers = [a.text for a in attended]
            titles = [f"Q: {q}  A: {a}" for q, a in zip(questions, answers)]
            save_attention_figure(args.attention, [load_image(args.image)] * len(questions), attended, titles)
        else:
            answers = predictor.answer([args.image], questions, image_index=image_index, config=config)
        if args.json:
            print(
                json.dumps(
                    [
                        {"image": args.image, "question": q, "answer": final_answer(a), "reply": a}
                        for q, a in zip(questions, answers)
                    ],
                    indent=2,
                )
            )
        else:
            for question, answer in zip(questions, answers):
                print(f"Q: {question}\nA: {answer}" if len(questions) > 1 else answer)

    run_command("vlm-ask", body)


def stream_answers(predictor: Predictor, image: str, questions: list[str], config: GenerationConfig) -> None:
    # Best-of-n scores the image's pixels; otherwise the image is encoded once for every question.
    image_or_tokens = image if predictor.rerank > 1 else predictor.encode([image])
    for question in questions:
        if len(questions) > 1:
            print(f"Q: {question}\nA: ", end="", flush=True)
        for piece in predictor.stream(image_or_tokens, question, config):
            print(piece, end="", flush=True)
        print(flush=True)


if __name__ == "__main__":
    main()
