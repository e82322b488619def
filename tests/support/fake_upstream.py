"""A fake OpenAI-compatible upstream: a real HTTP server on 127.0.0.1 in a thread.

It records every request, answers ``/chat/completions`` with the model it was asked for
and the last user message (SSE chunks ending in ``data: [DONE]`` when ``stream`` is
true, with a usage chunk when ``stream_options.include_usage`` is), ``/completions``
(the legacy text API, for models that continue raw text: see `_text`), and
``/embeddings`` with small deterministic vectors, ``/rerank`` (`_rerank`); ``GET /models`` lists
`FakeUpstream.listed`.

Faults are chosen by the upstream model name, so a registry can point models at them:

- ``fail-500``, ``fail-close``, ``fail-400``, ``fail-mid``: the fixed faults below;
- ``NAME?k=v&...``: parameterised, any of
  ``status=500|429|400|503...`` answer with that status (``code=CODE``: its error's
  code, URL-encoded, as an upstream may send any string; ``code=json:VALUE``: that JSON,
  of any type); ``times=N`` only the first N
  requests for this model name fail, then it answers normally; ``quote=1`` its error
  message quotes the last user message, as a validation error may; ``retry_after=S`` send
  ``Retry-After: S``; ``delay=S`` wait S seconds before answering; ``ttft=S`` a stream
  waits S seconds before its first event; ``reset=1`` close the connection without an
  answer; ``mid=1`` a stream breaks after its first event; ``context=1`` answer 400
  ``context_length_exceeded``; ``filter=1`` answer Azure OpenAI's 400
  ``content_filter``; ``moderated=1`` answer OpenRouter's 403 for a prompt its
  moderation flagged; ``nousage=1`` leave ``usage`` out; ``deep=N`` answer 200
  with JSON nested N levels deep; ``inbody=CODE`` answer 200 with an error object whose
  code is CODE instead of the answer (OpenRouter's way once the model started; a stream:
  as its first event), with ``late=1`` a stream sends a word first, then OpenRouter's
  mid-stream error chunk (``finish_reason: error``), with ``early=1`` the error event
  comes right after the opening role-only chunk; ``inbody=old`` vLLM's older bare
  error object (``"object": "error"``, code 400); ``inbody=json:OBJECT`` that JSON as its
  error object; ``ping=1`` a stream opens with
  OpenRouter's keep-alive comment (``: OPENROUTER PROCESSING``) before anything else;
  ``truncate=1`` a stream ends cleanly after its first word, with no finish reason and
  no ``[DONE]`` (a proxy closing it midway); ``nostream=1`` answers a stream request
  with the whole completion as JSON (a server that does not stream); ``jsonlabel=1``
  streams its events labelled ``application/json``; ``loose=1`` writes a stream's events
  as looser, still valid server-sent events (an ``id:`` line, the JSON pretty-printed over
  several ``data:`` lines with no space after the colon, CRLF line ends, a ``: ping``
  comment before each), as some servers do; ``nullusage=1`` a stream asked for its
  usage writes ``"usage": null`` on each chunk before the usage chunk, as OpenAI does;
  ``huge=N`` a stream sends a word, then an
  event of N MiB that never ends; ``pause=S`` a stream waits S seconds after its opening
  role-only chunk (with ``early=1``: then fails, as a model that gave up thinking);
  ``shape=none|empty|bare`` answers (chat or text, not streamed) 200 with JSON that is
  no answer: no ``choices``, an empty list, or a choice with neither ``message`` nor
  ``text`` (``shape=nan``: a whole answer holding a NaN, which is not JSON);
  ``garbage=first|late`` a stream sends ``data: {not json`` and closes the connection,
  as its first event or after its opening and a word (``garbage=nan``: its first event
  holds a NaN, then it ends properly); a rerank with ``nan=1`` scores one document NaN;
``gzip=1`` sends a JSON answer gzip-compressed (``content-length`` the compressed size).

Answers can be scripted the same way (for cascade gates): ``reply=TEXT`` (URL-encoded)
answer TEXT instead of the echo; ``vary=1`` append `` #N`` to it, N counting this model
name's answers (choices); ``multi=1`` honour the request's ``n`` with that many
choices (a stream: as ``choices=N`` below); ``finish=REASON`` end with that finish
reason (``length``); ``p_yes=P`` when the request asks for ``logprobs``, send
first-token ``top_logprobs`` giving "yes" probability P and "no" 1-P;
``badlogprobs=huge|positive|notalist`` send malformed ones instead (a first token's
logprob of 1000 or of 0.5, ``top_logprobs: 5``), as a broken judge might;
``nologprobs=1`` answer 400 to a request asking for them;
``unsupported=A,B`` answer 400 ``unsupported_parameter`` (OpenAI's reasoning models'
error) to a request that sets parameter A or B; ``cap=N`` answer OpenAI's 400 to a
``max_tokens`` / ``max_completion_tokens`` above N ("max_tokens is too large");
``gap=S`` a stream waits S seconds before each word; ``stall=S`` after its first word;
``reasoning=TEXT`` answers with DeepSeek's ``reasoning_content`` TEXT (a stream: one
delta of it before the words);
``nodone=1`` a stream ends after its finish reason (and usage chunk) with no ``[DONE]``, as
some OpenAI-compatible servers do (``done=spaced``: its ``[DONE]`` written with a second
blank after ``data:``); ``after=reset|garbage`` a stream breaks once its
``[DONE]`` went out: its connection cut, or an event that is not JSON, then the cut
(``after=hold``: its body ends a second after its ``[DONE]``, ``after=lag`` a tenth of
one, as a network may deliver it; ``after=open``: its body is held open after its
``[DONE]`` until its reader hangs up, which ``released`` records, or 60 s pass, as a
proxy that keeps the response open; ``after=chunk``: a content chunk and a second
``[DONE]`` follow its ``[DONE]``, then its body's end);
``choices=N`` a stream says its answer as N choices, word by word in turn, each then
its finish reason (``cutchoice=1``: choice 0 finishes, choice 1 says one word more and
the body ends cleanly, with no ``[DONE]``: cut while choice 1 was still streaming;
``index=A,B``: the choices' ``index`` values, JSON, in place of 0 to N-1 (``1,2``,
``-1,"1"``); ``tools=1``: each choice a tool call, its arguments split across chunks,
the choices in turn, finished ``tool_calls`` (``calls=K``: each choice K calls, indexes
0 to K-1, their pieces interleaved, as an upstream streaming parallel calls at once may
send them; call j's arguments ``{"q": TEXT, "n": j}``; ``callindex=A,B``: the calls'
``index`` values, JSON, in place of 0 to K-1 (``0,-1``, ``0,"1"``, ``0,none``: no index
at all, as Gemini streams them)); ``bare=1``: chunks with no ``choices``
and with ``"choices": null`` among them);
``split=1`` a stream sends each character beyond the BMP (an emoji) as its two UTF-16
halves in two events, ``"\\ud83d"`` then ``"\\ude00"``, as a proxy slicing UTF-16
strings does;
``verbatim=1`` answers 400 to a body that is not the bytes ``json.dumps`` writes of what it
parses to (compact, UTF-8: the gateway's upstream bodies, docs/dispatch.md), and
otherwise replies ``sha256:HEX``, the digest of ``[messages, tools]`` so written (``tools``
null when left out), for a client to compare with its own;
``strict=1`` answers OpenAI's 400 to a message holding a field OpenAI does not know
(``thinking_blocks``, ``reasoning_content``: DeepSeek too refuses its own reasoning
sent back), a tool call id longer than its 40 characters, ``metadata`` sent without
``"store": true`` or other than string pairs (16 at most), or LiteLLM's ``tags``. A
stream whose reader hangs up is recorded in ``cut`` with the words it had sent, a
request whose client hangs up during its ``delay`` or ``ttft`` with 0.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import select
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

FAIL_500 = "fail-500"
FAIL_CLOSE = "fail-close"
FAIL_400 = "fail-400"
FAIL_MID = "fail-mid"  # a stream that sends one event, then drops the connection
_NO_INDEX = object()  # ``callindex=none``: a call streamed with no index


def _call_piece(index: Any, arguments: str) -> dict[str, Any]:
    """A tool call's piece at `index` (none for `_NO_INDEX`)."""
    call: dict[str, Any] = {"function": {"arguments": arguments}}
    return call if index is _NO_INDEX else {"index": index, **call}


