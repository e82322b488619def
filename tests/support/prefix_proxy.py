"""A tiny reverse proxy that serves a gateway under a path prefix, as nginx's
``location /llm/ { proxy_pass http://127.0.0.1:8000/; }`` does: ``/llm/x`` is asked of
the gateway as ``/x`` (with ``Host`` the gateway's own, nginx's default), anything
outside the prefix is a 404 of the proxy's own. GET only (what the dashboard asks)."""

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


def _handler(target: str, prefix: str) -> type[BaseHTTPRequestHandler]:
    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if not self.path.startswith(f"{prefix}/"):
                self._answer(404, {"content-type": "text/plain"}, b"not under the prefix\n")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _DROPPED}
            headers["accept-encoding"] = "identity"
            path = self.path[len(prefix) :]
            answer = httpx.get(f"{target}{path}", headers=headers, timeout=30)
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _DROPPED}
            self._answer(answer.status_code, kept, answer.content)

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Proxy


@contextmanager
def prefix_proxy(target: str, prefix: str = "/llm") -> Iterator[str]:
    """The proxy on a free 127.0.0.1 port in a thread; yields its URL with `prefix`
    (``http://127.0.0.1:PORT/llm``)."""
    with serve_in_thread(_handler(target, prefix)) as url:
        yield f"{url}{prefix}"
