"""`JsonHttpToolsProtocol` (`llmroute.server.invalid_http`): imported only through
`http_protocol`, which falls back to uvicorn's own class when this import fails (a
uvicorn whose modules moved)."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llmroute.server.invalid_http import answer, quiet_uvicorn, said
from llmroute.server.one_host import TARGET_AUTHORITY

__all__ = ["JsonHttpToolsProtocol"]


class JsonHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; what it cannot parse is answered with the error
    JSON instead of plain text, counted and logged (`said`: not a line each, as uvicorn
    would), and the connection closed as uvicorn would. An absolute-form target's
    authority, which uvicorn drops, is kept in the scope for `OneHost` to check."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quiet_uvicorn()

    def on_headers_complete(self) -> None:
        # uvicorn keeps only the path of an absolute-form target (``GET http://h/p``):
        # its authority, which HTTP says wins over Host, is handed on for `OneHost`
        url = getattr(self, "url", b"/")
        if not url.startswith(b"/"):
            target = _target(url)
            scope = getattr(self, "scope", None)
            if target is not None and scope is not None:
                scope.setdefault("extensions", {})[TARGET_AUTHORITY] = target
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        said(getattr(self, "app", None), getattr(self, "client", None))
        try:
            sent = answer(list(self.server_state.default_headers))
            transport = self.transport
        except AttributeError:  # another uvicorn's insides: its own answer
            super().send_400_response(msg)
            return
        transport.write(sent)
        transport.close()


def _target(url: bytes) -> dict[str, Any] | None:
    """An absolute-form target's scheme and authority (``http://host:port/path``:
    ``host:port``), as `OneHost` reads them; None for another form (``*``, a CONNECT's
    ``host:port``)."""
    scheme, sep, rest = url.partition(b"://")
    if not sep or not scheme.isalpha():
        return None
    end = len(rest)
    for stop in (b"/", b"?", b"#"):
        at = rest.find(stop)
        if 0 <= at < end:
            end = at
    return {"scheme": scheme.decode("ascii").lower(), "authority": rest[:end]}
