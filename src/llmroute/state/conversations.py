"""Conversations for the Responses API front (OpenAI's Conversations API), kept in the
same store and under the same rules as `llmroute.state.stored_responses`: per client
key, `ttl_s` after their last use, memory or Redis.

A conversation is four kinds of record: its object (id, creation time, metadata), the
list of its parts' ids, the parts, each a batch of items (what one ``POST …/items``
added, or one response's input and output), and the list of the items deleted from it.
Adding items writes a new part and appends its id to the list in one atomic step
(`KeyValueStore.append`), so two requests adding to one conversation at once both land,
in the order they finished; deleting an item appends its id to the deleted list the same
way, so no deletion is ever lost to another (its text is then also taken out of its
part). Reading gets the lists and then every part,
one round trip each.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmroute.state.stored_responses import ResponseStore
from llmroute.state.stores import asked

__all__ = ["Conversation", "ConversationStore", "new_conversation_id"]

_VERSION = 1
_PARTS = "#parts"  # the key suffix of a conversation's list of parts
_DELETED = "#deleted"  # the key suffix of the list of the items deleted from it


def new_conversation_id() -> str:
    return f"conv_{secrets.token_hex(24)}"


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation's object, as the API returns it."""

    id: str
    created_at: int
    metadata: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": self.metadata,
        }


class ConversationStore:
    """Conversations of each client key (`owner`), in `responses`' store. A store that
    does not answer raises `StoreUnavailable`."""

    def __init__(self, responses: ResponseStore) -> None:
        self._kv = responses.kv
        self._key = responses.key
        self._ttl_s = responses.settings.ttl_s

    async def create(
        self, owner: str, metadata: dict[str, str], items: Sequence[dict[str, Any]]
    ) -> Conversation:
        conversation = Conversation(new_conversation_id(), int(time.time()), metadata)
        await self._save(owner, conversation)
        if items:
            await self.add(owner, conversation.id, items)
        return conversation

    async def get(self, owner: str, conversation_id: str) -> Conversation | None:
        raw = await self._kv.get(self._key(owner, conversation_id))
        record = _loads(raw)
        if record is None or record.get("id") != conversation_id:
            return None
        metadata = record.get("metadata")
        return Conversation(
            conversation_id,
            int(record.get("created_at") or 0),
            metadata if isinstance(metadata, dict) else {},
        )

    async def update(self, owner: str, conversation: Conversation) -> None:
        await self._save(owner, conversation)
        await self._renew(owner, conversation.id, ())

    async def delete(self, owner: str, conversation_id: str) -> bool:
        parts = await self._parts(owner, conversation_id)
        for part in parts:
            await self._kv.delete(self._key(owner, part))
        for suffix in (_PARTS, _DELETED):
            await self._kv.delete(self._key(owner, conversation_id + suffix))
        return await self._kv.delete(self._key(owner, conversation_id))

    async def items(self, owner: str, conversation_id: str) -> list[dict[str, Any]]:
        """Every item, oldest first, but those deleted (a part gone missing is skipped)."""
        parts = await self._parts(owner, conversation_id)
        deleted = set(await self._list(owner, conversation_id + _DELETED))
        raws = await self._kv.get_many([self._key(owner, part) for part in parts])
        items: list[dict[str, Any]] = []
        for raw in raws:
            record = _loads(raw)
            batch = record.get("items") if record is not None else None
            if isinstance(batch, list):
                items.extend(
                    item
                    for item in batch
                    if isinstance(item, dict) and item.get("id") not in deleted
                )
        return items

    async def add(
        self,
        owner: str,
        conversation_id: str,
        items: Sequence[dict[str, Any]],
        *,
        wait: bool = False,
    ) -> None:
        """`items` (each with an ``id``) added at the end, as one part. `wait`: asked of
        the store itself, past a pause after a failure (`asked`); each try writes the
        same part, listed once however often its ``APPEND`` was made (`_list`), so a
        call refused after the ``APPEND`` does not add the items twice."""
        part = f"part_{secrets.token_hex(12)}"
        record = _dumps({"v": _VERSION, "items": list(items)})
        parts_key = self._key(owner, conversation_id + _PARTS)

        async def write() -> None:
            await self._kv.set(self._key(owner, part), record, self._ttl_s)
            await self._kv.append(parts_key, f"{part},".encode(), self._ttl_s)
            await self._renew(owner, conversation_id, await self._parts(owner, conversation_id))

        await (asked(write) if wait else write())

    async def delete_item(self, owner: str, conversation_id: str, item_id: str) -> bool:
        """Drop the item `item_id`; whether it was there."""
        if "," in item_id or all(
            i.get("id") != item_id for i in await self.items(owner, conversation_id)
        ):
            return False
        await self._kv.append(
            self._key(owner, conversation_id + _DELETED), f"{item_id},".encode(), self._ttl_s
        )
        await self._erase(owner, conversation_id, item_id)
        return True

    async def _erase(self, owner: str, conversation_id: str, item_id: str) -> None:
        """The deleted item's text taken out of its part too (a rewrite: one racing with
        another deletion in the same part may put the other's text back, still hidden by
        its entry in the deleted list, until the conversation goes)."""
        for part in await self._parts(owner, conversation_id):
            key = self._key(owner, part)
            record = _loads(await self._kv.get(key))
            batch = record.get("items") if record is not None else None
            if not isinstance(batch, list):
                continue
            kept = [i for i in batch if not (isinstance(i, dict) and i.get("id") == item_id)]
            if len(kept) != len(batch):
                await self._kv.set(key, _dumps({"v": _VERSION, "items": kept}), self._ttl_s)
                return

    async def _save(self, owner: str, conversation: Conversation) -> None:
        record = {"v": _VERSION, **conversation.to_json()}
        await self._kv.set(self._key(owner, conversation.id), _dumps(record), self._ttl_s)

    async def _parts(self, owner: str, conversation_id: str) -> list[str]:
        return await self._list(owner, conversation_id + _PARTS)

    async def _list(self, owner: str, name: str) -> list[str]:
        """The ids appended to list `name`, each once, where it first was."""
        raw = await self._kv.get(self._key(owner, name))
        return list(
            dict.fromkeys(p for p in (raw or b"").decode("utf-8", "replace").split(",") if p)
        )

    async def _renew(self, owner: str, conversation_id: str, parts: Sequence[str]) -> None:
        """Keep the conversation, its lists and its parts `ttl_s` from now."""
        keys = [conversation_id, conversation_id + _PARTS, conversation_id + _DELETED, *parts]
        await self._kv.touch([self._key(owner, k) for k in keys], self._ttl_s)


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def _loads(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("v") == _VERSION else None
