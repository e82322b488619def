"""`JsonHttpToolsProtocol` (`llmroute.server.invalid_http`): imported only through
`http_protocol`, which falls back to uvicorn's own class when this import fails (a
uvicorn whose modules moved)."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llmroute.server.invalid_http import answer, quiet_uvicorn, said

__all__ = ["JsonHttpToolsProtocol"]


class JsonHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; what it cannot parse is answered with the error
    JSON instead of plain text, counted and logged (`said`: not a line each, as uvicorn
    would), and the connection closed as uvicorn would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quiet_uvicorn()

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
