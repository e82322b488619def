"""`MemoryStore`: the key-value store (`llmroute.state.stores.KeyValueStore`) kept in this
process, entries with expiry, least recently used first out (per client key where its keys
name one: `llmroute.state.stores.owner_group`). ``memory`` in a registry section's ``url``
opens one (`llmroute.state.stores.process_store`, `open_store`).
"""

from __future__ import annotations

import builtins
import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from llmroute.state.listings import Cap, Listing

if TYPE_CHECKING:
    from llmroute.state.stores import ListingRead

__all__ = ["MemoryStore"]


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
