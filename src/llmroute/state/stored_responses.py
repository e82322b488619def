"""Responses kept for the Responses API front (registry ``responses``; docs/gateway.md).

A client of OpenAI's Responses API continues a conversation by naming the previous
response (``previous_response_id``) instead of sending the conversation again, and reads
or deletes a response by its id. For that the gateway keeps, per response, the response
object it answered, the input items of its request and the conversation before them:
one read gives a continuation its whole context, however long the chain.

Each record is reachable only with the client key that made it (the key's name is
hashed into the store key), and ids are 192 random bits. The text is kept verbatim, as
the client sent and received it: the next turn needs it so. The store is a
`KeyValueStore`: memory (this process, shared by every registry it loads, so a reload
forgets nothing) or Redis (every gateway).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from llmroute.registry.schema import Registry, ResponsesSettings
from llmroute.state.stores import KeyValueStore, MemoryStore, RedisStore, check_url

__all__ = ["ResponseStore", "StoredResponse", "new_response_id", "with_ids"]

log = logging.getLogger("llmroute.responses")

_VERSION = 1
_memory: dict[tuple[int, int], MemoryStore] = {}
_memory_lock = threading.Lock()


def new_response_id() -> str:
    """A fresh response id: unguessable, so an id is as good as a bearer of its record
    where no client keys are configured."""
    return f"resp_{secrets.token_hex(24)}"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One kept response: `response` as answered, the `input` items of its request
    (each with an ``id``) and the items of the conversation before them (`earlier`)."""

    response: dict[str, Any]
    input: list[dict[str, Any]]
    earlier: list[dict[str, Any]]

    @property
    def id(self) -> str:
        return str(self.response.get("id") or "")

    def context(self) -> list[dict[str, Any]]:
        """The conversation a continuation of this response carries on: what came
        before, this request's input and this response's output."""
        output = self.response.get("output")
        return [*self.earlier, *self.input, *(output if isinstance(output, list) else ())]

    def to_bytes(self) -> bytes:
        record = {
            "v": _VERSION,
            "response": self.response,
            "input": self.input,
            "earlier": self.earlier,
        }
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
        response, items = record.get("response"), record.get("input")
        earlier = record.get("earlier")
        if not (isinstance(response, dict) and _items(items) and _items(earlier)):
            return None
        return cls(response, items, earlier)


def _items(value: Any) -> TypeGuard[list[dict[str, Any]]]:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


class ResponseStore:
    """Keeps, finds and forgets responses, per client key (`owner`; ``""`` without
    keys). A store that does not answer raises `StoreUnavailable` (message without
    secrets) for the caller to turn into an error or a warning."""

    def __init__(self, settings: ResponsesSettings, store: KeyValueStore) -> None:
        self.settings = settings
        self._store = store
        self._prefix = f"{settings.namespace}:response:"

    @classmethod
    def open(cls, registry: Registry) -> ResponseStore | None:
        """The registry's response store, or None when it keeps none. Opening Redis
        does not connect."""
        settings = registry.responses
        if settings is None:
            return None
        if settings.url == "memory":
            store: KeyValueStore = _process_store(settings.max_entries, settings.max_bytes)
        else:
            check_url(settings.url, "responses.url")
            store = RedisStore(settings.url, settings.timeout_s)
        return cls(settings, store)

    @property
    def url(self) -> str:
        return self._store.url

    def _key(self, owner: str, response_id: str) -> str:
        digest = hashlib.sha256(f"{owner}\0{response_id}".encode()).hexdigest()[:40]
        return self._prefix + digest

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        raw = await self._store.get(self._key(owner, response_id))
        if raw is None:
            return None
        record = StoredResponse.from_bytes(raw)
        if record is None or record.id != response_id:
            log.warning("responses: the record of a response could not be read; ignored")
            return None
        return record

    async def put(self, owner: str, record: StoredResponse) -> None:
        await self._store.set(self._key(owner, record.id), record.to_bytes(), self.settings.ttl_s)

    async def delete(self, owner: str, response_id: str) -> bool:
        return await self._store.delete(self._key(owner, response_id))

    async def aclose(self) -> None:
        await self._store.aclose()


def _process_store(max_entries: int, max_bytes: int) -> MemoryStore:
    """This process's responses (one store per size), kept across registry reloads."""
    with _memory_lock:
        store = _memory.get((max_entries, max_bytes))
        if store is None:
            store = _memory[(max_entries, max_bytes)] = MemoryStore(max_entries, max_bytes)
        return store


def with_ids(items: Sequence[dict[str, Any]], response_id: str) -> list[dict[str, Any]]:
    """`items` each with an ``id`` (those that had none get one from `response_id`), as
    ``GET /v1/responses/{id}/input_items`` lists them."""
    stem = response_id.removeprefix("resp_")
    return [
        item if isinstance(item.get("id"), str) else {"id": f"item_{stem}_{i}", **item}
        for i, item in enumerate(items)
    ]
