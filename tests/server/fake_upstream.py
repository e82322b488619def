"""A fake OpenAI-compatible upstream: a real HTTP server on 127.0.0.1 in a thread.

It records every request, answers with the model it was asked for and the last user
message, streams SSE chunks ending in ``data: [DONE]`` when ``stream`` is true, and fails
on purpose for some upstream model names: ``fail-500`` answers HTTP 500 and
``fail-close`` closes the connection without answering, ``fail-400`` answers HTTP 400.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAIL_500 = "fail-500"
FAIL_CLOSE = "fail-close"
FAIL_400 = "fail-400"
FAIL_MID = "fail-mid"  # a stream that sends one event, then drops the connection


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    url: str
    requests: list[Recorded] = field(default_factory=list)

    def models_called(self) -> list[str]:
        return [r.body.get("model", "") for r in self.requests]


def _reply_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return f"echo: {users[-1]['content']}" if users else "echo:"


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    data = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(data)}\n\n".encode()


def _handler(upstream: FakeUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            upstream.requests.append(
                Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            model = str(body.get("model", ""))
            if model == FAIL_CLOSE:
                self.close_connection = True
                return  # no status line at all
            if model == FAIL_500:
                self._send_json(500, {"error": {"message": "boom", "type": "server_error"}})
                return
            if model == FAIL_400:
                error = {"message": "bad request", "type": "invalid_request_error"}
                self._send_json(400, {"error": error})
                return
            text = _reply_text(body)
            if model == FAIL_MID:
                self._broken_stream(model)
                return
            if body.get("stream") is True:
                self._stream(model, text)
            else:
                self._send_json(200, _completion(model, text))

        def _send_json(self, status: int, data: dict[str, Any]) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _broken_stream(self, model: str) -> None:
            """Chunked transfer cut off before its last chunk: a real broken stream."""
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            data = _chunk(model, {"role": "assistant", "content": "partial "}, None)
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            self.close_connection = True

        def _stream(self, model: str, text: str) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(_chunk(model, {"role": "assistant", "content": ""}, None))
            for word in text.split(" "):
                self.wfile.write(_chunk(model, {"content": word + " "}, None))
                self.wfile.flush()
            self.wfile.write(_chunk(model, {}, "stop"))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


@contextmanager
def fake_upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream))
    server.daemon_threads = True
    upstream.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
