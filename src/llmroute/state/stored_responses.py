"""Responses kept for the Responses API front (registry ``stored_responses``; docs/gateway.md).

A client of OpenAI's Responses API continues a conversation by naming the previous
response (``previous_response_id``) instead of sending the conversation again, and reads
or deletes a response by its id. For that the gateway keeps, per response, the response
object it answered, the input items of its request and the ids of the responses it
continues (its chain, oldest first): a turn stores only its own items, so a long
conversation costs its size once, not once per turn, and a continuation reads the whole
chain in one more round trip (`get_many`). Each new turn renews the expiry of the chain
it continues: a conversation is kept `ttl_s` after its last turn.

Each record is reachable only with the client key that made it (the key's name is
hashed into the store key), and ids are 192 random bits. The text is kept verbatim, as
the client sent and received it: the next turn needs it so. The store is a
`KeyValueStore`: memory (this process, shared by every registry it loads, so a reload
forgets nothing) or Redis (every gateway).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeGuard

from llmroute.registry.schema import Registry, StoredResponsesSettings
from llmroute.state.listings import Cap
from llmroute.state.stores import (
    KeyValueStore,
    StoreUnavailable,
    asked,
    owned_key,
    owner_prefix,
    state_store,
)

__all__ = [
    "RUNNING",
    "BrokenChain",
    "ResponseChain",
    "ResponseStore",
    "StoredResponse",
    "bare",
    "new_response_id",
    "trimmed",
    "with_ids",
]

log = logging.getLogger("llmroute.responses")

_VERSION = 1
RUNNING = ("queued", "in_progress")  # a background response's statuses before its end


def new_response_id() -> str:
    """A fresh response id: unguessable, so an id is as good as a bearer of its record
    where no client keys are configured."""
    return f"resp_{secrets.token_hex(24)}"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One kept response: `response` as answered, the `input` items of its request (each
    with an ``id``), the ids of the responses it continues (`chain`, oldest first), and
    whether its events are kept too (`streamed`: a background response made with
    ``stream: true``)."""

    response: dict[str, Any]
    input: list[dict[str, Any]]
    chain: list[str]
    streamed: bool = False

    @property
    def id(self) -> str:
        return str(self.response.get("id") or "")

    @property
    def running(self) -> bool:
        """A background response not yet answered, failed or cancelled."""
        response = self.response
        return response.get("background") is True and response.get("status") in RUNNING

    def items(self) -> list[dict[str, Any]]:
        """This turn: its request's input, then its response's output."""
        output = self.response.get("output")
        return [*self.input, *(output if isinstance(output, list) else ())]

    def to_bytes(self) -> bytes:
        record = {
            "v": _VERSION,
            "response": self.response,
            "input": self.input,
            "chain": self.chain,
        }
        if self.streamed:
            record["streamed"] = True
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> StoredResponse | None:
        """The record in `raw`; None for one this version cannot read."""
        try:
            record = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(record, dict) or record.get("v") != _VERSION:
            return None
        response, items, chain = record.get("response"), record.get("input"), record.get("chain")
        if not (isinstance(response, dict) and _items(items) and _ids(chain)):
            return None
        return cls(response, items, chain, record.get("streamed") is True)


@dataclass(frozen=True, slots=True)
class ResponseChain:
    """A kept response (`last`) with the items of every turn before it (`earlier`)."""

    last: StoredResponse
    earlier: list[dict[str, Any]]

    def context(self) -> list[dict[str, Any]]:
        """What a continuation of `last` carries on: every turn, `last`'s included."""
        return [*self.earlier, *self.last.items()]

    def continued_by(self) -> list[str]:
        """The chain of a response that continues `last`."""
        return [*self.last.chain, self.last.id]


class BrokenChain(Exception):
    """A response is kept but one it continues is not (expired, evicted or deleted):
    its conversation cannot be given whole. `bare`: the response itself was kept
    without its chain (`bare`: it ended too large to keep even trimmed), `missing` the
    one it continues, which may be kept still."""

    def __init__(self, missing: str, *, bare: bool = False) -> None:
        super().__init__(missing)
        self.missing = missing
        self.bare = bare


