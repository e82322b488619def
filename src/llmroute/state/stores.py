"""Key-value stores with expiry for the response cache: `MemoryStore` (this process,
least recently used first out; its own module, `llmroute.state.memory_store`) and
`RedisStore` (shared by every gateway pointed at it). Both are async so the gateway can
await either; neither blocks the event loop.

A store that cannot answer raises `StoreUnavailable` with the URL's password masked;
the cache above it turns that into a miss. After a Redis call fails, the calls waiting
on it give up at once, the store is not asked again for a second (as `Outage` does),
and then one call asks while the others fail at once (`llmroute.state.answering`): a
Redis that hangs costs one timeout a second, not one per request under way or made
meanwhile (stored responses, conversations and batches; the cache and affinity have
their own pause too). The store logs nothing: its callers say what a failure cost them.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from llmroute.errors import ConfigError
from llmroute.state.answering import Answering, StoreUnavailable
from llmroute.state.listings import DELETE_LISTED, SET_LISTED, Cap
from llmroute.state.memory_store import MemoryStore
from llmroute.state.redis_conn import connect
from llmroute.telemetry.store.url import mask_url

if TYPE_CHECKING:
    from llmroute.registry.schema import CacheSettings, Registry

__all__ = [
    "CACHE_ENV_VAR",
    "KeyValueStore",
    "ListingRead",
    "MemoryStore",
    "RedisStore",
    "StoreUnavailable",
    "asked",
    "check_registry_urls",
    "check_url",
    "has_limits",
    "open_store",
    "owned_key",
    "owner_group",
    "owner_prefix",
    "owner_tag",
    "process_store",
    "resolve_cache_url",
    "state_store",
]

CACHE_ENV_VAR = "LLMROUTE_CACHE_URL"
_OFF = frozenset({"", "off", "none"})
T = TypeVar("T")
# a pause, another call's probe, then an answer (or a pause after its failure)
_ASKED_TRIES = 3


async def asked(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, asked of the store itself: again after the pause when it was refused
    unasked (`StoreUnavailable.paused_s`: after a failure; or while another call probes,
    then as soon as the probe ends), three tries at most, so that Redis is asked at
    least once or another call's asking is the answer. For a write that must reach the
    store (a background run's last), not for a call a client waits on."""
    for _ in range(_ASKED_TRIES - 1):
        try:
            return await call()
        except StoreUnavailable as exc:
            if not exc.paused_s:
                raise
            await exc.wait()
    return await call()


class KeyValueStore(Protocol):
    url: str  # for logs: any password masked

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def set_pinned(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def unpin(self, keys: Sequence[str]) -> None: ...

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
    ) -> bool | None: ...

    async def delete_listed(self, key: str, listing: str) -> bool: ...

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool: ...

    async def renew(self, key: str, value: bytes, ttl_s: float) -> bool: ...

    async def replace(
        self, key: str, value: bytes, ttl_s: float, over: bytes, *, pinned: bool = False
    ) -> bool: ...

    async def delete(self, key: str) -> bool: ...

    async def delete_many(self, keys: Sequence[str]) -> int: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def count(self, keys: Sequence[str]) -> int: ...

    async def touch(self, keys: Sequence[str], ttl_s: float) -> None: ...

    async def delete_prefix(self, prefix: str) -> int: ...

    async def append(self, key: str, data: bytes, ttl_s: float) -> None: ...

    async def add_member(self, key: str, member: str, ttl_s: float) -> None: ...

    async def add_member_within(
        self, key: str, member: str, ttl_s: float, prefix: str, most: int
    ) -> int | None: ...

    async def set_appending(
        self,
        key: str,
        value: bytes,
        ttl_s: float,
        listing: str,
        read: ListingRead,
        ttl_listing_s: float,
    ) -> bool: ...

    async def remove_member(self, key: str, member: str) -> None: ...

    async def members(self, key: str) -> list[str]: ...

    async def aclose(self) -> None: ...


def owner_group(key: str) -> str:
    """The owner of a key made by `owned_key` (``PREFIX`` + `owner_tag` + ``:HASH``):
    its part before the last ``:``, the same for all of a client key's records under
    one prefix. A key of no client's (``PREFIX`` + ``running``) is one owner of its own."""
    return key.rpartition(":")[0]


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


@dataclass(frozen=True, slots=True)
class ListingRead:
    """What was read of an append-only listing (`value`, None when absent) and the `line`
    to append to it if it still holds that (`KeyValueStore.set_appending`)."""

    value: bytes | None
    line: bytes

    def digest(self) -> str:
        return "" if self.value is None else hashlib.sha1(self.value).hexdigest()


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


def resolve_cache_url(
    settings: CacheSettings, environ: Mapping[str, str] | None = None
) -> str | None:
    """The cache's URL, or None when it is off: ``$LLMROUTE_CACHE_URL`` wins over the
    registry (``off``, ``none`` or blank turns it off; it cannot turn on a cache the
    registry does not configure, since the registry says what may be cached)."""
    env = os.environ if environ is None else environ
    override = env.get(CACHE_ENV_VAR)
    if override is not None:
        return None if override.strip().lower() in _OFF else override.strip()
    return settings.url if settings.enabled else None


