"""A tiny reverse proxy that serves a gateway under a path prefix, in either of the two
ways proxies do it:

- stripping it, as nginx's ``location /llm/ { proxy_pass http://127.0.0.1:8000/; }``
  does (the trailing ``/``): ``/llm/x`` is asked of the gateway as ``/x``;
- keeping it (``keep=True``), as ``proxy_pass http://127.0.0.1:8000;`` without the
  trailing ``/`` does, or an ingress without a rewrite: ``/llm/x`` is asked as
  ``/llm/x``, for a gateway started with ``--root-path /llm``.

``Host`` is the gateway's own (nginx's default); anything outside the prefix is a 404
of the proxy's own. GET, POST and DELETE; an answer is passed on as it comes (events
of a stream one by one: the connection closes at its end, as HTTP/1.0 answers without
a length do)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
from fake_upstream import serve_in_thread

# hop-by-hop, and what httpx decodes or frames itself
_DROPPED = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)


def _handler(target: str, prefix: str, keep: bool) -> type[BaseHTTPRequestHandler]:
    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._forward()

        def do_POST(self) -> None:
            self._forward()

        def do_DELETE(self) -> None:
            self._forward()

        def _forward(self) -> None:
            if not self.path.startswith(f"{prefix}/"):
                self._answer(404, {"content-type": "text/plain"}, b"not under the prefix\n")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _DROPPED}
            headers["accept-encoding"] = "identity"
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            path = self.path if keep else self.path[len(prefix) :]
            with (
                httpx.Client(timeout=30) as client,
                client.stream(
                    self.command, f"{target}{path}", headers=headers, content=body
                ) as answer,
            ):
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in _DROPPED:
                        self.send_header(name, value)
                self.end_headers()  # no length: the body ends when the connection closes
                for chunk in answer.iter_raw():
                    self.wfile.write(chunk)
                    self.wfile.flush()

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Proxy


@contextmanager
def prefix_proxy(target: str, prefix: str = "/llm", *, keep: bool = False) -> Iterator[str]:
    """The proxy on a free 127.0.0.1 port in a thread; yields its URL with `prefix`
    (``http://127.0.0.1:PORT/llm``). With `keep`, the gateway is asked the path whole."""
    with serve_in_thread(_handler(target, prefix, keep)) as url:
        yield f"{url}{prefix}"