_FIXED = {
    FAIL_500: {"status": "500"},
    FAIL_CLOSE: {"reset": "1"},
    FAIL_400: {"status": "400"},
    FAIL_MID: {"mid": "1"},
}


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = 0.0  # time.monotonic() on arrival
    port: int = 0  # the client's: one per connection, so reused ones show


@dataclass
class FakeUpstream:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # for ``vary``
    cut: list[tuple[str, int]] = field(default_factory=list)
    """(model, words sent) of each stream whose reader hung up before its end."""
    released: list[str] = field(default_factory=list)
    """The model of each ``after=open`` stream whose reader hung up after its ``[DONE]``."""
    listed: list[str] | None = None
    """What ``GET /models`` lists; None: it answers 404, as a server that lists nothing."""
    key: str | None = None
    """When set, ``GET /models`` answers 401 unless sent ``Authorization: Bearer KEY``."""
    listing_status: int | None = None
    """When set, ``GET /models`` answers this status with an error (501: a server that
    does not implement the listing; 500, 503: one whose listing fails)."""
    listing_body: tuple[str, bytes] | None = None
    """When set, ``GET /models`` answers 200 with this (content type, body): a catch-all
    page where the listing should be (HTML), JSON of another shape."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def models_called(self) -> list[str]:
        return [r.body.get("model", "") for r in self.requests]

    def calls_to(self, model: str) -> list[Recorded]:
        return [r for r in self.requests if r.body.get("model") == model]


class QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (timeouts, closed streams) are expected here: no
    tracebacks for them on stderr. Many may connect at once (socketserver's backlog of
    5 would leave the rest to retry their connection a second later)."""

    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def faults_of(model: str) -> dict[str, str]:
    if model in _FIXED:
        return dict(_FIXED[model])
    _, _, query = model.partition("?")
    return {k: v[-1] for k, v in parse_qs(query).items()}


def _reply_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    if not users:
        return "echo:"
    content = users[-1].get("content", "")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return f"echo: {content}"