def check_url(url: str, what: str) -> None:
    """Raise `ConfigError` (one line, password masked) for a URL no store can open: an
    unknown scheme, a port or query value Redis's client refuses (``max_connections=``),
    or Redis without its client installed. Nothing connects."""
    if url == "memory":
        return
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{what}={mask_url(url)}: must be 'memory', 'off' or a redis://, rediss:// or "
            "unix:// URL"
        )
    try:
        from redis.asyncio.connection import parse_url
    except ImportError:
        raise ConfigError(
            f"{what} is a Redis URL but the redis client is not installed; "
            "install it with: pip install 'llmroute[redis]'"
        ) from None
    try:  # what redis-py refuses when it opens the pool (a port or a query value)
        parse_url(url)
    except ValueError as exc:
        masked = mask_url(url)
        raise ConfigError(f"{what}={masked}: {str(exc).replace(url, masked)}") from None


def check_registry_urls(registry: Registry, environ: Mapping[str, str] | None = None) -> None:
    """`check_url` for the registry's cache (as ``$LLMROUTE_CACHE_URL`` may override it),
    for where limits are counted (when a deployment has an ``rpm`` or a model a
    ``budget``), for where breaker openings are shared, for where conversations are
    remembered (``affinity``) and for where responses are kept (``stored_responses``)."""
    env = os.environ if environ is None else environ
    if registry.cache is not None and (url := resolve_cache_url(registry.cache, env)):
        check_url(url, CACHE_ENV_VAR if CACHE_ENV_VAR in env else "cache.url")
    if has_limits(registry):
        check_url(registry.dispatch.limits.url, "dispatch.limits.url")
    if registry.affinity is not None:
        check_url(registry.affinity.url, "affinity.url")
    if registry.stored_responses is not None:
        check_url(registry.stored_responses.url, "stored_responses.url")
    if registry.dispatch.breaker.enabled:
        check_url(registry.dispatch.breaker.url, "dispatch.breaker.url")


def has_limits(registry: Registry) -> bool:
    """Whether any deployment has an ``rpm``, a ``tpm`` or a ``max_in_flight``, any model
    a ``budget``, or any client key an ``rpm``, a ``tpm`` or a ``budget``: something for
    `llmroute.state.limits` to count."""
    keys = registry.auth.keys if registry.auth is not None else ()
    counted = (k.rpm is not None or k.tpm is not None or k.budget is not None for k in keys)
    return any(counted) or any(
        m.budget is not None
        or any(
            t.rpm is not None or t.tpm is not None or t.max_in_flight is not None
            for t in m.targets()
        )
        for m in registry.models.values()
    )


_process_stores: dict[tuple[str, int, int], MemoryStore] = {}
_process_lock = threading.Lock()


def owner_tag(owner: str) -> str:
    """A hash of client key name `owner`: what the store holds instead of the name."""
    return hashlib.sha256(b"owner\0" + owner.encode()).hexdigest()[:16]


def owner_prefix(prefix: str, owner: str) -> str:
    """Where client key `owner`'s records are kept under `prefix`: behind a hash of its
    name (`owner_tag`), so that they can be forgotten together (``delete_prefix``)
    without the name being readable in the store."""
    return f"{prefix}{owner_tag(owner)}:"


def owned_key(prefix: str, owner: str, name: str) -> str:
    """The key of `owner`'s record `name` under `prefix` (neither readable in the store)."""
    digest = hashlib.sha256(f"{owner}\0{name}".encode()).hexdigest()[:40]
    return f"{owner_prefix(prefix, owner)}{digest}"


def process_store(
    purpose: str, max_entries: int, max_bytes: int, *, per_owner: bool = False
) -> MemoryStore:
    """This process's memory store for `purpose` (one per size), kept for the process's
    life: a registry reload that builds new gateways finds what the old ones kept
    (conversation affinity, stored responses) instead of forgetting it. `per_owner`:
    its keys are `owned_key`'s, and a full store evicts from the client key holding the
    most (`MemoryStore`, `owner_group`)."""
    with _process_lock:
        found = _process_stores.get((purpose, max_entries, max_bytes))
        if found is None:
            found = MemoryStore(max_entries, max_bytes, owner_of=owner_group if per_owner else None)
            _process_stores[(purpose, max_entries, max_bytes)] = found
        return found


def state_store(
    setting: str,
    url: str,
    max_entries: int,
    max_bytes: int,
    timeout_s: float,
    *,
    per_owner: bool = False,
) -> KeyValueStore:
    """The store a registry section's `url` names: ``memory`` is this process's
    (`process_store`, one per section and size), anything else Redis, checked first so
    that a bad URL or a missing client is named by ``SETTING.url``. Nothing connects."""
    if url == "memory":
        return process_store(setting, max_entries, max_bytes, per_owner=per_owner)
    check_url(url, f"{setting}.url")
    return RedisStore(url, timeout_s)


def open_store(url: str, settings: CacheSettings) -> KeyValueStore:
    """The store behind `url` (``memory`` or a Redis URL). Opening a Redis store does
    not connect: a Redis that is down makes misses, not a gateway that will not start."""
    check_url(url, CACHE_ENV_VAR)
    if url == "memory":
        return MemoryStore(settings.max_entries, settings.max_bytes)
    return RedisStore(url, settings.timeout_s)
