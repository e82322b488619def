"""A chat-completions stream relayed as another API's event stream: the part the
Messages (`llmroute.server.messages_convert.StreamTranslator`) and Responses
(`llmroute.server.responses_stream.ResponsesStream`) fronts share. A subclass says what
one chunk becomes (`_chunk`) and how the stream ends (`close`)."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Any

__all__ = ["ChunkTranslator", "translated"]


class ChunkTranslator(ABC):
    _done = False  # set once the stream has ended (or failed): later chunks are ignored

    def feed(self, event: bytes) -> Iterator[bytes]:
        """The events for one SSE event of the chat stream, as the gateway relays it."""
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                yield from self.close()
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if isinstance(chunk, dict) and not self._done:
                yield from self._chunk(chunk)

    @abstractmethod
    def _chunk(self, chunk: dict[str, Any]) -> Iterator[bytes]: ...

    @abstractmethod
    def close(self) -> Iterator[bytes]:
        """The closing events, once (also when the stream stopped without ``[DONE]``)."""


async def translated(
    events: AsyncIterable[str | bytes | memoryview], translator: ChunkTranslator
) -> AsyncIterator[bytes]:
    """The chat stream `events` translated, closed at its end."""
    async for event in events:
        raw = event.encode() if isinstance(event, str) else bytes(event)
        for out in translator.feed(raw):
            yield out
    for out in translator.close():
        yield out
