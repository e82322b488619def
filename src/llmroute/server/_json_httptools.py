"""`JsonHttpToolsProtocol` (`llmroute.server.invalid_http`): imported only through
`http_protocol`, which falls back to uvicorn's own class when this import fails (a
uvicorn whose modules moved)."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llmroute.server.invalid_http import answer

__all__ = ["JsonHttpToolsProtocol"]


class JsonHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; what it cannot parse is answered with the error
    JSON instead of plain text (uvicorn has logged it, and closes the connection as it
    would)."""

    def send_400_response(self, msg: str) -> None:
        try:
            sent = answer(list(self.server_state.default_headers))
            transport = self.transport
        except AttributeError:  # another uvicorn's insides: its own answer
            super().send_400_response(msg)
            return
        transport.write(sent)
        transport.close()
