"""A fake Anthropic Messages API: a real HTTP server on 127.0.0.1 in a thread.

It records every request and answers ``POST /v1/messages`` the way the real API does
(and ``GET /v1/models`` with `FakeAnthropic.listed`):
a ``message`` object, or with ``stream: true`` the event sequence message_start,
content_block_start/delta/stop per block (with a ping), message_delta (stop_reason and
cumulative usage), message_stop. The reply echoes the last user text; when the request
has tools (and tool_choice is not none) it also calls the first tool with
``{"query": <last user text>}``, the JSON streamed in pieces as input_json_delta.

Faults and variants are chosen by the model name, ``NAME?k=v&...``:

- ``status=429|400|500|529...`` answer with that status and Anthropic's error body
  (``retry_after=S`` adds ``Retry-After: S``; ``quote=1``: its message quotes the last
  user text, as a validation error may); ``context=1`` answers 400 "prompt is too
  long"; ``echo_key=1`` answers 400 with the received x-api-key in its message;
- ``reset=1`` closes the connection without an answer; ``mid=1`` breaks a stream after
  its first text delta; ``error_event=1`` sends an ``overloaded_error`` event mid-stream;
  ``early_error=1`` sends it after message_start and a ping, before any content (either
  with an error type for its value, ``early_error=rate_limit_error``, sends that type,
  and ``credit`` the ``invalid_request_error`` of an account out of credit);
  ``credit=1`` answers the 400 of an account whose credit balance is too low;
  ``truncate=1`` ends a stream cleanly after its first text delta (no message_stop);
  ``hold=1`` holds a stream's body open after its message_stop until its reader hangs
  up, which ``released`` records, or 60 s pass (a proxy that keeps the response open);
  ``lag=S`` ends a stream's body S seconds after its message_stop (the end in a later
  packet, as over a network);
- ``stop=max_tokens|stop_sequence|refusal|...`` sets the stop_reason; ``thinking=1``
  puts a thinking block first (as a request with ``thinking: {type: enabled}`` does),
  ``redacted=1`` a ``redacted_thinking`` block after it;
- ``adaptive_only=1`` answers ``thinking: {type: enabled}`` with the 400 Claude Opus 4.7
  gives it, ``budget_only=1`` answers ``{type: adaptive}`` (and ``output_config.effort``)
  with the 400 of a model without adaptive thinking (Sonnet 4.5 and earlier), each in
  Anthropic's words; ``cap=N`` answers a ``max_tokens`` above N with Anthropic's 400
  ("... which is the maximum allowed number of output tokens for ...").

Thinking is checked as the real API checks it, with its error text: with thinking on
(enabled or adaptive) a ``temperature`` other than 1, any ``top_k`` and a ``top_p``
below 0.95 are refused, and a budget below 1024 or not below ``max_tokens`` (which every
request must carry); every ``thinking``
block sent back must hold the signature the fake gave its text for that model (`sign`;
another model's fails), every
``redacted_thinking`` block the fake's data. Manual thinking (``{type: enabled}``) is
refused beside a forced tool choice, and in a tool loop (the last user turn holds tool
results) whose first assistant message — a loop is one assistant turn, which runs back
to the last user message without tool results — does not start with a thinking block.
Adaptive thinking (under which this fake always thinks, as the real model may not) is
taken with either, as the API documents: the model may have chosen not to think.
Without thinking, a thinking block in the final assistant turn (a prefill, or the tool
loop's assistant messages) is refused.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from fake_upstream import hung_up_within, serve_in_thread

USAGE = {
    "input_tokens": 10,
    "cache_creation_input_tokens": 2,
    "cache_read_input_tokens": 3,
    "output_tokens": 7,
}
MESSAGE_ID = "msg_01FakeAnthropic"
THOUGHT = "Let me think."
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4a"  # opaque, as Anthropic's encrypted thinking
TOOL_ID = "toolu_01FakeTool"


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    port: int = 0  # the client's: one per connection, so reused ones show


@dataclass
class FakeAnthropic:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    listed: tuple[str, ...] = ()  # what ``GET /v1/models`` lists
    released: list[str] = field(default_factory=list)  # ``hold=1`` streams let go

    @property
    def last(self) -> Recorded:
        return self.requests[-1]


def faults_of(model: str) -> dict[str, str]:
    _, _, query = model.partition("?")
    return {k: v[-1] for k, v in parse_qs(query).items()}


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            return content
        texts = [b["text"] for b in content if b.get("type") == "text"]
        if texts:
            return texts[-1]
    return ""


def sign(thinking: str, model: str = "claude-x") -> str:
    """The fake's signature of a thinking text by a model (base64, as Anthropic's are;
    another model's, as Anthropic's, does not pass)."""
    named = f"{model.partition('?')[0]}\n{thinking}"
    return base64.b64encode(hashlib.sha256(named.encode()).digest()).decode()


def _thinks(body: dict[str, Any], faults: dict[str, str]) -> bool:
    return "thinking" in faults or _thinking_on(body)


def _thinking_on(body: dict[str, Any]) -> bool:
    """Thinking asked for: a budget, or adaptive (which this fake always uses, as the
    real model may)."""
    return (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")


def reply_blocks(body: dict[str, Any], faults: dict[str, str]) -> list[dict[str, Any]]:
    """The content blocks of the reply to `body`."""
    text = _last_user_text(body)
    blocks: list[dict[str, Any]] = []
    if _thinks(body, faults):
        signature = sign(THOUGHT, str(body.get("model", "")))
        blocks.append({"type": "thinking", "thinking": THOUGHT, "signature": signature})
    if "redacted" in faults:
        blocks.append({"type": "redacted_thinking", "data": REDACTED})
    blocks.append({"type": "text", "text": f"echo: {text}"})
    tools = body.get("tools") or []
    if tools and (body.get("tool_choice") or {}).get("type") != "none":
        blocks.append(
            {"type": "tool_use", "id": TOOL_ID, "name": tools[0]["name"], "input": {"query": text}}
        )
    return blocks


def _stop_reason(blocks: list[dict[str, Any]], faults: dict[str, str]) -> str:
    if "stop" in faults:
        return faults["stop"]
    return "tool_use" if blocks[-1]["type"] == "tool_use" else "end_turn"


def _message(model: str, blocks: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
    return {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": "STOP" if stop == "stop_sequence" else None,
        "usage": USAGE,
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    """content_block_start, its deltas (text and JSON in pieces) and content_block_stop."""
    if block["type"] == "text":
        start = {"type": "text", "text": ""}
        words = block["text"].split(" ")
        pieces = [w + " " for w in words[:-1]] + [words[-1]]
        deltas = [{"type": "text_delta", "text": p} for p in pieces]
    elif block["type"] == "tool_use":
        start = {**block, "input": {}}
        raw = json.dumps(block["input"])
        deltas = [
            {"type": "input_json_delta", "partial_json": raw[i : i + 7]}
            for i in range(0, len(raw), 7)
        ]
        deltas.insert(0, {"type": "input_json_delta", "partial_json": ""})
    elif block["type"] == "redacted_thinking":
        start, deltas = block, []
    else:
        start = {"type": "thinking", "thinking": "", "signature": ""}
        half = len(block["thinking"]) // 2
        deltas = [
            {"type": "thinking_delta", "thinking": block["thinking"][:half]},
            {"type": "thinking_delta", "thinking": block["thinking"][half:]},
            {"type": "signature_delta", "signature": block["signature"]},
        ]
    events = [_event("content_block_start", {"index": index, "content_block": start})]
    events += [_event("content_block_delta", {"index": index, "delta": d}) for d in deltas]
    events.append(_event("content_block_stop", {"index": index}))
    return events


def stream_events(model: str, blocks: list[dict[str, Any]], stop: str) -> list[bytes]:
    """The whole SSE sequence of a streamed reply."""
    start = _message(model, [], None)
    start["usage"] = {**USAGE, "output_tokens": 1}
    events = [_event("message_start", {"message": start}), _event("ping", {})]
    for index, block in enumerate(blocks):
        events += _block_events(index, block)
    delta = {"stop_reason": stop, "stop_sequence": "STOP" if stop == "stop_sequence" else None}
    events.append(
        _event(
            "message_delta", {"delta": delta, "usage": {"output_tokens": USAGE["output_tokens"]}}
        )
    )
    events.append(_event("message_stop", {}))
    return events


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


# The API's 400 (or stream's error event) for an account whose prepaid credit is spent
CREDIT_TOO_LOW = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
    "Billing to upgrade or purchase credits."
)
# Anthropic's own messages for some error types (the others: "<type> from the fake")
_SAID = {
    "overloaded_error": "Overloaded",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
}


def event_error(kind: str) -> dict[str, Any]:
    """The ``error`` of an error event of `kind` (``1``: overloaded; ``credit``: the
    account out of credit)."""
    if kind == "credit":
        return _error("invalid_request_error", CREDIT_TOO_LOW)["error"]
    kind = "overloaded_error" if kind == "1" else kind
    return _error(kind, _SAID.get(kind, f"{kind} from the fake"))["error"]


_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


_THINKING_FIRST = (
    "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
    "`{found}`. When `thinking` is enabled, a final `assistant` message must start with a "
    "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). "
    "We recommend you include thinking blocks from previous turns. To avoid this "
    "requirement, disable `thinking`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


_FORCED = "Thinking may not be enabled when tool_choice forces tool use."


def _holds_results(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return message.get("role") == "user" and any(
        isinstance(b, dict) and b.get("type") == "tool_result"
        for b in (content if isinstance(content, list) else ())
    )


_THOUGHT_WITHOUT_THINKING = (
    "messages.{i}.content.{j}: When thinking is disabled, an `assistant` message in the "
    "final position cannot contain `thinking`. To use thinking blocks, enable `thinking` "
    "in your request."
)


def _final_turn(messages: list[dict[str, Any]]) -> list[int]:
    """The indices of the final assistant turn's messages: a prefill, or the assistant
    messages of the tool loop in progress (back to the last user message without tool
    results), newest first."""
    i = len(messages) - 1
    if messages[i]["role"] == "assistant":
        return [i]
    found: list[int] = []
    while i >= 0 and (messages[i]["role"] == "assistant" or _holds_results(messages[i])):
        if messages[i]["role"] == "assistant":
            found.append(i)
        i -= 1
    return found


def _thought_in_final_turn(messages: list[dict[str, Any]]) -> str | None:
    """Without thinking: the refusal of a thinking block in the final assistant turn."""
    for i in _final_turn(messages):
        content = messages[i].get("content")
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if block.get("type") in ("thinking", "redacted_thinking"):
                return _THOUGHT_WITHOUT_THINKING.format(i=i, j=j)
    return None


_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


def _params_refusal(body: dict[str, Any]) -> str | None:
    """Anthropic's 400 for sampling parameters that thinking (enabled or adaptive) does
    not take, and for a budget the API refuses: below 1024, or not below ``max_tokens``
    (each in the API's words)."""
    thinking = body.get("thinking") or {}
    kind = thinking.get("type")
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if body["max_tokens"] <= budget:
            return (
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult "
                f"our documentation at {_DOCS}#max-tokens-and-context-window-size"
            )
    if kind not in ("enabled", "adaptive"):
        return None
    if body.get("temperature", 1) != 1:
        return f"`temperature` may only be set to 1 when thinking is enabled. See {_DOCS}"
    if "top_k" in body:
        return f"`top_k` must be unset when thinking is enabled. See {_DOCS}"
    if body.get("top_p", 1) < 0.95:
        return (
            "`top_p` must be greater than or equal to 0.95 or unset when thinking is "
            f"enabled. See {_DOCS}"
        )
    return None


def thinking_refusal(body: dict[str, Any]) -> str | None:
    """Anthropic's 400 message for the thinking of `body` (its parameters, the thinking
    blocks it carries), if it refuses it."""
    refused = _params_refusal(body)
    if refused is not None:
        return refused
    messages = body.get("messages") or []
    for i, message in enumerate(messages):
        content = message.get("content")
        for j, block in enumerate(content if isinstance(content, list) else ()):
            signature = sign(block.get("thinking", ""), str(body.get("model", "")))
            if block.get("type") == "thinking" and block.get("signature") != signature:
                return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
            if block.get("type") == "redacted_thinking" and block.get("data") != REDACTED:
                return f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block"
    kind = (body.get("thinking") or {}).get("type")
    if not messages or kind == "adaptive":
        return None
    if kind != "enabled":
        return _thought_in_final_turn(messages)
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        return _FORCED
    loop = _final_turn(messages) if _holds_results(messages[-1]) else []
    if not loop:
        return None
    i = loop[-1]  # the loop's first assistant message
    content = messages[i]["content"]
    first = content[0].get("type") if isinstance(content, list) and content else "text"
    if first in ("thinking", "redacted_thinking"):
        return None
    return _THINKING_FIRST.format(i=i, found=first)


_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
_TOOL_ID_MAX = 64  # the longest tool id the fake takes (as llmroute assumes Anthropic's)


def _stop_refusal(body: dict[str, Any]) -> str | None:
    """The API's 400 for a stop sequence that is empty or only whitespace (OpenAI takes
    ``stop: ["\\n"]``), or for a message whose text blocks are all empty or whitespace
    (OpenAI takes an assistant's ``"\\n"``)."""
    stops = body.get("stop_sequences") or []
    if any(isinstance(stop, str) and not stop.strip() for stop in stops):
        return "stop_sequences: each stop sequence must contain non-whitespace"
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content or []:
            said = block.get("id", block.get("tool_use_id")) if isinstance(block, dict) else None
            if said is not None and not _TOOL_ID.fullmatch(str(said)):
                return "messages: tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
            if said is not None and len(str(said)) > _TOOL_ID_MAX:
                return (
                    f"messages: tool_use.id: String should have at most {_TOOL_ID_MAX} characters"
                )
        texts = [
            b.get("text") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"
        ]
        if any(text == "" for text in texts):
            return "messages: text content blocks must be non-empty"
        if texts and not any(isinstance(t, str) and t.strip() for t in texts):
            return "messages: text content blocks must contain non-whitespace text"
    return None


def quoting(faults: dict[str, str], body: dict[str, Any]) -> str:
    """What a ``quote=1`` error message ends with: the last user text, quoted."""
    return f": {_last_user_text(body)!r}" if "quote" in faults else ""


def _fault_reply(
    faults: dict[str, str], headers: dict[str, str], body: dict[str, Any]
) -> tuple[int, dict[str, Any], dict[str, str]] | None:
    """The error answer (status, body, extra headers) the faults ask for, if any."""
    if "context" in faults:
        message = "prompt is too long: 208721 tokens > 200000 maximum"
        return 400, _error("invalid_request_error", message), {}
    if "credit" in faults:
        return 400, _error("invalid_request_error", CREDIT_TOO_LOW), {}
    if "echo_key" in faults:
        message = f"invalid value in request made with key {headers.get('x-api-key')}"
        return 400, _error("invalid_request_error", message), {}
    if "status" in faults:
        status = int(faults["status"])
        extra = {"retry-after": faults["retry_after"]} if "retry_after" in faults else {}
        kind = _KINDS.get(status, "api_error")
        message = _SAID.get(kind, f"{kind} from the fake") + quoting(faults, body)
        return status, _error(kind, message), extra
    return None


# Anthropic's own messages: Opus 4.7's as reported in github.com/freecodexyz/free-code
# issue 32 (and for claude-sonnet-5 in MemberJunction's docs, UsesAdaptiveThinking), an
# older model's in github.com/anthropics/claude-code issue 51212
_ENABLED_REFUSED = (
    '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" '
    'and "output_config.effort" to control thinking behavior.'
)
_ADAPTIVE_REFUSED = "adaptive thinking is not supported on this model"
# and Sonnet 4.5's to output_config.effort, as reported in github.com/can1357/oh-my-pi
# issue 3497
_EFFORT_REFUSED = "This model does not support the effort parameter."


def _thinking_refusal(faults: dict[str, str], body: dict[str, Any]) -> dict[str, Any] | None:
    kind = (body.get("thinking") or {}).get("type")
    if "adaptive_only" in faults and kind == "enabled":
        return _error("invalid_request_error", _ENABLED_REFUSED)
    if "budget_only" in faults and kind == "adaptive":
        return _error("invalid_request_error", _ADAPTIVE_REFUSED)
    if "budget_only" in faults and (body.get("output_config") or {}).get("effort"):
        return _error("invalid_request_error", _EFFORT_REFUSED)
    if "cap" in faults and body.get("max_tokens", 0) > int(faults["cap"]):
        message = (
            f"max_tokens: {body['max_tokens']} > {faults['cap']}, which is the maximum allowed "
            f"number of output tokens for {body.get('model', '').partition('?')[0]}"
        )
        return _error("invalid_request_error", message)
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes
    upstream: FakeAnthropic  # set on the subclass each server gets

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def handle(self) -> None:
        # a client that hung up mid-stream (the tests of broken streams do) is no error
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.upstream.lock:
            self.upstream.requests.append(Recorded(self.path, headers, {}, self.client_address[1]))
        if self.path.partition("?")[0] != "/v1/models":
            self._send_json(404, _error("not_found_error", f"no route {self.path}"))
            return
        data = [{"type": "model", "id": m, "display_name": m} for m in self.upstream.listed]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        page = {"data": data, "has_more": False, "first_id": first, "last_id": last}
        self._send_json(200, page)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.upstream.lock:
            self.upstream.requests.append(
                Recorded(self.path, headers, body, self.client_address[1])
            )
        if self.path != "/v1/messages":
            self._send_json(404, _error("not_found_error", f"no route {self.path}"))
            return
        self.answer(body, headers)

    def answer(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Answer a Messages request as the API does (the faults its model names)."""
        model = str(body.get("model", ""))
        faults = faults_of(model)
        if "reset" in faults:
            self.close_connection = True  # no status line at all
            return
        fault = _fault_reply(faults, headers, body)
        if fault is not None:
            self._send_json(*fault)
            return
        refusal = _thinking_refusal(faults, body)
        if refusal is not None:
            self._send_json(400, refusal)
            return
        refused = thinking_refusal(body) or _stop_refusal(body)
        if refused is not None:
            self._send_json(400, _error("invalid_request_error", refused))
            return
        blocks = reply_blocks(body, faults)
        stop = _stop_reason(blocks, faults)
        if body.get("stream") is True:
            self._stream(stream_events(model, blocks, stop), faults, model)
        else:
            self._send_json(200, _message(model, blocks, stop))

    def _send_json(
        self, status: int, data: dict[str, Any], extra: dict[str, str] | None = None
    ) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.send_header("request-id", "req_fake")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _stream(self, events: list[bytes], faults: dict[str, str], model: str) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        if "mid" in faults or "error_event" in faults or "truncate" in faults:
            events = events[:4]  # message_start, ping, content_block_start, the first delta
        if "early_error" in faults:
            events = events[:2]  # message_start, ping
        for event in events:
            self._write_chunk(event)
        if "mid" in faults:
            self.close_connection = True  # chunked body cut off: a broken stream
            return
        if "error_event" in faults or "early_error" in faults:
            error = event_error(faults.get("error_event") or faults["early_error"])
            self._write_chunk(_event("error", {"error": error}))
        if "hold" in faults and hung_up_within(self.connection, 60.0):
            self.released(model)
            self.close_connection = True
            return
        if "lag" in faults:
            time.sleep(float(faults["lag"]))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def released(self, model: str) -> None:
        """A ``hold=1`` stream's reader hung up after its message_stop."""
        with self.upstream.lock:
            self.upstream.released.append(model)


@contextmanager
def fake_anthropic() -> Iterator[FakeAnthropic]:
    upstream = FakeAnthropic(url="")
    handler = type("Handler", (_Handler,), {"upstream": upstream})
    with serve_in_thread(handler) as url:
        upstream.url = url
        yield upstream
