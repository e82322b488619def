"""An encoder wrapper that counts the texts it embeds: tests that a decision path embeds
a request once (no second pass) read `texts`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmroute.encoders.base import Embeddings


class CountingEncoder:
    """The registry's encoder, counting the texts it embeds."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.identity: str = inner.identity
        self.dim: int = inner.dim
        self.scripts = getattr(inner, "scripts", None)
        self.texts = 0

    def encode(self, texts: Sequence[str]) -> Embeddings:
        self.texts += len(texts)
        vectors: Embeddings = self.inner.encode(texts)
        return vectors
