"""The semantic cache's index: for each conversation context (everything about a request
but its last user message, hashed), the embeddings of the last user messages whose
answers were stored, and under which exact cache key.

A lookup is one matrix-vector product over at most ``max_per_context`` vectors of one
context: the nearest stored message at or above the threshold names the answer to
replay, provided the two messages also share enough of their word pairs (`word_pairs`:
a 256-bit signature of the lower-cased word bigrams, kept with each vector). Embeddings
do not see who does what to whom ("a transfer from alice to bob" and "from bob to alice"
embed alike); the pairs do ("from alice", "to bob").

`MemorySemanticIndex` keeps them in this process (least recently used contexts dropped
beyond ``max_contexts``); `RedisSemanticIndex` keeps each context as one Redis list of
fixed-size records (the key's digest, its expiry, the word pairs, the vector as
float16), shared by every gateway pointed at it, trimmed to ``max_per_context`` and
expiring with the answers. Either way an entry outlives its answer by at most the
answer's TTL, and an entry whose answer is gone is a miss.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from llmroute.state.answering import Answering
from llmroute.state.redis_conn import connect

__all__ = ["MemorySemanticIndex", "Query", "RedisSemanticIndex", "SemanticIndex", "word_pairs"]

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
DIGEST_BYTES = 64  # a SHA-256 in hex: what follows the cache's key prefix
PAIR_BYTES = 32  # the word-pair signature: 256 bits
Found = tuple[str, float]  # a stored digest and its cosine similarity to the query

_WORD = re.compile(r"\w+")


def word_pairs(text: str) -> U8:
    """The signature of `text`'s word order: each pair of neighbouring lower-cased words
    (the start and the end count as words) hashed to one of 256 bits, packed."""
    words = ["^", *_WORD.findall(text.lower()), "$"]
    bits = np.zeros(PAIR_BYTES * 8, dtype=np.uint8)
    for first, second in itertools.pairwise(words):
        bits[zlib.crc32(f"{first} {second}".encode()) % bits.size] = 1
    return np.packbits(bits)


@dataclass(frozen=True, slots=True)
class Query:
    """A message to look up: its embedding and word pairs, and what a match needs (a
    cosine of at least `threshold`, word pairs overlapping by at least `min_overlap`)."""

    vector: F32
    pairs: U8
    threshold: float
    min_overlap: float = 0.0


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


def _pair_overlap(stored: U8, query: U8) -> npt.NDArray[np.float64]:
    """Jaccard overlap of each stored signature (rows) with the query's."""
    shared = _POPCOUNT[stored & query].sum(axis=1)
    union = _POPCOUNT[stored | query].sum(axis=1)
    return np.where(union > 0, shared / np.maximum(union, 1), 1.0)


def _best(similarity: F32, live: npt.NDArray[np.bool_], pairs: U8, query: Query) -> int | None:
    """The row to serve: the most similar live row at or above the threshold whose word
    pairs overlap the query's enough; None when there is none. The pairs are compared
    only for the rows past the threshold (usually none)."""
    near = np.flatnonzero(live & (similarity >= query.threshold))
    if near.size and query.min_overlap > 0:
        near = near[_pair_overlap(pairs[near], query.pairs) >= query.min_overlap]
    if not near.size:
        return None
    return int(near[np.argmax(similarity[near])])


class SemanticIndex(Protocol):
    url: str

    async def nearest(self, context: str, query: Query) -> Found | None:
        """The digest stored in `context` that best matches `query`, and their cosine
        similarity (vectors are unit-norm)."""
        ...

    async def add(
        self, context: str, vector: F32, pairs: U8, digest: str, ttl_s: float
    ) -> None: ...

    async def aclose(self) -> None: ...


class _Bucket:
    """One context's ring of vectors: the oldest slot is overwritten first."""

    __slots__ = ("digests", "expires", "next", "pairs", "vectors")

    def __init__(self, capacity: int, dim: int) -> None:
        self.vectors = np.zeros((capacity, dim), dtype=np.float32)
        self.pairs = np.zeros((capacity, PAIR_BYTES), dtype=np.uint8)
        self.expires = np.zeros(capacity, dtype=np.float64)  # 0: an empty slot
        self.digests: list[str] = [""] * capacity
        self.next = 0


