"""Predictor.stream: the caption or answer in pieces, with the image given once as tokens."""

import pytest
import torch
from helpers import tiny_model, tiny_tokenizer
from PIL import Image

from vlm.inference.generate import GenerationConfig
from vlm.inference.predict import Predictor, strip_stream


@pytest.fixture(scope="module")
def predictor():
    tokenizer = tiny_tokenizer()
    return Predictor(tiny_model(tokenizer, seed=1), tokenizer)


@pytest.fixture(scope="module")
def image():
    return Image.fromarray((torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())


def test_streamed_pieces_join_to_the_greedy_caption_and_answer(predictor, image):
    caption = predictor.caption([image])[0]
    pieces = list(predictor.stream(image))
    assert "".join(pieces) == caption and len(pieces) > 1
    question = "what color is the circle?"
    answer = predictor.answer([image], [question])[0]
    assert "".join(predictor.stream(image, question)) == answer
    config = GenerationConfig(max_new_tokens=12, strategy="beam", num_beams=3)
    assert "".join(predictor.stream(image, question, config)) == predictor.answer([image], [question], config=config)[0]


def test_stream_takes_the_image_tokens_encode_made(predictor, image):
    image_tokens = predictor.encode([image])
    assert image_tokens.shape == (1, predictor.model.num_image_tokens, predictor.model.config.decoder.width)
    assert "".join(predictor.stream(image_tokens)) == predictor.caption([image])[0]
    question = "two blue squares above a green star?"
    assert "".join(predictor.stream(image_tokens, question)) == predictor.answer([image], [question])[0]


def test_streamed_text_is_stripped_as_the_caption_is(predictor, image, monkeypatch):
    ids = predictor.tokenizer.encode("  a red 🙂 \n")
    monkeypatch.setattr("vlm.inference.predict.generate", lambda *args, **kwargs: [ids])
    monkeypatch.setattr("vlm.inference.predict.stream", lambda *args, **kwargs: iter(ids))
    assert predictor.caption([image]) == ["a red 🙂"]
    assert "".join(predictor.stream(image)) == "a red 🙂"


@pytest.mark.parametrize("pieces", [[" ", " a", " red ", "\n", "circle", "  "], ["x"], [" ", " "], []])
def test_strip_stream_gives_the_pieces_of_the_stripped_text(pieces):
    assert "".join(strip_stream(iter(pieces))) == "".join(pieces).strip()


def test_under_bfloat16_the_encoded_image_streams_the_caption_generate_makes(image):
    tokenizer = tiny_tokenizer()
    predictor = Predictor(tiny_model(tokenizer, seed=3), tokenizer, autocast_dtype=torch.bfloat16)
    image_tokens = predictor.encode([image])
    assert image_tokens.dtype == torch.bfloat16  # encoded under the same autocast as `generate` encodes
    assert "".join(predictor.stream(image_tokens)) == predictor.caption([image])[0]
