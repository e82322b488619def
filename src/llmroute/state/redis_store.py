"""`RedisStore`: the key-value store (`llmroute.state.stores.KeyValueStore`) in Redis,
shared by every gateway pointed at it, and the Lua scripts that make its compound writes
one step. A registry section's ``url`` that is a Redis URL opens one
(`llmroute.state.stores.state_store`, `open_store`).

After a Redis call fails, the calls waiting on it give up at once, the store is not
asked again for a second (as `Outage` does), and then one call asks while the others
fail at once (`llmroute.state.answering`): a Redis that hangs costs one timeout a second,
not one per request under way or made meanwhile (stored responses, conversations and
batches; the cache and affinity have their own pause too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from llmroute.state.answering import Answering
from llmroute.state.listings import DELETE_LISTED, SET_LISTED, Cap
from llmroute.state.redis_conn import connect

if TYPE_CHECKING:
    from llmroute.state.stores import ListingRead

__all__ = ["RedisStore"]


# KEYS[1] a key; ARGV[1] the value it must hold, ARGV[2] its new time to live in ms
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] a key; ARGV[1] its new value, ARGV[2] its time to live in ms, ARGV[3] the value
# it must still hold
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


# KEYS[1] a set; ARGV[1] the member, ARGV[2] its ttl (ms), ARGV[3] the prefix, ARGV[4] the
# most members with it; returns -1 when added, else how many there are
_ADD_MEMBER_WITHIN = """
local there = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if string.sub(member, 1, #ARGV[3]) == ARGV[3] then there = there + 1 end
end
if there >= tonumber(ARGV[4]) then return there end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return -1
"""

# KEYS[1] the record, KEYS[2] the listing; ARGV[1] the value, ARGV[2] its ttl (ms), ARGV[3]
# the SHA-1 of the listing as read ('' when absent), ARGV[4] the line appended to it,
# ARGV[5] its ttl (ms); returns whether they were written
_SET_APPENDING = """
local listing = redis.call('GET', KEYS[2])
if (listing and redis.sha1hex(listing) or '') ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('APPEND', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""


class RedisStore:
    """Redis ``GET`` / ``SET PX`` on one pooled async client. Every call is bounded by
    `timeout_s` (connect included); a failure raises `StoreUnavailable`, and so do the
    calls waiting meanwhile and every call for a second after it, at once (measured on
    `clock`, monotonic), and then each call made while one asks again (`Answering`)."""

    def __init__(
        self, url: str, timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._redis = connect(url, timeout_s, "cache.url")
        self.url = self._redis.url
        self._renew = self._redis.client.register_script(_RENEW)
        self._replace = self._redis.client.register_script(_REPLACE)
        self._set_listed = self._redis.client.register_script(SET_LISTED)
        self._delete_listed = self._redis.client.register_script(DELETE_LISTED)
        self._add_member_within = self._redis.client.register_script(_ADD_MEMBER_WITHIN)
        self._set_appending = self._redis.client.register_script(_SET_APPENDING)
        self._answering = Answering.of(self._redis, timeout_s, clock)

    async def get(self, key: str) -> bytes | None:
        async with self._answering():
            value = await self._redis.client.get(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        async with self._answering():
            await self._redis.client.set(key, value, px=max(1, round(ttl_s * 1000)))

    async def set_pinned(self, key: str, value: bytes, ttl_s: float) -> None:
        """`set`: nothing pinned; Redis evicts only by its own ``maxmemory-policy`` (the
        operator's), which a batch's end looks for (`BatchStore.lost`)."""
        await self.set(key, value, ttl_s)

    async def unpin(self, keys: Sequence[str]) -> None:
        """Nothing: nothing is pinned (`set_pinned`)."""

    async def set_listed(
        self,
        key: str,
        value: bytes,
        ttl_s: float,
        listing: str,
        renewed: Sequence[str],
        cap: Cap,
        *,
        pinned: bool = False,
        over: bytes | None = None,
    ) -> bool | None:
        """`MemoryStore.set_listed` in one script (`SET_LISTED`): the listing a sorted
        set, its sizes a hash beside it (``LISTING:sizes``), both renewed with the record
        (a `pinned` record is set unlisted: Redis evicts it only at its maxmemory)."""
        keys = [key, listing, f"{listing}:sizes", *renewed]
        most = [-1 if n is None else n for n in (cap.entries, cap.size)]
        ttl_ms = max(1, round(ttl_s * 1000))
        args = [value, ttl_ms, *most, int(pinned), b"" if over is None else over]
        async with self._answering():
            kept = await self._set_listed(keys=keys, args=args)
        return None if kept == -1 else bool(kept)

    async def delete_listed(self, key: str, listing: str) -> bool:
        async with self._answering():
            return bool(await self._delete_listed(keys=[key, listing, f"{listing}:sizes"]))

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        """``SET NX PX``: set `key` only if it is not there; whether it was set (one of
        several processes racing for it wins)."""
        async with self._answering():
            done = await self._redis.client.set(key, value, px=max(1, round(ttl_s * 1000)), nx=True)
        return bool(done)

    async def renew(self, key: str, value: bytes, ttl_s: float) -> bool:
        """``PEXPIRE`` `key` if it still holds `value` (one script: no other process can
        take it in between); whether it did."""
        async with self._answering():
            done = await self._renew(keys=[key], args=[value, max(1, round(ttl_s * 1000))])
        return bool(done)

    async def replace(
        self, key: str, value: bytes, ttl_s: float, over: bytes, *, pinned: bool = False
    ) -> bool:
        """`MemoryStore.replace` in one script (`_REPLACE`; `pinned`: nothing is pinned)."""
        async with self._answering():
            done = await self._replace(keys=[key], args=[value, max(1, round(ttl_s * 1000)), over])
        return bool(done)

    async def delete(self, key: str) -> bool:
        async with self._answering():
            return bool(await self._redis.client.delete(key))

    async def delete_many(self, keys: Sequence[str]) -> int:
        """One ``UNLINK``; how many of `keys` were there."""
        if not keys:
            return 0
        async with self._answering():
            return int(await self._redis.client.unlink(*keys))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One ``MGET``."""
        if not keys:
            return []
        async with self._answering():
            values = await self._redis.client.mget(keys)
        return [value if isinstance(value, bytes) else None for value in values]

    async def count(self, keys: Sequence[str]) -> int:
        """One ``EXISTS``: how many of `keys` (each once) are there."""
        if not keys:
            return 0
        async with self._answering():
            return int(await self._redis.client.exists(*keys))

    async def touch(self, keys: Sequence[str], ttl_s: float) -> None:
        """``PEXPIRE`` each of `keys` (one round trip; keys gone stay gone)."""
        if not keys:
            return
        ttl_ms = max(1, round(ttl_s * 1000))
        async with self._answering(), self._redis.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pexpire(key, ttl_ms)
            await pipe.execute()

    async def append(self, key: str, data: bytes, ttl_s: float) -> None:
        """``APPEND`` and ``PEXPIRE`` in one transaction."""
        async with self._answering(), self._redis.client.pipeline(transaction=True) as pipe:
            pipe.append(key, data)
            pipe.pexpire(key, max(1, round(ttl_s * 1000)))
            await pipe.execute()

    async def add_member(self, key: str, member: str, ttl_s: float) -> None:
        """``SADD`` and ``PEXPIRE`` in one transaction."""
        async with self._answering(), self._redis.client.pipeline(transaction=True) as pipe:
            pipe.sadd(key, member)
            pipe.pexpire(key, max(1, round(ttl_s * 1000)))
            await pipe.execute()

    async def add_member_within(
        self, key: str, member: str, ttl_s: float, prefix: str, most: int
    ) -> int | None:
        """`MemoryStore.add_member_within` in one script (`_ADD_MEMBER_WITHIN`)."""
        args = [member, max(1, round(ttl_s * 1000)), prefix, most]
        async with self._answering():
            there = int(await self._add_member_within(keys=[key], args=args))
        return None if there < 0 else there

    async def set_appending(
        self,
        key: str,
        value: bytes,
        ttl_s: float,
        listing: str,
        read: ListingRead,
        ttl_listing_s: float,
    ) -> bool:
        """`MemoryStore.set_appending` in one script (`_SET_APPENDING`), which compares a
        digest of what was read, not the listing itself."""
        ttl_ms, ttl_listing_ms = (max(1, round(t * 1000)) for t in (ttl_s, ttl_listing_s))
        args = [value, ttl_ms, read.digest(), read.line, ttl_listing_ms]
        async with self._answering():
            return bool(await self._set_appending(keys=[key, listing], args=args))

    async def remove_member(self, key: str, member: str) -> None:
        async with self._answering():
            await self._redis.client.srem(key, member)

    async def members(self, key: str) -> list[str]:
        async with self._answering():
            found = await self._redis.client.smembers(key)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in found)

    async def delete_prefix(self, prefix: str) -> int:
        """``SCAN`` for the keys that start with `prefix` (its glob characters escaped)
        and ``UNLINK`` them, a batch at a time; how many there were."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        gone = 0
        async with self._answering():
            batch: list[bytes] = []
            async for key in self._redis.client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    gone += int(await self._redis.client.unlink(*batch))
                    batch.clear()
            if batch:
                gone += int(await self._redis.client.unlink(*batch))
        return gone

    async def aclose(self) -> None:
        await self._redis.aclose()
