"""A model's thinking as the Responses API's ``reasoning`` item, and back.

A chat answer's ``reasoning_content`` (the text) becomes the item's ``reasoning_text``
content, or its ``summary_text`` summary when the request asks for a summary
(``reasoning.summary``, as Codex does: OpenAI's own models give only summaries, and
Claude's thinking is a summary already); its signed ``thinking_blocks`` (Anthropic's,
which a tool loop's next turn must send back unchanged) travel in ``encrypted_content``
as an opaque string, the way OpenAI carries its own reasoning between stateless turns. A
``reasoning`` item given back whose ``encrypted_content`` is ours becomes the blocks
again; anything else (OpenAI's own encrypted reasoning, a summary-only item, junk) reads
as no blocks: it is dropped, as other models cannot read it back.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from llmroute.providers._anthropic_convert import thinking_block
from llmroute.untrusted_json import loads

__all__ = ["blocks_of", "encoded", "reasoning_item", "wants_summary"]

# marks the string as ours: OpenAI's own encrypted reasoning never starts with it
_PREFIX = "llmroute.thinking.v1."


def encoded(blocks: list[dict[str, Any]]) -> str:
    """`blocks` as an ``encrypted_content`` string (not secret: the chat answer gives
    the same blocks in the clear; opaque so clients pass it back as it is)."""
    raw = json.dumps(blocks, ensure_ascii=False, separators=(",", ":")).encode()
    return _PREFIX + base64.urlsafe_b64encode(raw).decode()


def blocks_of(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The thinking blocks an input ``reasoning`` item carries; [] where its
    ``encrypted_content`` is not ours or does not decode."""
    given = item.get("encrypted_content")
    if not isinstance(given, str) or not given.startswith(_PREFIX):
        return []
    try:
        decoded = loads(base64.urlsafe_b64decode(given[len(_PREFIX) :]).decode())
    except (ValueError, binascii.Error):  # UnicodeDecodeError is a ValueError
        return []
    if not isinstance(decoded, list):
        return []
    blocks = [thinking_block(block) for block in decoded]
    return [b for b in blocks if b is not None] if all(blocks) else []


_SUMMARIES = frozenset({"auto", "concise", "detailed"})


def wants_summary(body: dict[str, Any]) -> bool:
    """Whether a Responses request asks for its reasoning as a summary."""
    reasoning = body.get("reasoning")
    return isinstance(reasoning, dict) and reasoning.get("summary") in _SUMMARIES


def reasoning_item(
    item_id: str,
    text: str,
    blocks: list[dict[str, Any]],
    status: str = "completed",
    *,
    summary: bool = False,
) -> dict[str, Any]:
    """The ``reasoning`` output item for thinking `text` (its content, or its `summary`)
    and its sendable `blocks` (``encrypted_content`` null when there are none: an
    OpenAI-style model's ``reasoning_content`` cannot be sent back)."""
    kept = [b for b in map(thinking_block, blocks) if b is not None]
    said = [{"type": "summary_text" if summary else "reasoning_text", "text": text}] if text else []
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": said if summary else [],
        "content": [] if summary else said,
        "encrypted_content": encoded(kept) if kept else None,
        "status": status,
    }
