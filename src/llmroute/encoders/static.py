"""A model2vec-style static encoder: one vector per token, summed and normalised.

The table (float16 on disk, float32 in memory so the gather-sum runs at full speed) is
distilled from MiniLM by scripts/distill_static.py and ships in `data/` with its own
copy of tokenizer.json, so it needs no weights package. Encoding is a tokeniser call,
one numpy gather and a sum: tens of microseconds at batch 1.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from llmroute.encoders.base import Embeddings
from llmroute.encoders.minilm import normalise_rows
from llmroute.encoders.scripts import BUILTIN_SCRIPTS
from llmroute.encoders.tokenize import Truncate, WordPiece
from llmroute.errors import ConfigError, EncoderUnavailable

__all__ = ["DATA_DIR", "StaticEncoder", "sum_token_rows"]

DATA_DIR = Path(__file__).resolve().parent / "data"
TABLE_FILE = "static_minilm.npy"
META_FILE = "static_minilm.json"


class StaticEncoder:
    """Sum of per-token vectors (the mean, up to the norm), L2-normalised."""

    scripts = BUILTIN_SCRIPTS  # MiniLM's English WordPiece vocabulary (`Encoder`)

    def __init__(
        self, data_dir: Path = DATA_DIR, *, max_tokens: int = 256, truncate: Truncate = "head"
    ) -> None:
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be positive, not {max_tokens}")
        try:
            meta = json.loads((data_dir / META_FILE).read_text(encoding="utf-8"))
            table = np.load(data_dir / TABLE_FILE)
        except (OSError, ValueError) as exc:
            raise EncoderUnavailable(
                f"static encoder data missing in {data_dir}; reinstall llmroute ({exc})"
            ) from exc
        self._table: npt.NDArray[np.float32] = np.ascontiguousarray(table, dtype=np.float32)
        self._wp = WordPiece(data_dir / "tokenizer.json", max_tokens, truncate)
        self._dim = int(self._table.shape[1])
        self._identity = (
            f"builtin:static@{meta['sha256'][:12]};max_tokens={max_tokens};truncate={truncate}"
        )
        self._local = threading.local()

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def dim(self) -> int:
        return self._dim

    def _gather_buffer(self) -> npt.NDArray[np.float32]:
        buf: npt.NDArray[np.float32] | None = getattr(self._local, "buf", None)
        if buf is None:
            buf = np.empty((self._wp.budget, self._dim), dtype=np.float32)
            self._local.buf = buf
        return buf

    def _encode_one(self, text: str) -> Embeddings:
        ids = self._wp.encode_array(text)
        out = np.zeros((1, self._dim), dtype=np.float32)
        if ids.size:
            rows = self._gather_buffer()[: ids.size]
            np.take(self._table, ids, axis=0, out=rows)
            rows.sum(axis=0, out=out[0])
        return normalise_rows(out)

    def encode(self, texts: Sequence[str]) -> Embeddings:
        if len(texts) == 1:
            return self._encode_one(texts[0])
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        sum_token_rows(self._table, self._wp.encode(texts), out)
        return normalise_rows(out)


def sum_token_rows(
    table: npt.NDArray[np.float32], tokens: Sequence[Sequence[int]], out: npt.NDArray[np.float32]
) -> None:
    """``out[i] = sum(table[tokens[i]])`` in one gather and one segmented sum (rows of
    texts without tokens are left as they are)."""
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    live = np.flatnonzero(lengths)
    if live.size:
        flat = np.fromiter((i for t in tokens for i in t), dtype=np.int64, count=int(lengths.sum()))
        starts = np.concatenate(([0], np.cumsum(lengths[live])[:-1]))
        out[live] = np.add.reduceat(table[flat], starts, axis=0)