def _items(value: Any) -> TypeGuard[list[dict[str, Any]]]:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _ids(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class ResponseStore:
    """Keeps, finds and forgets responses, per client key (`owner`; ``""`` without
    keys). A store that does not answer raises `StoreUnavailable` (message without
    secrets) for the caller to turn into an error or a warning."""

    def __init__(
        self,
        settings: StoredResponsesSettings,
        store: KeyValueStore,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._prefix = f"{settings.namespace}:response:"
        self._on_outcome = on_outcome
        bound = settings.max_key_responses, settings.max_key_bytes
        self._cap = None if bound == (None, None) else Cap(*bound)

    @classmethod
    def open(
        cls, registry: Registry, on_outcome: Callable[[str], None] | None = None
    ) -> ResponseStore | None:
        """The registry's response store, or None when it keeps none. Opening Redis
        does not connect. `on_outcome` is told what came of each keeping and each
        continuation (``kept``, ``too_large``, ``continued``, ``not_found``, ``broken``,
        ``error``)."""
        settings = registry.stored_responses
        if settings is None:
            return None
        store = state_store(
            "stored_responses",
            settings.url,
            settings.max_entries,
            settings.max_bytes,
            settings.timeout_s,
            per_owner=True,
        )
        return cls(settings, store, on_outcome)

    @property
    def url(self) -> str:
        return self._store.url

    @property
    def kv(self) -> KeyValueStore:
        """The store below (conversations are kept there too)."""
        return self._store

    def key(self, owner: str, name: str) -> str:
        """Where `owner`'s record `name` (a response's or conversation's id) is kept."""
        return self._key(owner, name)

    def _key(self, owner: str, response_id: str) -> str:
        return owned_key(self._prefix, owner, response_id)

    async def forget(self, owner: str | None) -> int:
        """Drop every response kept for client key `owner` (``""``: requests without
        keys), or for everyone when None; how many records there were."""
        prefix = self._prefix if owner is None else owner_prefix(self._prefix, owner)
        return await self._store.delete_prefix(prefix)

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        found = await self.read(owner, response_id)
        return None if found is None else found[0]

    async def read(self, owner: str, response_id: str) -> tuple[StoredResponse, bytes] | None:
        """`get`, with the bytes the record was read from: to write over it only if it
        has not changed since (`put`'s `over`)."""
        raw = await self._store.get(self._key(owner, response_id))
        record = None if raw is None else _read(raw, response_id)
        return None if record is None or raw is None else (record, raw)

    async def chain(
        self, owner: str, response_id: str, *, counted: bool = True
    ) -> ResponseChain | None:
        """The response and every turn before it; None when it is not kept;
        `BrokenChain` when it is but an earlier turn is not. `counted`: told to
        `on_outcome` (a continuation; not a listing)."""
        tell = self._tell if counted else _silent
        try:
            last = await self.get(owner, response_id)
            if last is None:
                tell("not_found")
                return None
            previous = last.response.get("previous_response_id")
            if not last.chain and isinstance(previous, str) and previous:  # kept `bare`
                tell("broken")
                raise BrokenChain(previous, bare=True)
            raws = await self._store.get_many([self._key(owner, i) for i in last.chain])
        except StoreUnavailable:
            tell("error")
            raise
        earlier: list[dict[str, Any]] = []
        for earlier_id, raw in zip(last.chain, raws, strict=True):
            turn = None if raw is None else _read(raw, earlier_id)
            if turn is None:
                tell("broken")
                raise BrokenChain(earlier_id)
            earlier.extend(turn.items())
        tell("continued")
        return ResponseChain(last, earlier)

    def encoded(self, record: StoredResponse) -> bytes | None:
        """`record` as it is kept; None (logged, counted) when it is too large for the
        memory store or `max_key_bytes`. Asked apart before work that would be lost on a
        record that cannot be kept (a background request's routing)."""
        value = record.to_bytes()
        too_large = self._too_large(len(value))
        if too_large is None:
            return value
        log.warning(
            "responses: response %s (%d bytes) is larger than stored_responses.%s; not kept",
            record.id,
            len(value),
            too_large,
        )
        self._tell("too_large")
        return None

    async def put(
        self,
        owner: str,
        record: StoredResponse,
        *,
        counted: bool = True,
        wait: bool = False,
        value: bytes | None = None,
        over: bytes | None = None,
    ) -> bool:
        """Keep `record` and renew its chain's expiry (past `max_key_responses` or
        `max_key_bytes`, `owner`'s least recently written or continued response goes; a
        background response still running is pinned: neither goes for the bound nor counts
        in it, so that it is not lost before its answer is kept); False when it is too
        large for the memory store or `max_key_bytes`. `counted`: told to `on_outcome` (not
        a background response's status changing: it is counted once, when made). `wait`:
        asked of the store itself, past a pause after a failure (`asked`), and once more
        after a failure of its own (a background response's writes: its answer, or its
        end, is its run's one chance; one that landed all the same is read back:
        `_written`); an ``error`` is told once, when it gives up (the pause's refusal
        and the failures after it are one keeping that failed, not two). `value`:
        `record` `encoded` already. `over`: written only if the record still holds these
        bytes, in one step with the check (a background response's writes after its
        first, over it as it was running: one deleted, cancelled or ended meanwhile is
        left so); False then, told nothing."""
        data = self.encoded(record) if value is None else value
        if data is None:
            return False
        ttl_s = self.settings.ttl_s
        key, chain = self._key(owner, record.id), [self._key(owner, i) for i in record.chain]
        pinned = record.running

        async def write() -> bool | None:
            if self._cap is not None:
                listing = self._listing(owner)
                return await self._store.set_listed(
                    key, data, ttl_s, listing, chain, self._cap, pinned=pinned, over=over
                )
            if over is not None:
                if not await self._store.replace(key, data, ttl_s, over, pinned=pinned):
                    return None
            else:
                await (self._store.set_pinned if pinned else self._store.set)(key, data, ttl_s)
            await self._store.touch(chain, ttl_s)
            return True

        try:
            kept = await (self._written(write, key, data) if wait else write())
        except StoreUnavailable:
            self._tell("error")
            raise
        if kept is None:  # changed or deleted meanwhile: left so
            return False
        if not kept:  # refused by the store: not expected, its bounds are ours, checked first
            self._tell("too_large")
            return False
        if counted:
            self._tell("kept")
        return True

    async def put_ended(
        self, owner: str, record: StoredResponse, over: bytes, *, wait: bool = False
    ) -> StoredResponse | None:
        """Keep background response `record` ended (failed, cancelled) over its record as
        read running (`over`, as `put` says: None where it changed meanwhile); what was
        kept. One too large for the store (its error's message, or a bound lowered since
        it was first kept, or the smaller bound of another gateway ending it: each writer
        applies its own) is kept `trimmed`, or `bare` where even that is (its chain
        long): left running, it would read so until ``ttl_s``, its lease lapsing failing
        it only to find that too large too."""
        value = record.to_bytes()
        too_large = self._too_large(len(value))
        if too_large is not None:
            size, whole = len(value), record
            record, without = trimmed(whole), "its input and output"
            value = record.to_bytes()
            if self._too_large(len(value)) is not None:
                record, without = bare(whole), "its input, output and chain"
                value = record.to_bytes()
            log.warning(
                "responses: background response %s ended larger than stored_responses.%s "
                "(%d bytes); kept without %s",
                record.id,
                too_large,
                size,
                without,
            )
        kept = await self.put(owner, record, counted=False, wait=wait, value=value, over=over)
        return record if kept else None

    async def _written(
        self, write: Callable[[], Awaitable[bool | None]], key: str, data: bytes
    ) -> bool | None:
        """`write()` (of `data` at `key`) asked of the store itself (`asked`), and once
        more (past the pause it began) after a failure of its own. A write over a record
        (`over`) that landed though it failed (a timeout after Redis made it) finds the
        record changed then, by itself: read back holding `data`, it was kept (else a
        made answer was taken for cancelled: counted so, its conversation turn lost)."""
        try:
            return await asked(write)
        except StoreUnavailable as exc:
            if exc.paused_s:  # refused unasked to the end: the store was asked meanwhile
                raise
        kept = await asked(write)
        if kept is None and await asked(partial(self._store.get, key)) == data:
            return True
        return kept

    def _too_large(self, size: int) -> str | None:
        """The setting a record of `size` bytes is larger than; None when it fits."""
        if self.url == "memory" and size > self.settings.max_bytes:
            return "max_bytes"
        most = self.settings.max_key_bytes
        return "max_key_bytes" if most is not None and size > most else None

    def _listing(self, owner: str) -> str:
        """Where `owner`'s kept responses are listed, for `max_key_responses` and
        `max_key_bytes` to bound (under its prefix: forgotten with them)."""
        return self._key(owner, "listing\0")

    def _tell(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    async def delete(self, owner: str, response_id: str) -> bool:
        key = self._key(owner, response_id)
        if self._cap is None:
            return await self._store.delete(key)
        return await self._store.delete_listed(key, self._listing(owner))

    async def hold(self, owner: str, response_id: str) -> None:
        """Say for `settings.lease_s` more that a process is making background response
        `response_id` (renewed while it does; lapsed, the response was abandoned). Pinned
        as the running response is: evicted from a full memory store before it, the
        response would read as abandoned while still being made (`release` it after)."""
        await self._store.set_pinned(self._lease(owner, response_id), b"1", self.settings.lease_s)

    async def release(self, owner: str, response_id: str) -> None:
        """`hold` no more: the run has ended (its pinned lease would outlast it in memory)."""
        await self._store.delete(self._lease(owner, response_id))

    async def held(self, owner: str, response_id: str) -> bool:
        """Whether a process still says it is making `response_id` (`hold`)."""
        return await self._store.get(self._lease(owner, response_id)) is not None

    def _lease(self, owner: str, response_id: str) -> str:
        return self._key(owner, f"lease\0{response_id}")

    async def aclose(self) -> None:
        await self._store.aclose()


def _silent(outcome: str) -> None:
    """An outcome nobody is told."""


def _read(raw: bytes, response_id: str) -> StoredResponse | None:
    record = StoredResponse.from_bytes(raw)
    if record is None or record.id != response_id:
        log.warning("responses: the record of a response could not be read; ignored")
        return None
    return record


# what a trimmed record keeps of its response: the rest is the request's, echoed
_TRIMMED_KEEPS = (
    "id",
    "object",
    "created_at",
    "status",
    "background",
    "error",
    "incomplete_details",
    "model",
    "usage",
    "store",
    "previous_response_id",
    "conversation",
)
_TRIMMED = (
    "(the response was too large to keep whole: kept without its input, its output and "
    "the request fields it repeats)"
)


def trimmed(record: StoredResponse) -> StoredResponse:
    """An ended background response too large to keep, small enough to: its status,
    its error (its message saying why the rest is missing) and its place in its chain;
    not its input, its output, nor the request's fields it repeats."""
    kept = record.response
    response = {name: kept[name] for name in _TRIMMED_KEEPS if name in kept}
    response["output"] = []
    error = kept.get("error")
    if isinstance(error, dict):
        message = str(error.get("message") or "")[:1000]
        response["error"] = {"code": error.get("code"), "message": f"{message} {_TRIMMED}"}
    return StoredResponse(response, [], record.chain, record.streamed)


# what a bare record keeps: its status, and its error's start (each character may take
# 4 bytes: with the rest, well under the least max_key_bytes and max_bytes, 1024)
_BARE_KEEPS = ("id", "object", "created_at", "status", "background", "previous_response_id")
_BARE = (
    "(the response was too large to keep, even without its input and output: kept with "
    "its status only)"
)


def bare(record: StoredResponse) -> StoredResponse:
    """An ended background response too large to keep even `trimmed` (its chain long):
    its status and the start of its error, which says so; not its chain, so that
    continuing it is refused (`ResponseStore.chain`: its ``previous_response_id`` with
    no chain is a `BrokenChain`) rather than made without its earlier turns."""
    kept = record.response
    response = {name: kept[name] for name in _BARE_KEEPS if name in kept}
    response["output"] = []
    error = kept.get("error")
    if isinstance(error, dict):
        message = str(error.get("message") or "")[:100]
        response["error"] = {"code": error.get("code"), "message": f"{message} {_BARE}"}
    return StoredResponse(response, [], [], record.streamed)


def with_ids(items: Sequence[dict[str, Any]], response_id: str) -> list[dict[str, Any]]:
    """`items` each with an ``id`` (those that had none get one from `response_id`), as
    ``GET /v1/responses/{id}/input_items`` lists them."""
    stem = response_id.removeprefix("resp_")
    return [
        item if isinstance(item.get("id"), str) else {"id": f"item_{stem}_{i}", **item}
        for i, item in enumerate(items)
    ]
