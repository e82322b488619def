"""Persist embeddings of fixed texts (registry examples, benchmark sets) on disk.

Layout: ``<directory>/<sha1(identity)[:16]>/shard-*.npz``, each shard holding the sha1
of its texts and their vectors. All shards are loaded once into memory (a few numpy
reads, not one file per text); new vectors are written as a new shard via a temporary
file and `os.replace`, so concurrent writers never corrupt each other (at worst a text
is stored twice). Shards are merged when they pile up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from llmroute.encoders.base import Embeddings, Encoder
from llmroute.errors import EncoderError

__all__ = ["CachedEncoder"]

log = logging.getLogger(__name__)

_MERGE_AT = 16


def _key(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).digest()


class CachedEncoder:
    """Wraps an encoder; same identity and vectors, but each text is encoded only once."""

    def __init__(self, inner: Encoder, directory: Path, *, batch_size: int = 256) -> None:
        self.inner = inner
        # `vectors` tells apart vectors an encoder once computed otherwise under the same
        # identity (MiniLM int8 encoded in batches, whose vectors depended on the batch)
        ident = (inner.identity + getattr(inner, "vectors", "")).encode("utf-8")
        self._dir = Path(directory) / hashlib.sha1(ident, usedforsecurity=False).hexdigest()[:16]
        self._batch_size = batch_size
        self._index: dict[bytes, tuple[int, int]] = {}
        self._blocks: list[npt.NDArray[np.float32]] = []
        self._seen: set[str] = set()
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            (self._dir / "identity.txt").write_text(inner.identity + "\n", encoding="utf-8")
        except OSError as exc:
            raise EncoderError(f"cannot create embedding cache {self._dir}: {exc}") from exc
        self._scan()
        if len(self._seen) > _MERGE_AT:
            self._merge()

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def scripts(self) -> tuple[str, ...] | None:
        """The scripts the wrapped encoder declares it reads (None: any; `Encoder`)."""
        declared = getattr(self.inner, "scripts", None)
        return None if declared is None else tuple(declared)

    def __len__(self) -> int:
        return len(self._index)

    def _add(self, keys: npt.NDArray[np.void], vectors: npt.NDArray[np.float32]) -> None:
        block = len(self._blocks)
        self._blocks.append(vectors)
        for row, key in enumerate(keys.tolist()):
            self._index.setdefault(bytes(key), (block, row))

    def _scan(self) -> None:
        """Load shards written since the last scan (by us or another process)."""
        for path in sorted(self._dir.glob("shard-*.npz")):
            if path.name in self._seen:
                continue
            try:
                # opened here: np.load leaves its own handle open when the zip is bad
                with path.open("rb") as handle, np.load(handle) as shard:
                    keys, vectors = shard["keys"], shard["vectors"].astype(np.float32)
                if vectors.ndim != 2 or len(keys) != len(vectors):
                    raise ValueError(f"{len(keys)} keys for vectors of shape {vectors.shape}")
            except FileNotFoundError:  # merged away by another process meanwhile
                continue
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                # only a cache (a disk that filled up, a copy cut short): its texts are
                # embedded again rather than every command failing until it is deleted
                log.warning("embedding cache: dropping corrupt shard %s (%s)", path, exc)
                path.unlink(missing_ok=True)
                continue
            self._seen.add(path.name)
            self._add(keys, vectors)

    def _write(self, keys: list[bytes], vectors: npt.NDArray[np.float32]) -> str:
        name = f"shard-{uuid.uuid4().hex}.npz"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=self._dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, keys=np.array(keys, dtype="V20"), vectors=vectors)
            os.replace(tmp, self._dir / name)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return name

    def _merge(self) -> None:
        """Rewrite all known vectors as one shard, then drop the old shards."""
        keys = list(self._index)
        vectors = np.stack([self._blocks[b][r] for b, r in self._index.values()])
        old = set(self._seen)
        self._seen.add(self._write(keys, vectors))
        for name in old:
            (self._dir / name).unlink(missing_ok=True)
            self._seen.discard(name)

    def _fill(self, texts: list[str], keys: list[bytes]) -> None:
        for start in range(0, len(texts), self._batch_size):
            chunk_keys = keys[start : start + self._batch_size]
            vectors = np.asarray(
                self.inner.encode(texts[start : start + self._batch_size]), dtype=np.float32
            )
            try:
                self._seen.add(self._write(chunk_keys, vectors))
            except OSError as exc:
                raise EncoderError(f"cannot write embedding cache {self._dir}: {exc}") from exc
            self._add(np.array(chunk_keys, dtype="V20"), vectors)

    def encode(self, texts: Sequence[str]) -> Embeddings:
        keys = [_key(t) for t in texts]
        if any(k not in self._index for k in keys):
            self._scan()
            todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._index}
            if todo:
                self._fill(list(todo.values()), list(todo))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, key in enumerate(keys):
            block, idx = self._index[key]
            out[row] = self._blocks[block][idx]
        return out
