"""CIDEr-D written out in Python, with no Java: fast enough for validation during training, and the SCST reward.

It reproduces the COCO caption toolkit's `Cider` scorer (which is CIDEr-D) number for number on the same
tokenized text: n-grams 1-4 weighted by tf-idf, document frequencies from the references of the evaluated set
itself, the candidate's n-gram weights clipped by the reference's, a Gaussian length penalty (sigma 6) and a
factor of 10. One quirk is kept for equality: the toolkit's "length" counts bigrams, not words.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

NGRAMS = 4
SIGMA = 6.0  # standard deviation of the length penalty, in (bigram) tokens

# What the toolkit's PTB tokenizer drops after splitting. Brackets are not among them: lowercased, they come out as
# "-lrb-" and friends and stay (the toolkit's list has them in upper case), so the fallback keeps them the same way.
_PUNCTUATION = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", '"'}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_TOKEN = re.compile(
    r"\.\.\.|--"  # ellipsis and double dash: one token each (dropped)
    r"|\w\.(?:\w\.)+"  # acronyms keep their periods: "u.s."
    r"|\d+(?:[.,:]\d+)+"  # 3.5, 1,000, 10:30
    r"|\w+(?:[-/']\w+)*"  # words, with their hyphens, slashes and inner apostrophes: e-mail, and/or, o'clock
    r"|[^\w\s]"  # any other mark on its own
)
_CLITIC = re.compile(r"(.+?)(n't|'s|'m|'d|'ll|'re|'ve)$")  # the PTB splits these off: "is n't", "dog 's"
_SPLIT_WORDS = {"cannot": "can not", "gonna": "gon na", "gotta": "got ta", "wanna": "wan na"}


def simple_tokenize(text: str) -> str:
    """An approximation of the toolkit's PTB tokenizer for when Java is absent: lowercase; split off punctuation,
    clitics ("isn't" -> "is n't") and brackets ("(" -> "-lrb-"); drop the punctuation the toolkit drops. It agrees
    with the PTB tokenizer on ordinary captions; rare forms (abbreviations such as "mr.", "!!") can differ."""
    tokens: list[str] = []
    for token in _TOKEN.findall(text.lower()):
        if token in _PUNCTUATION:
            continue
        clitic = _CLITIC.match(token)
        if token in _SPLIT_WORDS:
            tokens.extend(_SPLIT_WORDS[token].split())
        elif clitic:
            tokens.extend(clitic.groups())
        else:
            tokens.append(_BRACKETS.get(token, token))
    return " ".join(tokens)


def _ngram_counts(sentence: str) -> Counter:
    words = sentence.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, NGRAMS + 1) for i in range(len(words) - k + 1))


def _tfidf(counts: Counter, document_frequency: Counter, log_num_docs: float) -> tuple[list[dict], list[float], int]:
    """One tf-idf vector per n-gram order, their norms, and the toolkit's length (the number of bigrams)."""
    vectors: list[dict] = [{} for _ in range(NGRAMS)]
    norms = [0.0] * NGRAMS
    length = 0
    for ngram, term_frequency in counts.items():
        order = len(ngram) - 1
        # An n-gram no reference has counts as seen once: its idf is then log(N), not infinite.
        weight = term_frequency * (log_num_docs - math.log(max(1.0, document_frequency[ngram])))
        vectors[order][ngram] = weight
        norms[order] += weight * weight
        if order == 1:  # the toolkit's quirk: the bigram count serves as the length
            length += term_frequency
    return vectors, [math.sqrt(n) for n in norms], length


@dataclass(frozen=True)
class DocumentFrequencies:
    """In how many images' references each n-gram occurs, and the log of the number of images."""

    counts: Counter
    log_num_docs: float


def document_frequencies(references: Mapping[Hashable, Sequence[str]], tokenized: bool = False) -> DocumentFrequencies:
    """The n-gram document frequencies of a corpus of references (one document per image). SCST scores small
    batches against those of the whole training set: a batch's own are too few to say which words are common."""
    prepare = (lambda s: s) if tokenized else simple_tokenize
    counts: Counter = Counter()
    for refs in references.values():
        counts.update({ngram for r in refs for ngram in _ngram_counts(prepare(r))})
    return DocumentFrequencies(counts, math.log(float(max(len(references), 1))))


def cider_d(
    candidates: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    tokenized: bool = False,
    frequencies: DocumentFrequencies | None = None,
) -> tuple[float, dict[Hashable, float]]:
    """Mean CIDEr-D over the ids and the score of each id. Text is tokenized with `simple_tokenize` unless
    tokenized=True (text the PTB tokenizer already split: then the numbers equal the toolkit's `Cider`).

    As in the toolkit, document frequencies come from the references given here, so a set of one image scores 0
    (every n-gram is in every document); `frequencies` (from `document_frequencies`) replaces them by a corpus's."""
    if set(candidates) != set(references):
        differing = sorted(map(str, set(candidates) ^ set(references)))
        raise ValueError(f"candidates and references must have the same ids; differing: {differing[:5]}")
    if not candidates:
        raise ValueError("no candidates to score")
    empty = [key for key, refs in references.items() if not refs]
    if empty:
        raise ValueError(f"every id needs at least one reference; none for {sorted(map(str, empty))[:5]}")
    prepare = (lambda s: s) if tokenized else simple_tokenize
    reference_counts = {key: [_ngram_counts(prepare(r)) for r in refs] for key, refs in references.items()}
    if frequencies is None:
        document_frequency: Counter = Counter()
        for counts in reference_counts.values():
            document_frequency.update({ngram for c in counts for ngram in c})  # documents are images, not sentences
        log_num_docs = math.log(float(len(references)))
    else:
        document_frequency, log_num_docs = frequencies.counts, frequencies.log_num_docs

    scores = {}
    for key, candidate in candidates.items():
        vector, norm, length = _tfidf(_ngram_counts(prepare(candidate)), document_frequency, log_num_docs)
        total = [0.0] * NGRAMS
        for counts in reference_counts[key]:
            ref_vector, ref_norm, ref_length = _tfidf(counts, document_frequency, log_num_docs)
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * SIGMA**2))
            for order in range(NGRAMS):
                # The "-D": a candidate's weight counts at most the reference's, so repeating a word gains nothing.
                value = sum(
                    min(weight, ref_vector[order].get(ngram, 0.0)) * ref_vector[order].get(ngram, 0.0)
                    for ngram, weight in vector[order].items()
                )
                if norm[order] != 0 and ref_norm[order] != 0:
                    value /= norm[order] * ref_norm[order]
                total[order] += value * penalty
        scores[key] = sum(total) / NGRAMS / len(reference_counts[key]) * 10.0
    return sum(scores.values()) / len(scores), scores
