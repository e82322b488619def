"""The encoder contract shared by every embedding backend.

An encoder turns texts into L2-normalised float32 row vectors. The decision core calls
`encode` once per request and shares the vector with every layer, so implementations
should make batch-1 calls cheap (no per-call allocation that can be hoisted).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Embeddings", "Encoder", "encode_batches", "weights_identity", "without_credentials"]

Embeddings = npt.NDArray[np.float32]
"""A (n, dim) float32 matrix whose rows have unit L2 norm (zero rows for empty text)."""


@runtime_checkable
class Encoder(Protocol):
    """Anything that embeds text.

    `identity` names the weights and settings exactly (e.g. ``builtin:minilm@<sha>``): it
    keys embedding caches and is recorded in trained artifacts, so two encoders with the
    same identity must return the same vectors.

    An encoder may also declare ``scripts``, the writing systems it was built for (names
    from `llmroute.encoders.scripts.SCRIPTS`; the built-ins: ``("latin",)``): the intent
    layer is then unsure of a text whose letters are mostly in other scripts. One that
    declares nothing (a remote endpoint) is taken to read every script.
    """

    @property
    def identity(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> Embeddings: ...


def encode_batches(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    batch: int = 256,
    progress: Callable[[str], None] | None = None,
) -> Embeddings:
    """Embed a training set in batches (a CachedEncoder makes reruns cheap), reporting
    ``embedded i/n`` after each one."""
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    for start in range(0, len(texts), batch):
        out[start : start + batch] = encoder.encode(list(texts[start : start + batch]))
        if progress is not None:
            progress(f"embedded {min(start + batch, len(texts))}/{len(texts)}")
    return out


# a URL's user:password@ (or token@) within an identity (``openai:https://u:p@host/v1#m``),
# up to the last "@" before the path: httpx reads a password holding an unescaped "@" so
# (cut at the first, its tail was shown, and written into artifacts)
_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")


def without_credentials(identity: str) -> str:
    """`identity` without a URL's ``user:password@``: identities are written into
    artifacts and caches and named in errors, and a remote encoder's read the password
    (artifacts trained before it was left out still hold it; they load the same)."""
    return _USERINFO.sub("", identity)


def masked_credentials(url: str) -> str:
    """`url` with its ``user:password@`` shown as ``***@``, however short: what messages
    name a remote endpoint by."""
    return _USERINFO.sub("***@", url)


def weights_identity(identity: str) -> str:
    """The part of an encoder identity that names its weights (before ``;``): what a
    trained artifact must match. ``max_tokens`` and ``truncate`` (after it) only change
    how much of a long text is read, not what a vector means; nor do a URL's
    credentials."""
    return without_credentials(identity).split(";", 1)[0]
