"""The semantic cache's index: for each conversation context (everything about a request
but its last user message, hashed), the embeddings of the last user messages whose
answers were stored, and under which exact cache key.

A lookup is one matrix-vector product over at most ``max_per_context`` vectors of one
context: the nearest stored message at or above the threshold names the answer to
replay. `MemorySemanticIndex` keeps them in this process (least recently used contexts
dropped beyond ``max_contexts``); `RedisSemanticIndex` keeps each context as one Redis
list of fixed-size records (the key's digest, its expiry, the vector as float16), shared
by every gateway pointed at it, trimmed to ``max_per_context`` and expiring with the
answers. Either way an entry outlives its answer by at most the answer's TTL, and an
entry whose answer is gone is a miss.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from llmroute.state.redis_conn import connect

__all__ = ["MemorySemanticIndex", "RedisSemanticIndex", "SemanticIndex"]

F32 = npt.NDArray[np.float32]
DIGEST_BYTES = 64  # a SHA-256 in hex: what follows the cache's key prefix
Found = tuple[str, float]  # a stored digest and its cosine similarity to the query


class SemanticIndex(Protocol):
    url: str

    async def nearest(self, context: str, vector: F32, threshold: float) -> Found | None:
        """The digest stored nearest `vector` in `context` and its cosine similarity,
        when that is at least `threshold` (vectors are unit-norm)."""
        ...

    async def add(self, context: str, vector: F32, digest: str, ttl_s: float) -> None: ...

    async def aclose(self) -> None: ...


class _Bucket:
    """One context's ring of vectors: the oldest slot is overwritten first."""

    __slots__ = ("digests", "expires", "next", "vectors")

    def __init__(self, capacity: int, dim: int) -> None:
        self.vectors = np.zeros((capacity, dim), dtype=np.float32)
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

    async def nearest(self, context: str, vector: F32, threshold: float) -> Found | None:
        with self._lock:
            bucket = self._buckets.get(context)
            if bucket is None or bucket.vectors.shape[1] != vector.shape[0]:
                return None
            self._buckets.move_to_end(context)
            similarity = bucket.vectors @ vector
            similarity[bucket.expires <= self._clock()] = -np.inf
            best = int(np.argmax(similarity))
            score = float(similarity[best])
            return (bucket.digests[best], score) if score >= threshold else None

    async def add(self, context: str, vector: F32, digest: str, ttl_s: float) -> None:
        with self._lock:
            bucket = self._buckets.get(context)
            if bucket is None or bucket.vectors.shape[1] != vector.shape[0]:
                bucket = self._buckets[context] = _Bucket(self._capacity, vector.shape[0])
                while len(self._buckets) > self._max_contexts:
                    self._buckets.popitem(last=False)
            self._buckets.move_to_end(context)
            slot = bucket.next
            bucket.vectors[slot] = vector
            bucket.expires[slot] = self._clock() + ttl_s
            bucket.digests[slot] = digest
            bucket.next = (slot + 1) % self._capacity

    async def aclose(self) -> None:
        """Nothing to release; the vectors stay for whoever else holds the index."""


class RedisSemanticIndex:
    """One Redis list per context (``{namespace}:sem:{context}``; the context key carries
    the registry version): ``LRANGE`` to look up, ``LPUSH`` + ``LTRIM`` + ``PEXPIRE`` in
    one transaction to add. Records whose size does not match the query's dimension
    (another encoder) are ignored. Errors propagate as the client's exceptions
    (`errors`); the cache turns them into misses."""

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
        self.errors = self._redis.errors
        self._client: Any = self._redis.client
        self._prefix = f"{namespace}:sem:"
        self._capacity = max_per_context
        self._clock = clock

    async def nearest(self, context: str, vector: F32, threshold: float) -> Found | None:
        raw = await self._client.lrange(self._prefix + context, 0, self._capacity - 1)
        dim = vector.shape[0]
        layout = _record_dtype(dim)
        records = [r for r in raw if isinstance(r, bytes) and len(r) == layout.itemsize]
        if not records:
            return None
        table = np.frombuffer(b"".join(records), dtype=layout)
        similarity = table["vector"].astype(np.float32) @ vector
        similarity[table["expires"] <= self._clock()] = -np.inf
        best = int(np.argmax(similarity))
        score = float(similarity[best])
        if score < threshold:
            return None
        return table["digest"][best].decode("ascii"), score

    async def add(self, context: str, vector: F32, digest: str, ttl_s: float) -> None:
        record = np.zeros(1, dtype=_record_dtype(vector.shape[0]))
        record["digest"] = digest.encode("ascii")
        record["expires"] = self._clock() + ttl_s
        record["vector"] = vector.astype(np.float16)
        name = self._prefix + context
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lpush(name, record.tobytes())
            pipe.ltrim(name, 0, self._capacity - 1)
            pipe.pexpire(name, max(1, round(ttl_s * 1000)))
            await pipe.execute()

    async def aclose(self) -> None:
        await self._redis.aclose()


def _record_dtype(dim: int) -> np.dtype[Any]:
    return np.dtype([("digest", f"S{DIGEST_BYTES}"), ("expires", "<f8"), ("vector", "<f2", (dim,))])
