"""CIDEr-D, written out, with no Java: fast enough to run during training, and the SCST reward.

It reproduces the COCO caption toolkit's `Cider` scorer (which is CIDEr-D) number for number on the same
tokenized text: n-grams 1-4 weighted by tf-idf, document frequencies from the references of the evaluated set
itself, the candidate's n-gram weights clipped by the reference's, a Gaussian length penalty (sigma 6) and a
factor of 10. One quirk kept for equality: the toolkit's "length" counts bigrams, not words.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

NGRAMS = 4
SIGMA = 6.0

# What the toolkit's PTB tokenizer drops after splitting (it also lowercases).
_PUNCTUATION = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}
_TOKEN = re.compile(r"\.\.\.|--|n't|'\w+|\w+(?:[-']\w+)*|[^\w\s]")


def simple_tokenize(text: str) -> str:
    """An approximation of the PTB tokenizer for when Java is absent: lowercase, split punctuation off, drop it."""
    return " ".join(t for t in _TOKEN.findall(text.lower()) if t not in _PUNCTUATION)


def _ngram_counts(sentence: str) -> Counter:
    words = sentence.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, NGRAMS + 1) for i in range(len(words) - k + 1))


def _tfidf(counts: Counter, document_frequency: Counter, log_num_docs: float) -> tuple[list[dict], list[float], int]:
    vectors: list[dict] = [{} for _ in range(NGRAMS)]
    norms = [0.0] * NGRAMS
    length = 0
    for ngram, term_frequency in counts.items():
        order = len(ngram) - 1
        weight = term_frequency * (log_num_docs - math.log(max(1.0, document_frequency[ngram])))
        vectors[order][ngram] = weight
        norms[order] += weight * weight
        if order == 1:  # the toolkit's quirk: bigram count as length
            length += term_frequency
    return vectors, [math.sqrt(n) for n in norms], length


def cider_d(
    candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], tokenize: bool = True
) -> tuple[float, dict[Hashable, float]]:
    """Mean CIDEr-D and the score of each id. Text is tokenized with `simple_tokenize` unless tokenize=False
    (pass text the PTB tokenizer already split, to match the toolkit exactly)."""
    missing = set(candidates) ^ set(references)
    if missing:
        raise ValueError(
            f"candidates and references must have the same ids; differing: {sorted(map(str, missing))[:5]}"
        )
    prepare = simple_tokenize if tokenize else (lambda s: s)
    reference_counts = {key: [_ngram_counts(prepare(r)) for r in refs] for key, refs in references.items()}
    document_frequency: Counter = Counter()
    for counts in reference_counts.values():
        document_frequency.update({ngram for c in counts for ngram in c})
    log_num_docs = math.log(float(len(references)))
    scores = {}
    for key, candidate in candidates.items():
        vector, norm, length = _tfidf(_ngram_counts(prepare(candidate)), document_frequency, log_num_docs)
        total = [0.0] * NGRAMS
        for counts in reference_counts[key]:
            ref_vector, ref_norm, ref_length = _tfidf(counts, document_frequency, log_num_docs)
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * SIGMA**2))
            for order in range(NGRAMS):
                value = sum(
                    min(w, ref_vector[order].get(g, 0.0)) * ref_vector[order].get(g, 0.0)
                    for g, w in vector[order].items()
                )
                if norm[order] != 0 and ref_norm[order] != 0:
                    value /= norm[order] * ref_norm[order]
                total[order] += value * penalty
        scores[key] = sum(total) / NGRAMS / len(reference_counts[key]) * 10.0
    return (sum(scores.values()) / len(scores) if scores else 0.0), scores
