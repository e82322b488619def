"""Whether this process is stopping, and the uvicorn server that says so.

After SIGTERM (or Ctrl-C) uvicorn gives requests in flight the graceful timeout, then
cancels them. A cancelled request looks the same as one whose client hung up; `stopping`
tells them apart, so such a request is logged as cut by the shutdown
(``server_shutdown``, an error of the gateway's) rather than as a client's choice.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

__all__ = ["Server", "stopping"]

_STOPPING = threading.Event()


def stopping() -> bool:
    """Whether SIGTERM or SIGINT has reached this process's server."""
    return _STOPPING.is_set()


class Server(uvicorn.Server):
    """uvicorn's server, noting the signal that stops it (`stopping`), and calling
    `on_started` (if given) the moment it serves: before it can have answered anything, so
    whoever it tells never sees an answer from a server it thinks is still starting."""

    def __init__(
        self, config: uvicorn.Config, on_started: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        _STOPPING.set()
        super().handle_exit(sig, frame)
