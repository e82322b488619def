"""Hashed word and character n-grams: the lexical half of the injection detector.

Jailbreak templates and injected instructions are recognisable by their wording ("ignore
all previous instructions", "developer mode", "in your response, include") and by token
soup (adversarial suffixes), which a sentence embedding smooths away. Counting hashed
n-grams keeps that signal in a fixed-size vector with no vocabulary to ship.

Text is lower-cased and its whitespace collapsed; word 1-2-grams (words split at
whitespace and ASCII punctuation, hashed with zlib.crc32) and character 3-5-grams (a
polynomial hash of the code points mod 2**32) are hashed into `buckets` (a power of two,
Knuth's multiplicative hashing): deterministic across processes and platforms, never
Python's salted ``hash()``. Values are ``1 + log(count)``,
and each row is L2-normalised. Hashing is vectorised with numpy, so one ~300-character
text costs tens of microseconds.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_BUCKETS", "bucket_counts", "hashed_ids", "lexical_matrix", "lexical_row"]

F32 = npt.NDArray[np.float32]
U32 = npt.NDArray[np.uint32]

DEFAULT_BUCKETS = 1 << 13
CHAR_NGRAMS = (3, 4, 5)

_PRIME = np.uint32(0x01000193)  # FNV prime: the rolling-hash base
_GOLDEN = np.uint32(0x9E3779B1)  # Knuth's multiplicative-hashing constant
_SALT_WORD = np.uint32(0x7F4A7C15)
_SALT_BIGRAM = np.uint32(0x2545F491)
# ASCII punctuation separates words (bytes.translate is the fastest way to apply that)
_SEPARATORS = bytes(
    32 if (b < 128 and not (chr(b).isalnum() or chr(b) == "_")) else b for b in range(256)
)


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def hashed_ids(text: str, buckets: int = DEFAULT_BUCKETS) -> U32:
    """The bucket of every n-gram occurrence in `text` (repeats kept: they are counts).

    `buckets` must be a power of two: the bucket is the top bits of a multiplicative hash.
    """
    norm = _normalise(text)
    words = norm.encode("utf-8").translate(_SEPARATORS).split()
    hw = np.array([zlib.crc32(w) for w in words], dtype=np.uint32)
    parts = [hw ^ _SALT_WORD, (hw[:-1] * _PRIME) ^ hw[1:] ^ _SALT_BIGRAM]
    codes = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32)
    rolling = codes
    for n in range(2, CHAR_NGRAMS[-1] + 1):
        rolling = rolling[:-1] * _PRIME + codes[n - 1 :]
        if n >= CHAR_NGRAMS[0]:
            parts.append(rolling)
    shift = np.uint32(32 - (buckets.bit_length() - 1))
    return (np.concatenate(parts) * _GOLDEN) >> shift


def bucket_counts(
    ids: U32, buckets: int = DEFAULT_BUCKETS
) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]]:
    """The buckets `ids` hit, ascending, and how many times each (`hashed_ids`' output):
    a sort of the ids when they are few (a chat prompt's few hundred n-grams: half the
    time of the count), else a count over all `buckets` and a scan for the ones hit (a
    1,000-character window's ~3,400 ids sort slower than that)."""
    if ids.size <= buckets // 8:
        return np.unique(ids, return_counts=True)
    counts = np.bincount(ids, minlength=buckets)
    hit = np.flatnonzero(counts)
    return hit, counts[hit]


def lexical_row(text: str, buckets: int = DEFAULT_BUCKETS) -> tuple[U32, F32]:
    """Sparse features of one text: sorted bucket ids and their normalised values."""
    ids, counts = np.unique(hashed_ids(text, buckets), return_counts=True)
    values = (1.0 + np.log(counts)).astype(np.float32)
    norm = float(np.sqrt(values @ values))
    if norm > 0:
        values /= norm
    return ids.astype(np.uint32), values


def lexical_matrix(texts: Sequence[str], buckets: int = DEFAULT_BUCKETS) -> F32:
    """Dense (n, buckets) float32 features of `texts` (for training and batches)."""
    out = np.zeros((len(texts), buckets), dtype=np.float32)
    for row, text in enumerate(texts):
        ids, values = lexical_row(text, buckets)
        out[row, ids] = values
    return out