def _usage() -> dict[str, int]:
    return {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


def _completion(
    model: str,
    text: str,
    usage: bool,
    *,
    texts: list[str] | None = None,
    finish: str = "stop",
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choices: list[dict[str, Any]] = [
        {
            "index": i,
            "message": {"role": "assistant", "content": t},
            "finish_reason": finish,
        }
        for i, t in enumerate(texts or [text])
    ]
    if logprobs is not None:
        choices[0]["logprobs"] = logprobs
    data: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": choices,
    }
    if usage:
        data["usage"] = _usage()
    return data


_SCRIPTED = (
    *("reply", "vary", "multi", "finish", "p_yes", "badlogprobs", "nologprobs", "unsupported"),
    *("gap", "stall", "cap"),
)


def _compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _not_verbatim(raw: bytes, body: dict[str, Any]) -> str:
    """What ``verbatim=1`` says of a body that is not `_compact`'s bytes."""
    written = _compact(body)
    at = next((i for i, (a, b) in enumerate(zip(raw, written, strict=False)) if a != b), None)
    at = min(len(raw), len(written)) if at is None else at
    return (
        f"body not as json.dumps writes it: {len(raw)} bytes for {len(written)}, "
        f"first difference at byte {at}"
    )


def _scripted_texts(
    upstream: FakeUpstream, model: str, body: dict[str, Any], faults: dict[str, str]
) -> list[str]:
    """The answer's choices: the echo, or ``reply``; ``n`` of them with ``multi``; each
    numbered with ``vary``."""
    base = faults.get("reply", _reply_text(body))
    if "verbatim" in faults:
        sent = [body.get("messages"), body.get("tools")]
        base = "sha256:" + hashlib.sha256(_compact(sent)).hexdigest()
    n = body.get("n") if "multi" in faults else 1
    texts = []
    for _ in range(n if isinstance(n, int) and n > 1 else 1):
        text = base
        if "vary" in faults:
            with upstream.lock:
                upstream.answers[model] += 1
                text = f"{base} #{upstream.answers[model]}"
        texts.append(text)
    return texts


def _streamed(faults: dict[str, str], texts: list[str]) -> dict[str, str]:
    """`faults` for a stream: the ``n`` choices ``multi=1`` answers, as ``choices=N``."""
    return {**faults, "choices": str(len(texts))} if len(texts) > 1 else faults


_MESSAGE_FIELDS = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "refusal", "audio", "function_call"}
)


