"""An encoder wrapper that counts the texts it embeds: tests that a decision path embeds
a request once (no second pass) read `texts`; and `counted_calls`, which counts a
method's calls (the PII scans, the injection scores) the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

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


def counted_calls(monkeypatch: pytest.MonkeyPatch, cls: type, method: str) -> list[int]:
    """A list that grows by one at each call of `cls.method` (any instance's) while the
    test runs."""
    calls: list[int] = []
    original = getattr(cls, method)

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, counted)
    return calls