class MemorySemanticIndex:
    """In this process; thread-safe (the SDK's loops share it)."""

    url = "memory"

    def __init__(
        self,
        max_per_context: int,
        max_contexts: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = max_per_context
        self._max_contexts = max_contexts
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    async def nearest(self, context: str, query: Query) -> Found | None:
        with self._lock:
            bucket = self._buckets.get(context)
            if bucket is None or bucket.vectors.shape[1] != query.vector.shape[0]:
                return None
            self._buckets.move_to_end(context)
            similarity = bucket.vectors @ query.vector
            best = _best(similarity, bucket.expires > self._clock(), bucket.pairs, query)
            return None if best is None else (bucket.digests[best], float(similarity[best]))

    async def add(self, context: str, vector: F32, pairs: U8, digest: str, ttl_s: float) -> None:
        with self._lock:
            bucket = self._buckets.get(context)
            if bucket is None or bucket.vectors.shape[1] != vector.shape[0]:
                bucket = self._buckets[context] = _Bucket(self._capacity, vector.shape[0])
                while len(self._buckets) > self._max_contexts:
                    self._buckets.popitem(last=False)
            self._buckets.move_to_end(context)
            slot = bucket.next
            bucket.vectors[slot] = vector
            bucket.pairs[slot] = pairs
            bucket.expires[slot] = self._clock() + ttl_s
            bucket.digests[slot] = digest
            bucket.next = (slot + 1) % self._capacity

    async def aclose(self) -> None:
        """Nothing to release; the vectors stay for whoever else holds the index."""


class RedisSemanticIndex:
    """One Redis list per context (``{namespace}:sem:{context}``; the context key carries
    the registry version): ``LRANGE`` to look up, ``LPUSH`` + ``LTRIM`` + ``PEXPIRE`` in
    one transaction to add. Records whose size does not match the query's dimension
    (another encoder) are ignored. A Redis that fails raises `StoreUnavailable`, as a
    store does (`Answering`: the calls waiting give up with the first, then one asks
    at a time); the cache turns it into a miss."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        namespace: str,
        max_per_context: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = connect(url, timeout_s, "cache.url")
        self.url = self._redis.url
        self._answering = Answering.of(self._redis, timeout_s)
        self._client: Any = self._redis.client
        self._prefix = f"{namespace}:sem:"
        self._capacity = max_per_context
        self._clock = clock

    async def nearest(self, context: str, query: Query) -> Found | None:
        async with self._answering():
            raw = await self._client.lrange(self._prefix + context, 0, self._capacity - 1)
        layout = _record_dtype(query.vector.shape[0])
        records = [r for r in raw if isinstance(r, bytes) and len(r) == layout.itemsize]
        if not records:
            return None
        table = np.frombuffer(b"".join(records), dtype=layout)
        similarity = table["vector"].astype(np.float32) @ query.vector
        best = _best(similarity, table["expires"] > self._clock(), table["pairs"], query)
        if best is None:
            return None
        return table["digest"][best].decode("ascii"), float(similarity[best])

    async def add(self, context: str, vector: F32, pairs: U8, digest: str, ttl_s: float) -> None:
        record = np.zeros(1, dtype=_record_dtype(vector.shape[0]))
        record["digest"] = digest.encode("ascii")
        record["expires"] = self._clock() + ttl_s
        record["pairs"] = pairs
        record["vector"] = vector.astype(np.float16)
        name = self._prefix + context
        async with self._answering(), self._client.pipeline(transaction=True) as pipe:
            pipe.lpush(name, record.tobytes())
            pipe.ltrim(name, 0, self._capacity - 1)
            pipe.pexpire(name, max(1, round(ttl_s * 1000)))
            await pipe.execute()

    async def aclose(self) -> None:
        await self._redis.aclose()


def _record_dtype(dim: int) -> np.dtype[Any]:
    return np.dtype(
        [
            ("digest", f"S{DIGEST_BYTES}"),
            ("expires", "<f8"),
            ("pairs", "u1", (PAIR_BYTES,)),
            ("vector", "<f2", (dim,)),
        ]
    )
