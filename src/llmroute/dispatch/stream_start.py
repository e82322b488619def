"""When a stream has begun: not at its first event, which often says nothing yet.

OpenAI-style servers open a stream with a chunk that holds only the assistant's role
(Azure OpenAI with one whose choices are empty, carrying its prompt filter's results);
Anthropic's ``message_start`` becomes such a chunk; OpenRouter sends keep-alive comments.
An upstream that fails right after (Anthropic's ``overloaded_error`` event, an error
event in place of the first words) has then given the client nothing it could use, so
the request may still go to its fallback. `read_preamble` reads on past such events
before dispatch hands the stream over; the events it read are sent on as they came.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from llmroute.untrusted_json import loads

__all__ = ["MAX_PREAMBLE", "read_preamble", "says_nothing"]

MAX_PREAMBLE = 16  # events read past the first before a stream counts as begun anyway


def says_nothing(event: bytes) -> bool:
    """Whether a chat-completions event carries nothing for the client yet: comments,
    or chunks whose choices hold only a role and empty fields (or no choices and no
    usage). Anything unreadable counts as something."""
    for line in event.splitlines():
        if not line.startswith(b"data:"):
            continue
        try:
            data = loads(line[5:].strip())
        except (ValueError, UnicodeDecodeError):
            return False
        if not isinstance(data, dict) or data.get("usage") or data.get("error"):
            return False
        choices = data.get("choices")
        if not isinstance(choices, list) or not all(_empty(c) for c in choices):
            return False
    return True


def _empty(choice: Any) -> bool:
    if not isinstance(choice, Mapping) or choice.get("finish_reason") or choice.get("logprobs"):
        return False
    delta = choice.get("delta")
    return isinstance(delta, Mapping) and not any(v for k, v in delta.items() if k != "role")


async def read_preamble(
    first: bytes, events: AsyncIterator[bytes]
) -> tuple[bytes, AsyncIterator[bytes]]:
    """`first` and the rest of the stream, read on past the events that say nothing yet
    (`says_nothing`, at most `MAX_PREAMBLE`), so that an upstream failing before its
    first words raises here, while the call can still fall back. The events read are
    yielded again at the head of the stream returned."""
    held = [first]
    while len(held) <= MAX_PREAMBLE and says_nothing(held[-1]):
        try:
            held.append(await anext(events))
        except StopAsyncIteration:
            break
    if len(held) == 1:
        return first, events
    return first, _prepended(held[1:], events)


async def _prepended(held: list[bytes], events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        for event in held:
            yield event
        async for event in events:
            yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
