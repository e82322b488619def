"""Key-value stores with expiry for the response cache: `MemoryStore` (this process,
least recently used first out) and `RedisStore` (shared by every gateway pointed at
it). Both are async so the gateway can await either; neither blocks the event loop.

A store that cannot answer raises `StoreUnavailable` with the URL's password masked;
the cache above it turns that into a miss. After a Redis call fails, the calls waiting
on it give up at once, the store is not asked again for a second (as `Outage` does),
and then one call asks while the others fail at once (`llmroute.state.answering`): a
Redis that hangs costs one timeout a second, not one per request under way or made
meanwhile (stored responses, conversations and batches; the cache and affinity have
their own pause too). The store logs nothing: its callers say what a failure cost them.
"""

from __future__ import annotations

import builtins
import hashlib
import heapq
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from llmroute.errors import ConfigError
from llmroute.state.answering import Answering, StoreUnavailable
from llmroute.state.listings import DELETE_LISTED, SET_LISTED, Cap, Listing
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


class MemoryStore:
    """Entries with expiry in this process, at most `max_entries` of them holding at most
    `max_bytes` in all. Safe to share between event loops in different threads (the
    SDK's).

    Without `owner_of` the least recently used entry goes first once there are too many
    or too large. With it (a key's owner: a client key's records, `owner_group`) each
    owner's entries are kept in their own use order, and the entry to go is the least
    recently used of the owner holding the most (entries, or bytes, whichever is over):
    one client key filling a store shared by all of them evicts its own oldest, never
    the records of a key that holds less. A single owner gets the plain order. An entry
    set pinned (`set_pinned`: a running batch's answers) counts in its owner's holding
    but goes only when its owner has nothing else to give, until `unpin`."""

    url = "memory"

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        owner_of: Callable[[str], str] | None = None,
    ) -> None:
        self._entries: dict[str, tuple[float, bytes]] = {}
        # per owner: its keys, least recently used first, each with when it was last used
        self._owners: dict[str, OrderedDict[str, int]] = {}
        # per owner: its pinned keys, oldest first (out of `_owners`' order: never scanned)
        self._pinned: dict[str, dict[str, None]] = {}
        self._owner_bytes: dict[str, int] = {}
        self._owner_of = owner_of or _one_owner
        # per dimension (bytes or not): (-weight, its oldest entry's use, owner), some stale
        self._heaps: dict[bool, list[tuple[int, int, str]]] = {False: [], True: []}
        self._heaps_stale = True  # while there is at most one owner, they are not kept
        self._listings: dict[str, Listing] = {}  # groups bound by a `Cap` (`set_listed`)
        self._uses = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def held(self, owner: str) -> tuple[int, int]:
        """How many entries `owner` (as `owner_of` names it) holds, and their bytes."""
        with self._lock:
            if owner not in self._owners:
                return 0, 0
            return self._count(owner), self._owner_bytes[owner]

    async def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= self._clock():
                self._drop(key)
                return None
            self._used(key)
            return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._lock:
            self._put(key, value, ttl_s)

    async def set_pinned(self, key: str, value: bytes, ttl_s: float) -> None:
        """`set`, the entry evicted only when its owner holds nothing else (`unpin`)."""
        with self._lock:
            self._put(key, value, ttl_s, pinned=True)

    async def unpin(self, keys: Sequence[str]) -> None:
        """The pinned entries of `keys` evicted as any other from now, their owner's most
        recently used."""
        with self._lock:
            for key in keys:
                pins = self._pinned.get(owner := self._owner_of(key))
                if pins is not None and key in pins:
                    del pins[key]
                    if not pins:
                        del self._pinned[owner]
                    self._used(key)
                    self._weighed(owner)

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Set `key` only if it is not there (or has expired); whether it was set."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[0] > self._clock():
                return False
            self._put(key, value, ttl_s)
            return key in self._entries

    async def renew(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Keep `key` `ttl_s` from now if it still holds `value`; whether it did."""
        with self._lock:
            found = self._entries.get(key)
            if found is None or found[0] <= self._clock() or found[1] != value:
                return False
            self._entries[key] = (self._clock() + ttl_s, value)
            return True

    async def replace(
        self, key: str, value: bytes, ttl_s: float, over: bytes, *, pinned: bool = False
    ) -> bool:
        """`set` (`set_pinned`) `key` only if it still holds `over` (not changed, deleted
        or expired since it was read); whether it did."""
        with self._lock:
            if not self._holds(key, over):
                return False
            self._put(key, value, ttl_s, pinned=pinned)
            return True

    def _holds(self, key: str, value: bytes) -> bool:
        """Under the lock: whether `key` is kept, holding `value`."""
        entry = self._entries.get(key)
        return entry is not None and entry[0] > self._clock() and entry[1] == value

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
        """`set` `key` and renew `renewed` (`touch`), both listed in `listing`; then, while
        that group holds more than `cap`, its least recently written other record goes
        (`key` too, when it alone is over). Whether `key` is kept. `pinned` (a background
        response running): `key` is set pinned (`set_pinned`) and unlisted, so that no
        write evicts it for the bound, until it is set again unpinned. `over`: only if
        `key` still holds it (`replace`); None, nothing written, when it does not."""
        with self._lock:
            if over is not None and not self._holds(key, over):
                return None
            self._put(key, value, ttl_s, pinned=pinned)
            self._touched(renewed, ttl_s)
            listed = self._listings.setdefault(listing, Listing())
            for renewed_key in renewed:
                listed.renew(renewed_key)
            if key not in self._entries or pinned:  # not kept: larger than the whole store
                listed.pop(key)
                return key in self._entries
            listed.put(key, len(value))
            if listed.over(cap):  # what expired or was evicted no longer counts
                now = self._clock()
                for gone in [k for k in listed.sizes if self._expires(k) <= now]:
                    listed.pop(gone)
            while listed.over(cap):
                victim = listed.oldest(key) or key
                listed.pop(victim)
                if victim in self._entries:
                    self._drop(victim)
                if victim == key:
                    return False
            return True

    def _expires(self, key: str) -> float:
        """Under the lock: when `key` expires (0: not kept)."""
        entry = self._entries.get(key)
        return 0.0 if entry is None else entry[0]

    async def delete_listed(self, key: str, listing: str) -> bool:
        """`delete`, and `key` unlisted from `listing`."""
        with self._lock:
            listed = self._listings.get(listing)
            if listed is not None:
                listed.pop(key)
                if not listed.sizes:
                    del self._listings[listing]
            if key not in self._entries:
                return False
            self._drop(key)
            return True

    def _used(self, key: str) -> None:
        """Under the lock: `key` (kept) is now its owner's most recently used (a pinned
        key has no place in that order)."""
        owner = self._owner_of(key)
        if key in self._pinned.get(owner, ()):
            return
        self._uses += 1
        order = self._owners[owner]
        order[key] = self._uses
        order.move_to_end(key)

    def _put(self, key: str, value: bytes, ttl_s: float, pinned: bool = False) -> None:
        """Under the lock."""
        if key in self._entries:
            self._drop(key)
        if len(value) > self._max_bytes:
            return
        owner = self._owner_of(key)
        self._entries[key] = (self._clock() + ttl_s, value)
        self._owners.setdefault(owner, OrderedDict())
        self._owner_bytes[owner] = self._owner_bytes.get(owner, 0) + len(value)
        self._bytes += len(value)
        if pinned:
            self._pinned.setdefault(owner, {})[key] = None
        self._used(key)
        self._weighed(owner)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(self._victim(self._bytes > self._max_bytes, key))

    def _victim(self, by_bytes: bool, spared: str) -> str:
        """Under the lock: the entry to evict, the least recently used of the owner
        holding the most (bytes when `by_bytes`, else entries; of two holding as much,
        the one whose oldest entry was older when they last changed; its pinned entries
        last). `spared`, the entry just written, goes only when nothing else is left to
        evict. The owner is found in a heap (`_weighed`), not by looking at each: a store
        shared by thousands of client keys evicts as fast as one of a few."""
        if len(self._owners) == 1:
            return self._oldest(next(iter(self._owners)), spared) or spared
        if self._heaps_stale:
            self._rebuild()
        heap = self._heaps[by_bytes]
        passed: list[tuple[int, int, str]] = []
        victim = spared
        while heap:
            weight, _, owner = heap[0]
            found = self._owners.get(owner)
            if found is None or -weight != self._weight(owner, by_bytes):
                heapq.heappop(heap)  # stale: the owner has changed since
                continue
            oldest = self._oldest(owner, spared)
            if oldest is not None:
                victim = oldest
                break
            passed.append(heapq.heappop(heap))  # holds only the entry just written
        for item in passed:
            heapq.heappush(heap, item)
        return victim

    def _oldest(self, owner: str, spared: str) -> str | None:
        """Under the lock: `owner`'s entry to evict, not `spared`: its least recently
        used, or once it holds only pinned ones, its oldest pinned."""
        for keys in (self._owners[owner], self._pinned.get(owner, ())):
            found = next((k for k in keys if k != spared), None)
            if found is not None:
                return found
        return None

    def _count(self, owner: str) -> int:
        return len(self._owners[owner]) + len(self._pinned.get(owner, ()))

    def _weight(self, owner: str, by_bytes: bool) -> int:
        return self._owner_bytes[owner] if by_bytes else self._count(owner)

    def _first_use(self, owner: str) -> int:
        """When `owner`'s least recently used entry was used (its pinned ones: no order)."""
        order = self._owners[owner]
        return order[next(iter(order))] if order else self._uses

    def _weighed(self, owner: str) -> None:
        """Under the lock: `owner`'s holding changed; the heaps that find the owner
        holding the most get its new weights (the old ones, now stale, are skipped, and
        cleared once they outnumber the live ones)."""
        order = self._owners.get(owner)
        if order is None or self._heaps_stale:
            return
        if len(self._owners) == 1:  # `_victim` needs no heap; rebuilt once it does
            self._heaps_stale = True
            return
        oldest = self._first_use(owner)
        for by_bytes, heap in self._heaps.items():
            heapq.heappush(heap, (-self._weight(owner, by_bytes), oldest, owner))
            if len(heap) > 4 * len(self._owners) + 1024:
                self._heaps_stale = True
        if self._heaps_stale:
            self._rebuild()

    def _rebuild(self) -> None:
        """Under the lock: the heaps made afresh from every owner's weights."""
        for by_bytes, heap in self._heaps.items():
            heap[:] = [(-self._weight(o, by_bytes), self._first_use(o), o) for o in self._owners]
            heapq.heapify(heap)
        self._heaps_stale = False

    async def delete(self, key: str) -> bool:
        """Drop `key`; whether it was there."""
        with self._lock:
            if key not in self._entries:
                return False
            self._drop(key)
            return True

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Drop each of `keys`; how many were there."""
        with self._lock:
            there = [key for key in keys if key in self._entries]
            for key in there:
                self._drop(key)
            return len(there)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def count(self, keys: Sequence[str]) -> int:
        """How many of `keys` (each once) are there, unexpired; none marked used."""
        with self._lock:
            now = self._clock()
            return sum(1 for key in keys if (e := self._entries.get(key)) and e[0] > now)

    async def touch(self, keys: Sequence[str], ttl_s: float) -> None:
        """Keep the entries of `keys` that are still there `ttl_s` from now."""
        with self._lock:
            self._touched(keys, ttl_s)

    def _touched(self, keys: Sequence[str], ttl_s: float) -> None:
        """Under the lock: `touch`."""
        now = self._clock()
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > now:
                self._entries[key] = (now + ttl_s, entry[1])
                self._used(key)

    async def append(self, key: str, data: bytes, ttl_s: float) -> None:
        """`data` added at the end of `key`'s value (created when absent, as when expired),
        which then expires `ttl_s` from now: one step, whoever else appends."""
        with self._lock:
            entry = self._entries.get(key)
            live = entry is not None and entry[0] > self._clock()
            self._put(key, (entry[1] if entry is not None and live else b"") + data, ttl_s)

    async def add_member(self, key: str, member: str, ttl_s: float) -> None:
        """`member` (no newline in it) added to the set `key`, which then expires `ttl_s`
        from now."""
        with self._lock:
            found = self._live_members(key)
            found.add(member)
            self._put(key, "\n".join(sorted(found)).encode(), ttl_s)

    async def add_member_within(
        self, key: str, member: str, ttl_s: float, prefix: str, most: int
    ) -> int | None:
        """`add_member` if fewer than `most` members of the set start with `prefix` (one
        step: no other add between the count and this one); None when added, else how
        many do."""
        with self._lock:
            found = self._live_members(key)
            there = sum(1 for m in found if m.startswith(prefix))
            if there >= most:
                return there
            found.add(member)
            self._put(key, "\n".join(sorted(found)).encode(), ttl_s)
            return None

    async def set_appending(
        self,
        key: str,
        value: bytes,
        ttl_s: float,
        listing: str,
        read: ListingRead,
        ttl_listing_s: float,
    ) -> bool:
        """`key` set to `value` and `read.line` appended to `listing` (which then expires
        `ttl_listing_s` from now), only if `listing` still holds what was `read` of it
        (one step: what was decided on that read holds); whether they were."""
        with self._lock:
            entry = self._entries.get(listing)
            now = self._clock()
            held = entry[1] if entry is not None and entry[0] > now else None
            if held != read.value:
                return False
            self._put(key, value, ttl_s)
            self._put(listing, (held or b"") + read.line, ttl_listing_s)
            return True

    async def remove_member(self, key: str, member: str) -> None:
        with self._lock:
            found = self._live_members(key)
            if member in found:
                found.discard(member)
                entry = self._entries[key]
                self._put(key, "\n".join(sorted(found)).encode(), entry[0] - self._clock())

    async def members(self, key: str) -> list[str]:
        with self._lock:
            return sorted(self._live_members(key))

    def _live_members(self, key: str) -> builtins.set[str]:
        """Under the lock."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            return set()
        return set(filter(None, entry[1].decode().split("\n")))

    async def delete_prefix(self, prefix: str) -> int:
        """Drop every key that starts with `prefix`; how many there were."""
        with self._lock:
            gone = [key for key in self._entries if key.startswith(prefix)]
            for key in gone:
                self._drop(key)
            for listing in [name for name in self._listings if name.startswith(prefix)]:
                del self._listings[listing]
            return len(gone)

    async def aclose(self) -> None:
        """Nothing to release; the entries stay for whoever else holds the store."""

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(value)
        owner = self._owner_of(key)
        order, pins = self._owners[owner], self._pinned.get(owner)
        if pins is not None and key in pins:
            del pins[key]
            if not pins:
                del self._pinned[owner]
        else:
            del order[key]
        if self._count(owner):
            self._owner_bytes[owner] -= len(value)
            self._weighed(owner)
        else:
            del self._owners[owner], self._owner_bytes[owner]


def _one_owner(key: str) -> str:
    """Every entry of a store without owners: one owner, plain least-recently-used."""
    return ""


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
