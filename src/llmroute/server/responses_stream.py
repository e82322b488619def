"""OpenAI chat-completion chunks in, Responses API stream events out (``POST
/v1/responses`` with ``stream: true``).

The events follow OpenAI's order: ``response.created``, ``response.in_progress``; per
output item ``response.output_item.added``, then for the model's thinking (a
``reasoning`` item) ``response.content_part.added`` (``reasoning_text``),
``response.reasoning_text.delta``…, ``response.reasoning_text.done``,
``response.content_part.done`` (when the request asks for a summary,
``reasoning.summary``: ``response.reasoning_summary_part.added`` (``summary_text``),
``response.reasoning_summary_text.delta``…, ``response.reasoning_summary_text.done``,
``response.reasoning_summary_part.done``), for a message
``response.content_part.added``, ``response.output_text.delta``…,
``response.output_text.done``, ``response.content_part.done`` (for an OpenAI model's
refusal, a ``refusal`` part: ``response.refusal.delta``…, ``response.refusal.done``),
and for a function call
``response.function_call_arguments.delta``…, ``response.function_call_arguments.done``
(for a custom tool ``response.custom_tool_call_input.delta`` and ``.done``, its input
whole at the item's end: it arrives inside JSON arguments);
``response.output_item.done`` (a reasoning item's carries the signed thinking blocks,
joined from their streamed pieces, in ``encrypted_content``); finally
``response.completed`` (``response.incomplete`` when the answer was cut by
``max_output_tokens``) with the whole response. An upstream that breaks off mid-stream
ends it with ``response.failed``. Every event carries its ``sequence_number``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

from llmroute.server.chunk_translation import ChunkTranslator
from llmroute.server.responses_convert import (
    INCOMPLETE_REASONS,
    call_item,
    custom_input,
    custom_tools,
    echoed,
    response_usage,
)
from llmroute.server.responses_reasoning import reasoning_item, wants_summary

__all__ = ["ResponsesStream", "responses_event"]


def responses_event(kind: str, data: dict[str, Any]) -> bytes:
    """One event of a Responses stream: its ``event:`` line, then its JSON."""
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


class ResponsesStream(ChunkTranslator):
    """Feed each SSE event of the chat stream (bytes, as the gateway relays them) to
    `feed`; `close` finishes the response if the stream stopped without ``[DONE]``."""

    def __init__(
        self,
        model: str,
        body: dict[str, Any],
        response_id: str | None = None,
        stored: bool = False,
        created_at: int | None = None,
    ) -> None:
        """`response_id` names the response (``resp_`` and the chat stream's id when
        None); `stored` is what it says of ``store``; `created_at` when it was made (now
        when None: the gateway's time, not the upstream's)."""
        self._model = model
        self._body = body
        self._sequence = 0
        self._given_id = response_id
        self._stored = stored
        self._id = ""  # what item ids are made from
        # the whole response, once it completed (or failed: the stream broke off)
        self.final: dict[str, Any] | None = None
        self._final_event: tuple[str, int] = ("", 0)  # its event's kind and number
        self._created = created_at or int(time.time())
        self._started = False
        self._done = False
        self._items: list[dict[str, Any]] = []  # output items, in order
        self._text_item: int | None = None  # the open message item's position
        self._parts: dict[str, int] = {}  # its parts, by type: their index in its content
        self._refused: list[str] = []  # its refusal's pieces
        self._calls: dict[int, int] = {}  # chat tool-call index -> item position
        # deltas kept as pieces, joined when their item is done (no quadratic appends)
        self._pieces: dict[int, list[str]] = {}  # item position -> text or arguments
        self._custom = custom_tools(body)  # their calls stream as custom_tool_call items
        self._thought_item: int | None = None  # the open reasoning item's position
        self._thought: list[str] = []  # its reasoning text's pieces
        self._blocks: list[dict[str, Any]] = []  # its thinking blocks, each whole
        self._signing: list[str] = []  # the text of the thinking block being streamed
        self._summary = wants_summary(body)  # the thinking said as the item's summary
        self._finish: str | None = None
        self._usage: dict[str, Any] = response_usage(None)

    # -- events ---------------------------------------------------------------------------

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **payload}
        self._sequence += 1
        return responses_event(kind, data)

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        reason = INCOMPLETE_REASONS.get(self._finish or "stop") if status != "in_progress" else None
        if status != "in_progress":  # the model that answered, after a late fallback too
            self._model = self._serving(self._model)
        return {
            "id": self._given_id or f"resp_{self._id}",
            "object": "response",
            "created_at": self._created,
            "completed_at": int(time.time()) if status == "completed" and not reason else None,
            "status": "incomplete" if reason else status,
            "incomplete_details": {"reason": reason} if reason else None,
            "error": None,
            "model": self._model,
            "output": self._items if status != "in_progress" else [],
            "usage": self._usage if status != "in_progress" else None,
            **echoed(self._body, self._stored),
            **extra,
        }

    # -- input ----------------------------------------------------------------------------

    def _chunk(self, chunk: dict[str, Any]) -> Iterator[bytes]:
        yield from self._start(chunk)
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            message = str(error.get("message") or "the upstream stream broke off")
            self._keep_partial()
            failed = self._response("failed", error={"code": "server_error", "message": message})
            failed["status"], failed["incomplete_details"] = "failed", None
            self.final, self._final_event = failed, ("response.failed", self._sequence)
            yield self._event("response.failed", {"response": failed})
            self._done = True
            return
        if isinstance(chunk.get("usage"), dict):
            self._usage = response_usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice["index"] != 0:  # a registry's ``n``: the response is choice 0's
                continue
            delta = choice.get("delta") or {}
            thinking, pieces = delta.get("reasoning_content"), delta.get("thinking_blocks")
            if thinking or pieces:  # a cleaned chunk's: a string, a list
                yield from self._reasoning(thinking, pieces)
            text = delta.get("content")
            if isinstance(text, str) and text:
                yield from self._close_reasoning()
                yield from self._text(text)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                yield from self._close_reasoning()
                yield from self._refusal(refusal)
            for call in delta.get("tool_calls") or ():
                yield from self._call(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    def announce(self) -> list[bytes]:
        """``response.created`` and ``response.in_progress`` now, before the first chunk
        (a background stream says them as soon as it is asked for)."""
        return list(self._start({}))

    def serving(self, model: str) -> None:
        """Name `model` (the pool model that answers) in the responses from now on."""
        self._model = model

    def _start(self, chunk: dict[str, Any]) -> Iterator[bytes]:
        if self._started:
            return
        self._started = True
        given = self._given_id
        self._id = given.removeprefix("resp_") if given else str(chunk.get("id") or uuid4().hex)
        yield self._event("response.created", {"response": self._response("in_progress")})
        yield self._event("response.in_progress", {"response": self._response("in_progress")})

    # -- a reasoning item -----------------------------------------------------------------

    def _reasoning(self, text: Any, pieces: Any) -> Iterator[bytes]:
        """A piece of the model's thinking: its text (``reasoning_content``), and the
        pieces of its thinking blocks as LiteLLM streams them (a block's text, then its
        signature, which ends it; a redacted block whole)."""
        if self._thought_item is None:
            yield from self._close_text()
            self._thought_item = len(self._items)
            item = reasoning_item(f"rs_{self._id}_{self._thought_item}", "", [], "in_progress")
            self._items.append(item)
            added = {"output_index": self._thought_item, "item": dict(item)}
            yield self._event("response.output_item.added", added)
        for piece in pieces if isinstance(pieces, list) else ():
            self._block_piece(piece)
        if not isinstance(text, str) or not text:
            return
        if self._summary:
            if not self._thought:
                part = {"type": "summary_text", "text": ""}
                added = self._summary_at(part=part)
                yield self._event("response.reasoning_summary_part.added", added)
            self._thought.append(text)
            delta = self._summary_at(delta=text)
            yield self._event("response.reasoning_summary_text.delta", delta)
            return
        if not self._thought:
            part = {"type": "reasoning_text", "text": ""}
            yield self._event("response.content_part.added", self._thought_at(part=part))
        self._thought.append(text)
        yield self._event("response.reasoning_text.delta", self._thought_at(delta=text))

    def _block_piece(self, piece: Any) -> None:
        if not isinstance(piece, dict):
            return
        if piece.get("type") == "redacted_thinking":
            self._blocks.append(piece)
            return
        if isinstance(piece.get("thinking"), str):
            self._signing.append(piece["thinking"])
        if piece.get("signature"):
            signed = {"type": "thinking", "thinking": "".join(self._signing)}
            self._blocks.append({**signed, "signature": piece["signature"]})
            self._signing = []

    def _thought_at(self, **payload: Any) -> dict[str, Any]:
        assert self._thought_item is not None
        return {
            "item_id": self._items[self._thought_item]["id"],
            "output_index": self._thought_item,
            "content_index": 0,
            **payload,
        }

    def _summary_at(self, **payload: Any) -> dict[str, Any]:
        assert self._thought_item is not None
        return {
            "item_id": self._items[self._thought_item]["id"],
            "output_index": self._thought_item,
            "summary_index": 0,
            **payload,
        }

    def _close_reasoning(self) -> Iterator[bytes]:
        if self._thought_item is None:
            return
        position, text = self._thought_item, "".join(self._thought)
        # the answer's cut fell in it when nothing came after it
        cut = INCOMPLETE_REASONS.get(self._finish or "stop") and position == len(self._items) - 1
        status = "incomplete" if cut else "completed"
        item_id = self._items[position]["id"]
        item = reasoning_item(item_id, text, self._blocks, status, summary=self._summary)
        self._items[position] = item
        if text and self._summary:
            yield self._event("response.reasoning_summary_text.done", self._summary_at(text=text))
            part = item["summary"][0]
            yield self._event("response.reasoning_summary_part.done", self._summary_at(part=part))
        elif text:
            yield self._event("response.reasoning_text.done", self._thought_at(text=text))
            part = item["content"][0]
            yield self._event("response.content_part.done", self._thought_at(part=part))
        yield self._event("response.output_item.done", {"output_index": position, "item": item})
        self._thought_item, self._thought, self._blocks, self._signing = None, [], [], []

    # -- a message item -------------------------------------------------------------------

    def _message(self) -> Iterator[bytes]:
        """The message item opened, unless it is."""
        if self._text_item is not None:
            return
        self._text_item = len(self._items)
        item: dict[str, Any] = {
            "type": "message",
            "id": f"msg_{self._id}_{self._text_item}",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self._items.append(item)
        yield self._event(
            "response.output_item.added", {"output_index": self._text_item, "item": item}
        )

    def _part(self, kind: str) -> Iterator[bytes]:
        """The open message's part of `kind` (``output_text``, ``refusal``) opened,
        unless it is."""
        if kind in self._parts:
            return
        assert self._text_item is not None
        content = self._items[self._text_item]["content"]
        index = self._parts[kind] = len(content)
        part: dict[str, Any] = (
            {"type": "output_text", "text": "", "annotations": []}
            if kind == "output_text"
            else {"type": "refusal", "refusal": ""}
        )
        yield self._event("response.content_part.added", self._at(index, part=dict(part)))
        content.append(part)

    def _text(self, text: str) -> Iterator[bytes]:
        yield from self._message()
        yield from self._part("output_text")
        assert self._text_item is not None
        self._pieces.setdefault(self._text_item, []).append(text)
        at = self._at(self._parts["output_text"], delta=text, logprobs=[])
        yield self._event("response.output_text.delta", at)

    def _refusal(self, text: str) -> Iterator[bytes]:
        """An OpenAI model's refusal, as a ``refusal`` part of the message."""
        yield from self._message()
        yield from self._part("refusal")
        self._refused.append(text)
        yield self._event("response.refusal.delta", self._at(self._parts["refusal"], delta=text))

    def _at(self, content_index: int, **payload: Any) -> dict[str, Any]:
        assert self._text_item is not None
        item = self._items[self._text_item]
        return {
            "item_id": item["id"],
            "output_index": self._text_item,
            "content_index": content_index,
            **payload,
        }

    def _close_text(self) -> Iterator[bytes]:
        if self._text_item is None:
            return
        item = self._items[self._text_item]
        for kind, index in self._parts.items():  # in the order they opened
            part = item["content"][index]
            if kind == "output_text":
                part["text"] = "".join(self._pieces.pop(self._text_item, ()))
                at = self._at(index, text=part["text"], logprobs=[])
                yield self._event("response.output_text.done", at)
            else:
                part["refusal"] = "".join(self._refused)
                yield self._event("response.refusal.done", self._at(index, refusal=part["refusal"]))
            yield self._event("response.content_part.done", self._at(index, part=part))
        # a message the answer's cut fell in (closed by the end, the finish reason known)
        cut = INCOMPLETE_REASONS.get(self._finish or "stop") is not None
        item["status"] = "incomplete" if cut else "completed"
        yield self._event(
            "response.output_item.done", {"output_index": self._text_item, "item": item}
        )
        self._text_item, self._parts, self._refused = None, {}, []

    def _keep_partial(self) -> None:
        """The output that had come before the stream broke, written into its items
        (``incomplete``), so a failed response keeps it as the docs and OpenAI do."""
        if self._thought_item is not None:  # its events are not sent: the stream ends
            position = self._thought_item
            thinking = "".join(self._thought)
            self._items[position] = reasoning_item(
                self._items[position]["id"],
                thinking,
                self._blocks,
                "incomplete",
                summary=self._summary,
            )
        if self._text_item is not None and "refusal" in self._parts:
            item = self._items[self._text_item]
            item["content"][self._parts["refusal"]]["refusal"] = "".join(self._refused)
            item["status"] = "incomplete"
        for position, pieces in self._pieces.items():
            item = self._items[position]
            joined = "".join(pieces)
            if item["type"] == "message":
                item["content"][self._parts["output_text"]]["text"] = joined
            elif item["type"] == "custom_tool_call":
                item["input"] = custom_input(joined)
            else:
                item["arguments"] = joined
            item["status"] = "incomplete"
        self._pieces = {}

    # -- function-call items --------------------------------------------------------------

    def _call(self, call: dict[str, Any]) -> Iterator[bytes]:
        index = call.get("index", 0)
        function = call.get("function") or {}
        position = self._calls.get(index)
        if position is None:
            yield from self._close_reasoning()
            yield from self._close_text()
            position = self._calls[index] = len(self._items)
            call_id = call.get("id") or f"call_{self._id}_{index}"
            item = call_item(call_id, function.get("name") or "", "", self._custom)
            item["status"] = "in_progress"
            self._items.append(item)
            yield self._event(
                "response.output_item.added", {"output_index": position, "item": dict(item)}
            )
        item = self._items[position]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self._pieces.setdefault(position, []).append(arguments)
            if item["type"] == "custom_tool_call":
                return  # its input is inside the JSON arguments: sent whole at the end
            yield self._event(
                "response.function_call_arguments.delta",
                {"item_id": item["id"], "output_index": position, "delta": arguments},
            )

    def _close_calls(self) -> Iterator[bytes]:
        for position in self._calls.values():
            item = self._items[position]
            arguments = "".join(self._pieces.pop(position, ()))
            at = {"item_id": item["id"], "output_index": position}
            if item["type"] == "custom_tool_call":
                item["input"] = custom_input(arguments)
                delta = {**at, "delta": item["input"]}
                yield self._event("response.custom_tool_call_input.delta", delta)
                done = {**at, "input": item["input"]}
                yield self._event("response.custom_tool_call_input.done", done)
            else:
                item["arguments"] = arguments
                done = {**at, "arguments": arguments}
                yield self._event("response.function_call_arguments.done", done)
            item["status"] = "completed"
            yield self._event("response.output_item.done", {"output_index": position, "item": item})
        self._calls = {}

    # -- the end --------------------------------------------------------------------------

    def close(self) -> Iterator[bytes]:
        if self._done:
            return
        yield from self._start({})
        yield from self._close_reasoning()
        yield from self._close_text()
        yield from self._close_calls()
        self._done = True
        final = self.final = self._response("completed")
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        self._final_event = (kind, self._sequence)
        yield self._event(kind, {"response": final})

    def final_event(self) -> bytes:
        """The closing event again, as `final` now says (``store`` turned false when the
        response could not be kept after all)."""
        kind, number = self._final_event
        data = {"type": kind, "sequence_number": number, "response": self.final}
        return responses_event(kind, data)

    def failed_event(self, response: dict[str, Any]) -> bytes:
        """The closing event again, as ``response.failed`` with `response` (a background
        response kept failed instead: its stream says what a poll reads)."""
        self.final, self._final_event = response, ("response.failed", self._final_event[1])
        return self.final_event()
