"""The encoder contract shared by every embedding backend.

An encoder turns texts into L2-normalised float32 row vectors. The decision core calls
`encode` once per request and shares the vector with every layer, so implementations
should make batch-1 calls cheap (no per-call allocation that can be hoisted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Embeddings", "Encoder"]

Embeddings = npt.NDArray[np.float32]
"""A (n, dim) float32 matrix whose rows have unit L2 norm (zero rows for empty text)."""


@runtime_checkable
class Encoder(Protocol):
    """Anything that embeds text.

    `identity` names the weights and settings exactly (e.g. ``builtin:minilm@<sha>``): it
    keys embedding caches and is recorded in trained artifacts, so two encoders with the
    same identity must return the same vectors.
    """

    @property
    def identity(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> Embeddings: ...
