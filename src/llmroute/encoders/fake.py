"""A deterministic encoder for tests: hashed word and character-trigram features.

Texts that share words get similar vectors, so routing tests behave like they would
with a real encoder, without loading any weights.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from llmroute.encoders.base import Embeddings

__all__ = ["FakeEncoder"]

_WORD = re.compile(r"\w+")


class FakeEncoder:
    """Bag of hashed words and trigrams, L2-normalised. Deterministic across runs."""

    def __init__(self, dim: int = 256) -> None:
        self._dim = dim
        self.calls = 0
        self.texts_encoded = 0

    @property
    def identity(self) -> str:
        return f"fake:{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def _bucket(self, token: str) -> int:
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") % self._dim

    def encode(self, texts: Sequence[str]) -> Embeddings:
        self.calls += 1
        self.texts_encoded += len(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[row, self._bucket(word)] += 1.0
                padded = f"#{word}#"
                for i in range(len(padded) - 2):
                    out[row, self._bucket(padded[i : i + 3])] += 0.3
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out