def _refused(faults: dict[str, str], body: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's 400 error object for what ``unsupported=``, ``nologprobs=1`` or
    ``strict=1`` refuses."""
    too_long = _long_tool_id(body) if "strict" in faults else None
    if too_long is not None:
        where, length = too_long
        return {
            "message": f"Invalid '{where}': string too long. Expected a string with maximum "
            f"length {_OPENAI_TOOL_ID_MAX}, but got a string with length {length} instead.",
            "type": "invalid_request_error",
            "param": where,
            "code": "string_above_max_length",
        }
    metadata = _bad_metadata(body) if "strict" in faults else None
    if metadata is not None:
        return {"message": metadata, "type": "invalid_request_error", "param": "metadata"}
    unknown = _unknown_message_field(body) if "strict" in faults else None
    if unknown is not None:
        return {
            "message": "Invalid request: Additional properties are not allowed "
            f"('{unknown}' was unexpected)",
            "type": "invalid_request_error",
        }
    over = _over_cap(faults, body)
    if over is not None:
        key, asked = over
        return {
            "message": f"{key} is too large: {asked}. This model supports at most "
            f"{faults['cap']} completion tokens, whereas you provided {asked}.",
            "type": "invalid_request_error",
            "param": key,
            "code": "invalid_value",
        }
    refused = [p for p in faults.get("unsupported", "").split(",") if p and p in body]
    if not refused and "nologprobs" in faults and body.get("logprobs") is True:
        return {"message": "logprobs are not supported", "type": "invalid_request_error"}
    if not refused:
        return None
    return {
        "message": f"Unsupported parameter: '{refused[0]}' is not supported with this model.",
        "type": "invalid_request_error",
        "param": refused[0],
        "code": "unsupported_parameter",
    }


def _over_cap(faults: dict[str, str], body: dict[str, Any]) -> tuple[str, int] | None:
    """The answer limit of `body` above ``cap=N``, if any (key, value)."""
    if "cap" not in faults:
        return None
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > int(faults["cap"]):
            return key, value
    return None


_OPENAI_TOOL_ID_MAX = 40


def _long_tool_id(body: dict[str, Any]) -> tuple[str, int] | None:
    """Where a tool call id longer than OpenAI takes is, and its length."""
    for i, message in enumerate(body.get("messages") or ()):
        if not isinstance(message, dict):
            continue
        said = message.get("tool_call_id")
        if isinstance(said, str) and len(said) > _OPENAI_TOOL_ID_MAX:
            return f"messages[{i}].tool_call_id", len(said)
        calls = message.get("tool_calls")
        for j, call in enumerate(calls if isinstance(calls, list) else ()):
            said = call.get("id") if isinstance(call, dict) else None
            if isinstance(said, str) and len(said) > _OPENAI_TOOL_ID_MAX:
                return f"messages[{i}].tool_calls[{j}].id", len(said)
    return None


def _bad_metadata(body: dict[str, Any]) -> str | None:
    """OpenAI's words for a ``metadata`` (or LiteLLM's ``tags``) it refuses, if any."""
    if "tags" in body:
        return "Unrecognized request argument supplied: tags"
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if body.get("store") is not True:
        return "The 'metadata' parameter is only allowed when 'store' is enabled."
    if not isinstance(metadata, dict) or len(metadata) > 16:
        return "Invalid 'metadata': expected an object with at most 16 properties."
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            return f"Invalid 'metadata.{key[:64]}': expected a string of at most 512 characters."
    return None


def _unknown_message_field(body: dict[str, Any]) -> str | None:
    for message in body.get("messages") or ():
        for key in message if isinstance(message, dict) else ():
            if key not in _MESSAGE_FIELDS:
                return str(key)
    return None


def _logprobs(faults: dict[str, str], body: dict[str, Any]) -> dict[str, Any] | None:
    if body.get("logprobs") is not True:
        return None
    bad = faults.get("badlogprobs")
    if bad is not None:
        if bad == "notalist":
            return {"content": [{"token": "yes", "logprob": -0.1, "top_logprobs": 5}]}
        value = 1000.0 if bad == "huge" else 0.5
        first = {"token": "yes", "logprob": value, "bytes": None}
        return {"content": [{**first, "top_logprobs": [first]}]}
    if "p_yes" not in faults:
        return None
    p = min(max(float(faults["p_yes"]), 1e-6), 1 - 1e-6)
    top = [
        {"token": "yes", "logprob": math.log(p), "bytes": None},
        {"token": "no", "logprob": math.log(1 - p), "bytes": None},
    ]
    best = top[0] if p >= 0.5 else top[1]
    return {"content": [{**best, "top_logprobs": top}]}


def _chunk(
    model: str,
    delta: dict[str, Any] | None,
    finish: str | None,
    usage: bool = False,
    index: Any = 0,
) -> bytes:
    data: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": []
        if delta is None
        else [{"index": index, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        data["usage"] = _usage()
    return f"data: {json.dumps(data)}\n\n".encode()


def _halves(text: str) -> list[str]:
    """`text` in pieces cut inside each character beyond the BMP: its high surrogate ends
    one piece and its low one starts the next (str holds them as lone code points, and
    `json.dumps` writes each as its escape)."""
    pieces, current = [], ""
    for ch in text:
        if ord(ch) > 0xFFFF:
            high, low = divmod(ord(ch) - 0x10000, 0x400)
            pieces.append(current + chr(0xD800 + high))
            current = chr(0xDC00 + low)
        else:
            current += ch
    return [*pieces, current]


def _loose(event: bytes) -> bytes:
    """`event` (``data: <json>\n\n``) as looser but valid server-sent events."""
    payload = event[len(b"data: ") :].strip()
    if payload != b"[DONE]":
        payload = json.dumps(json.loads(payload), indent=1).encode()
    lines = [b"id: 7", *(b"data:" + line for line in payload.split(b"\n"))]
    return b": ping\r\n\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"


def _error_in_body(code: str) -> dict[str, Any]:
    """An error object sent with a 200: OpenRouter's shape, or vLLM's older bare one."""
    if code == "old":
        return {"object": "error", "message": "bad input", "type": "BadRequestError", "code": 400}
    if code.startswith("type:"):  # an error named by its type alone, no code
        return {"error": {"type": code[5:], "message": "You exceeded your current quota"}}
    if code.startswith("json:"):  # the error object as written, of any shape
        return {"error": json.loads(code[5:])}
    message = "Provider returned error" if code.startswith("5") else "bad request"
    return {"error": {"code": int(code) if code.isdigit() else code, "message": message}}


def _malformed(model: str, shape: str, text: bool) -> dict[str, Any]:
    """A 200 answer that is no answer (``shape=``): a broken upstream or proxy."""
    data: dict[str, Any] = {"id": "x", "object": "text_completion" if text else "chat.completion"}
    data["model"] = model
    if shape == "empty":
        data["choices"] = []
    elif shape == "bare":
        data["choices"] = [{"index": 0, "finish_reason": "stop"}]
    elif shape == "nan":  # whole, but json.dumps writes NaN, which is not JSON
        message = {"role": "assistant", "content": "hi"}
        logprobs = {"content": [{"token": "hi", "logprob": float("nan"), "bytes": None}]}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": logprobs}
        data["choices"] = [choice]
    return data


def _embedding(text: str) -> list[float]:
    return [((hash(text) >> shift) % 1000) / 1000.0 for shift in (0, 8, 16, 24)]


def _handler(upstream: FakeUpstream) -> type[BaseHTTPRequestHandler]:  # noqa: C901
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in separate writes
        compressed = False  # ``gzip=1``: `_send_json` compresses its answer

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            with upstream.lock:
                upstream.requests.append(
                    Recorded(self.path, headers, {}, time.monotonic(), self.client_address[1])
                )
            if not self.path.endswith("/models") or upstream.listed is None:
                self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})
            elif upstream.listing_status is not None:
                error = {"message": "listing models failed", "type": "server_error"}
                self._send_json(upstream.listing_status, {"error": error})
            elif upstream.listing_body is not None:
                content_type, raw = upstream.listing_body
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            elif upstream.key is not None and headers.get("authorization") != (
                f"Bearer {upstream.key}"
            ):
                error = {"message": "Incorrect API key provided", "type": "invalid_api_key"}
                self._send_json(401, {"error": error})
            else:
                data = [{"id": m, "object": "model", "owned_by": "fake"} for m in upstream.listed]
                self._send_json(200, {"object": "list", "data": data})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            body = json.loads(raw or b"{}")
            headers = {k.lower(): v for k, v in self.headers.items()}
            model = str(body.get("model", ""))
            with upstream.lock:
                upstream.requests.append(
                    Recorded(self.path, headers, body, time.monotonic(), self.client_address[1])
                )
                upstream.counts[model] += 1
                count = upstream.counts[model]
            faults = faults_of(model)
            self.compressed = "gzip" in faults
            if "times" in faults and count > int(faults["times"]):
                kept = ("delay", "nousage", *_SCRIPTED)
                faults = {k: v for k, v in faults.items() if k in kept}
            if "delay" in faults and not self._wait(float(faults["delay"])):
                with upstream.lock:
                    upstream.cut.append((model, 0))
                self.close_connection = True
                return
            if self._fail(faults, model, body) or self._not_verbatim(faults, raw, body):
                return
            streamed_late = "late" in faults or "early" in faults
            if "inbody" in faults and not (body.get("stream") is True and streamed_late):
                if body.get("stream") is True:
                    self._stream(model, "", faults, False)
                else:
                    self._send_json(200, _error_in_body(faults["inbody"]))
                return
            if self.path.endswith(("/embeddings", "/rerank")):
                self._unrouted(model, body, faults)
                return
            if self.path.endswith("/v1/completions"):
                self._text(model, body, faults)
                return
            if "nochat" in faults:
                error = {"message": "this model has no chat template", "type": "BadRequestError"}
                self._send_json(400, {"error": error})
                return
            error = _refused(faults, body)
            if error is not None:
                self._send_json(400, {"error": error})
                return
            texts = _scripted_texts(upstream, model, body, faults)
            text = texts[0]
            usage = "nousage" not in faults
            if body.get("stream") is True and "nostream" not in faults:
                include = bool((body.get("stream_options") or {}).get("include_usage"))
                self._stream(model, text, _streamed(faults, texts), usage and include)
            else:
                data = _completion(
                    model,
                    text,
                    usage,
                    texts=texts,
                    finish=faults.get("finish", "stop"),
                    logprobs=_logprobs(faults, body),
                )
                if "reasoning" in faults:
                    data["choices"][0]["message"]["reasoning_content"] = faults["reasoning"]
                self._send_json(200, data)

        def _wait(self, seconds: float) -> bool:
            """Sleep `seconds`; False as soon as the client hangs up instead."""
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return False
                if readable:  # the next request, pipelined: nothing to learn here
                    time.sleep(min(left, 0.05))
            return True

        def _not_verbatim(self, faults: dict[str, str], raw: bytes, body: Any) -> bool:
            """``verbatim=1``: a body not as json.dumps writes it is answered 400."""
            if "verbatim" not in faults or raw == _compact(body):
                return False
            error = {"message": _not_verbatim(raw, body), "type": "invalid_request_error"}
            self._send_json(400, {"error": error})
            return True

        def _fail(self, faults: dict[str, str], model: str, body: dict[str, Any]) -> bool:
            if "shape" in faults and body.get("stream") is not True:
                text = self.path.endswith("/v1/completions")
                self._send_json(200, _malformed(model, faults["shape"], text))
                return True
            if "reset" in faults:
                self.close_connection = True
                return True  # no status line at all
            if "filter" in faults:  # Azure OpenAI's content filter refusing the prompt
                error = {
                    "message": "The response was filtered due to the prompt triggering Azure "
                    "OpenAI's content management policy. Please modify your prompt and retry.",
                    "type": None,
                    "param": "prompt",
                    "code": "content_filter",
                    "status": 400,
                    "innererror": {"code": "ResponsibleAIPolicyViolation"},
                }
                self._send_json(400, {"error": error})
                return True
            if "moderated" in faults:  # OpenRouter's moderation refusing the prompt
                error = {
                    "code": 403,
                    "message": "Your chosen model requires moderation and your input was "
                    "flagged for violence",
                    "metadata": {"reasons": ["violence"], "flagged_input": "..."},
                }
                self._send_json(403, {"error": error})
                return True
            if "context" in faults:
                error = {
                    "message": "This model's maximum context length is 8192 tokens.",
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                }
                self._send_json(400, {"error": error})
                return True
            if "deep" in faults:  # a 200 whose JSON nests DEEP levels: a broken upstream
                levels = int(faults["deep"])
                raw = b'{"choices": ' + b"[" * levels + b"]" * levels + b"}"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                return True
            if "status" in faults:
                status = int(faults["status"])
                extra = {"retry-after": faults["retry_after"]} if "retry_after" in faults else {}
                kind = "server_error" if status >= 500 else "invalid_request_error"
                message = "boom" if status >= 500 else "bad request"
                if "quote" in faults:  # as a validation error quoting a field's value
                    message = f"Invalid value for 'content': {_reply_text(body)[6:]!r}"
                error = {"message": message, "type": kind}
                if "code" in faults:
                    said = faults["code"]
                    error["code"] = json.loads(said[5:]) if said.startswith("json:") else said
                self._send_json(status, {"error": error}, extra)
                return True
            return False

        def _send_json(
            self, status: int, data: dict[str, Any], extra: dict[str, str] | None = None
        ) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            if self.compressed:
                raw = gzip.compress(raw)
                self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(raw)))
            self.send_header("x-request-id", f"req_fake{len(upstream.requests)}")
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def _embeddings(self, model: str, body: dict[str, Any]) -> None:
            inputs = body.get("input", [])
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            data = [
                {"object": "embedding", "index": i, "embedding": _embedding(str(t))}
                for i, t in enumerate(texts)
            ]
            usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
            self._send_json(200, {"object": "list", "data": data, "model": model, "usage": usage})

        def _unrouted(self, model: str, body: dict[str, Any], faults: dict[str, str]) -> None:
            if self.path.endswith("/rerank"):
                self._rerank(model, body, faults)
            else:
                self._embeddings(model, body)

        def _rerank(self, model: str, body: dict[str, Any], faults: dict[str, str]) -> None:
            """The documents in their given order, scored 1, 1/2, 1/3 ...; the best
            ``top_n``; 10 tokens a document reported (vLLM's and Jina's ``usage``), or with
            ``cohere=1`` Cohere's ``meta.billed_units`` (one search unit, no tokens)."""
            documents = body.get("documents", [])
            top_n = body.get("top_n", len(documents))
            results = [
                {"index": i, "relevance_score": 1 / (i + 1)}
                for i in range(min(len(documents), top_n))
            ]
            if "nan" in faults:
                results[0]["relevance_score"] = float("nan")  # json.dumps writes NaN
            answer: dict[str, Any] = {"id": "rerank-1", "model": model, "results": results}
            if "cohere" in faults:
                answer["meta"] = {"billed_units": {"search_units": 1}}
            elif "nousage" not in faults:
                answer["usage"] = {"total_tokens": 10 * len(documents)}
            self._send_json(200, answer)

        def _write_chunk(self, data: bytes) -> None:
            null_usage = getattr(self, "null_usage", False) and data.startswith(b"data: {")
            if null_usage and b'"usage"' not in data:  # OpenAI's: null on each but the last
                data = data[: -len(b"}\n\n")] + b', "usage": null}\n\n'
            if getattr(self, "loose", False) and data.startswith(b"data: "):
                data = _loose(data)
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _opening(self, model: str, faults: dict[str, str]) -> None:
            """The role-only chunk a stream opens with; ``pause=S``: then S seconds of
            nothing (a reasoning model thinking)."""
            self._write_chunk(_chunk(model, {"role": "assistant", "content": ""}, None))
            if "reasoning" in faults:
                self._write_chunk(_chunk(model, {"reasoning_content": faults["reasoning"]}, None))
            if "pause" in faults:
                time.sleep(float(faults["pause"]))

        def _garbled(self, model: str, faults: dict[str, str]) -> bool:
            """``garbage=``: an event that is not JSON (first, or after the opening and a
            word), then the connection closes, the chunked body unended."""
            if "garbage" not in faults:
                return False
            if faults["garbage"] == "late":
                self._opening(model, faults)
                self._write_chunk(_chunk(model, {"content": "partial "}, None))
            if faults["garbage"] == "nan":  # JSON but for a NaN, then a proper end
                self._write_chunk(b'data: {"choices": [], "usage": {"prompt_tokens": NaN}}\n\n')
                self._write_chunk(b"data: [DONE]\n\n")
                self._write_chunk(b"")
                return True
            self._write_chunk(b"data: {not json\n\n")
            self.close_connection = True
            return True

        def _cut_short(self, model: str, faults: dict[str, str]) -> bool:
            """A stream that ends after its first word, when the faults say so: cleanly
            (``truncate``), broken (``mid``) or in an event that never ends (``huge``)."""
            if not {"truncate", "mid", "huge"} & faults.keys():
                return False
            self._write_chunk(_chunk(model, {"content": "partial "}, None))
            if "truncate" in faults:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return True
            if "huge" in faults:
                self._write_chunk(b'data: {"x": "')
                piece = b"x" * (1 << 20)
                try:
                    for _ in range(int(faults["huge"])):
                        self._write_chunk(piece)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            if "mid" in faults:
                # the word read before the cut: aiohttp raises a broken payload before
                # what it buffered, so a close hard on its heels could drop the word, and
                # the break then came before the first words (retried) by chance
                time.sleep(0.1)
            # chunked transfer cut off before its last chunk: a real broken stream
            self.close_connection = True
            return True

        def _stream(self, model: str, text: str, faults: dict[str, str], usage: bool) -> None:
            self.send_response(200)
            self.loose = "loose" in faults
            self.null_usage = usage and "nullusage" in faults
            label = "application/json" if "jsonlabel" in faults else "text/event-stream"
            self.send_header("content-type", label)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            if "ping" in faults:
                self._write_chunk(b": OPENROUTER PROCESSING\n\n")
            if "ttft" in faults and not self._wait(float(faults["ttft"])):
                with upstream.lock:
                    upstream.cut.append((model, 0))
                self.close_connection = True
                return
            if self._garbled(model, faults):
                return
            if "inbody" in faults and "late" not in faults and "early" not in faults:
                error = _error_in_body(faults["inbody"])
                self._write_chunk(f"data: {json.dumps(error)}\n\n".encode())
                self._write_chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return
            self._opening(model, faults)
            if "late" in faults or "early" in faults:
                if "late" in faults:
                    self._write_chunk(_chunk(model, {"content": "partial "}, None))
                late = json.loads(_chunk(model, {"content": ""}, "error")[6:])
                late["error"] = _error_in_body(faults.get("inbody", "502"))["error"]
                self._write_chunk(f"data: {json.dumps(late)}\n\n".encode())
                self._write_chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return
            if self._cut_short(model, faults):
                return
            if "choices" in faults:
                self._choices(model, text, faults, usage)
                return
            sent = 0
            try:
                for word in text.split(" "):
                    self._pause_before(sent, faults)
                    for piece in _halves(word + " ") if "split" in faults else [word + " "]:
                        self._write_chunk(_chunk(model, {"content": piece}, None))
                    sent += 1
                self._ending(model, faults, usage)
            except (BrokenPipeError, ConnectionResetError):
                with upstream.lock:
                    upstream.cut.append((model, sent))
                self.close_connection = True

        def _choices(self, model: str, text: str, faults: dict[str, str], usage: bool) -> None:
            """``choices=N``: the answer as N choices (indexes 0 to N-1), word by word in
            turn, then each its finish reason, as `_ending` ends a stream. ``cutchoice=1``:
            choice 0 finishes, choice 1 says a word more, and the body ends cleanly with
            no finish reason for it and no ``[DONE]`` (a proxy closing it midway)."""
            n = int(faults["choices"])
            said = faults.get("index")
            index: list[Any] = list(range(n)) if said is None else json.loads(f"[{said}]")
            tools = "tools" in faults
            told = faults.get("callindex", "")  # the calls' indexes, JSON ("none": no index)
            places = [_NO_INDEX if i == "none" else json.loads(i) for i in told.split(",") if i]
            pieces = ['{"q": ', json.dumps(text), "}"] if tools else text.split(" ")
            for round, piece in enumerate(pieces):
                if "bare" in faults:  # chunks with no choices, or choices null
                    bare = {"id": "chatcmpl-fake", "object": "chat.completion.chunk"}
                    self._write_chunk(f"data: {json.dumps(bare)}\n\n".encode())
                    bare["choices"] = None
                    self._write_chunk(f"data: {json.dumps(bare)}\n\n".encode())
                for i in range(n):
                    if not tools:
                        delta: dict[str, Any] = {"content": piece + " "}
                    elif "calls" not in faults:  # a call's arguments in pieces, choices in turn
                        call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
                        if round == 0:
                            call.update(id=f"call_{i}", type="function")
                            call["function"]["name"] = "lookup"
                        delta = {"tool_calls": [call]}
                    else:  # K calls' pieces interleaved: one chunk a piece of each in turn
                        for j in range(int(faults["calls"])):
                            last = f', "n": {j}}}' if round == len(pieces) - 1 else piece
                            call = _call_piece(places[j] if places else j, last)
                            if round == 0:
                                call.update(id=f"call_{i}_{j}", type="function")
                                call["function"]["name"] = "lookup"
                            delta = {"tool_calls": [call]}
                            self._write_chunk(_chunk(model, delta, None, index=index[i]))
                        continue
                    self._write_chunk(_chunk(model, delta, None, index=index[i]))
            if "cutchoice" in faults:
                self._write_chunk(_chunk(model, {}, "stop", index=index[0]))
                self._write_chunk(_chunk(model, {"content": "more "}, None, index=index[1]))
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return
            finish = "tool_calls" if tools else "stop"
            for i in range(n - 1):
                self._write_chunk(_chunk(model, {}, finish, index=index[n - 1 - i]))
            if tools:
                faults = {"finish": finish, **faults}
            self._ending(model, faults, usage, index[0])  # choice 0's finish reason last

        def _ending(self, model: str, faults: dict[str, str], usage: bool, index: Any = 0) -> None:
            """A whole stream's end: its finish reason, usage chunk and ``[DONE]`` (none
            with ``nodone``), then its body's end. ``after=``: then broken, its connection
            cut before the body's end (``reset``), or an event that is not JSON before
            that (``garbage``)."""
            self._write_chunk(_chunk(model, {}, faults.get("finish", "stop"), index=index))
            if usage:
                self._write_chunk(_chunk(model, None, None, usage=True))
            if "nodone" not in faults:  # ``done=spaced``: its data " [DONE]"
                spaced = faults.get("done") == "spaced"
                self._write_chunk(b"data:  [DONE]\n\n" if spaced else b"data: [DONE]\n\n")
            if faults.get("after") == "hold":
                time.sleep(1.0)  # the body's end comes late
            elif faults.get("after") == "lag":  # a moment late, as over a network
                time.sleep(0.1)
            elif faults.get("after") == "open":  # until its reader leaves
                if not self._wait(60.0):
                    with upstream.lock:
                        upstream.released.append(model)
                    self.close_connection = True
                    return
            elif faults.get("after") == "chunk":  # more after its end, then a proper end
                self._write_chunk(_chunk(model, {"content": " late"}, None))
                self._write_chunk(b"data: [DONE]\n\n")
            elif "after" in faults:
                if faults["after"] == "garbage":
                    self._write_chunk(b"data: {not json\n\n")
                time.sleep(0.1)  # what went before read before the cut, as `mid` waits
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        @staticmethod
        def _pause_before(sent: int, faults: dict[str, str]) -> None:
            """``gap=S`` before each word, ``stall=S`` more after the first."""
            if "gap" in faults:
                time.sleep(float(faults["gap"]))
            if "stall" in faults and sent == 1:
                time.sleep(float(faults["stall"]))

        def _text(self, model: str, body: dict[str, Any], faults: dict[str, str]) -> None:
            """A text completion (``/v1/completions``): ``raw: PROMPT``, with ``[FIM]SUFFIX``
            when a suffix came, the prompt before it with ``echo``, per-word logprobs
            with ``logprobs``; streamed word by word when asked (``mid=1``: broken after
            the first word; ``pause=S``: an empty chunk, then S seconds of nothing, then
            with ``early=1`` an error event instead of the words); ``nosuffix=1``: a
            ``suffix`` is refused with vLLM's 400; ``unsupported=A,B`` as on chat;
            ``nochat=1`` (on the chat endpoint): refused as a base model without a chat
            template."""
            prompt, suffix = str(body.get("prompt", "")), body.get("suffix")
            if "unsupported" in faults:  # OpenAI's 400, naming a field of this body
                error = _refused({"unsupported": faults["unsupported"]}, body)
                if error is not None:
                    self._send_json(400, {"error": error})
                    return
            if suffix and "nosuffix" in faults:  # vLLM's answer to the field
                error = {"message": "suffix is not currently supported", "type": "BadRequestError"}
                self._send_json(400, {"error": error})
                return
            text = f"raw: {prompt}" + (f"[FIM]{suffix}" if suffix else "")
            words = [w + " " for w in text.split(" ")]
            if body.get("echo") is True:
                words.insert(0, prompt)
            k = body.get("logprobs")
            if body.get("stream") is not True:
                choice = {"index": 0, "text": "".join(words), "finish_reason": "stop"}
                choice["logprobs"] = _text_logprobs(words, k)
                data = {"id": "cmpl-fake", "object": "text_completion", "created": 1}
                data.update(model=model, choices=[choice], usage=_usage())
                self._send_json(200, data)
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            if "pause" in faults:  # a model thinking: nothing said, then (early) failing
                self._write_chunk(_text_chunk(model, "", None, None))
                time.sleep(float(faults["pause"]))
                if "early" in faults:
                    error = {"error": {"message": "the model gave up", "code": 502}}
                    self._write_chunk(f"data: {json.dumps(error)}\n\n".encode())
                    self._write_chunk(b"data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    return
            for word in words:
                self._write_chunk(_text_chunk(model, word, None, _text_logprobs([word], k)))
                if "mid" in faults:
                    self.close_connection = True
                    return
            self._write_chunk(_text_chunk(model, "", "stop", None))
            if (body.get("stream_options") or {}).get("include_usage"):
                self._write_chunk(_text_chunk(model, None, None, None, usage=True))
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def _text_logprobs(words: list[str], k: Any) -> dict[str, Any] | None:
    """Completions-API logprobs for `words` (-0.5 each), `k` alternatives a token."""
    if not isinstance(k, int) or isinstance(k, bool):
        return None
    offsets = [sum(len(w) for w in words[:i]) for i in range(len(words))]
    return {
        "tokens": words,
        "token_logprobs": [-0.5] * len(words),
        "top_logprobs": [{w: -0.5} for w in words] if k > 0 else None,
        "text_offset": offsets,
    }


def _text_chunk(
    model: str,
    text: str | None,
    finish: str | None,
    logprobs: dict[str, Any] | None,
    usage: bool = False,
) -> bytes:
    data: dict[str, Any] = {"id": "cmpl-fake", "object": "text_completion", "created": 1}
    data["model"] = model
    data["choices"] = (
        []
        if text is None
        else [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}]
    )
    if usage:
        data["usage"] = _usage()
    return f"data: {json.dumps(data)}\n\n".encode()


def hung_up_within(connection: socket.socket, seconds: float) -> bool:
    """Whether the client on `connection` hangs up within `seconds` (a server holding
    its response open after the answer's end, until its reader lets go)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        readable, _, _ = select.select([connection], [], [], min(left, 0.05))
        if readable and not connection.recv(1, socket.MSG_PEEK):
            return True
        if readable:  # a pipelined request: not a hang-up
            time.sleep(min(left, 0.05))
    return False


@contextmanager
def serve_in_thread(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A `QuietServer` on a free 127.0.0.1 port in a thread; yields ``http://host:port``."""
    server = QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def fake_upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream(url="")
    with serve_in_thread(_handler(upstream)) as url:
        upstream.url = f"{url}/v1"
        yield upstream
