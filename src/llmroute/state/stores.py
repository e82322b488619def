"""The key-value stores' interface, and the store a registry section names: the
`KeyValueStore` protocol (with `ListingRead`), `asked` (a call that must reach the
store), the URL checks, the factories that open a section's store (`state_store`,
`process_store`, `open_store`), and the key names that keep each client key's records
apart (`owned_key`, `owner_group`). The stores are `MemoryStore` (this process, least
recently used first out: `llmroute.state.memory_store`) and `RedisStore` (shared by every
gateway pointed at it: `llmroute.state.redis_store`). Both are async so the gateway can
await either; neither blocks the event loop.

A store that cannot answer raises `StoreUnavailable` with the URL's password masked;
the cache above it turns that into a miss. The store logs nothing: its callers say what
a failure cost them.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from llmroute.errors import ConfigError
from llmroute.state.answering import StoreUnavailable
from llmroute.state.listings import Cap
from llmroute.state.memory_store import MemoryStore
from llmroute.state.redis_conn import query_refusal
from llmroute.state.redis_store import RedisStore
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


@dataclass(frozen=True, slots=True)
class ListingRead:
    """What was read of an append-only listing (`value`, None when absent) and the `line`
    to append to it if it still holds that (`KeyValueStore.set_appending`)."""

    value: bytes | None
    line: bytes

    def digest(self) -> str:
        return "" if self.value is None else hashlib.sha1(self.value).hexdigest()


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
    a query option it refuses, one that would make it send a command again or replace
    the section's ``timeout_s`` (`query_refusal`), or Redis without its client
    installed. Nothing connects."""
    if url == "memory":
        return
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{what}={mask_url(url)}: must be 'memory', 'off' or a redis://, rediss:// or "
            "unix:// URL"
        )
    if (why := query_refusal(url)) is not None:
        raise ConfigError(f"{what}={mask_url(url)}: {why}")
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
