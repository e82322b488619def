"""Whether this process is stopping, and the uvicorn server that says so.

After SIGTERM (or Ctrl-C) uvicorn gives requests in flight the graceful timeout, then
cancels them. A cancelled request looks the same as one whose client hung up; `stopping`
tells them apart, so such a request is logged as cut by the shutdown
(``server_shutdown``, an error of the gateway's) rather than as a client's choice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.server import HANDLED_SIGNALS

from llmroute.server.watched_send import WatchedSend

__all__ = [
    "CUT_BY_SHUTDOWN",
    "AnswerCutRequests",
    "Server",
    "ignore_sighup",
    "stopped_status",
    "stopping",
]

CUT_BY_SHUTDOWN = (
    "a request still running when the graceful timeout ended was cut (logged as server_shutdown)"
)

_STOPPING = threading.Event()


def ignore_sighup() -> None:
    """SIGHUP ignored until a serving gateway handles it (`reload.on_sighup`): its
    default action ends the process, and a reload asked for while a gateway starts has
    nothing to do (the starting gateway reads the registry file as it is)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def stopping() -> bool:
    """Whether SIGTERM or SIGINT has reached this process's server."""
    return _STOPPING.is_set()


class _CutByShutdown(logging.Filter):
    """uvicorn logs the end of the graceful timeout as an ERROR ("Cancel N running
    task(s)") and each request it then cancels as another, with a traceback ("Exception
    in ASGI application", a CancelledError): an expected outcome of a deploy with long
    streams, which would trip log-based alerting. Both said as WARNING lines instead; the
    requests themselves are in the decision log as ``server_shutdown``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not stopping() or record.levelno < logging.ERROR:
            return True
        failure = record.exc_info[1] if record.exc_info else None
        if isinstance(failure, asyncio.CancelledError):
            record.msg, record.args, record.exc_info = CUT_BY_SHUTDOWN, (), None
        elif str(record.msg).startswith(_CANCELLING):  # its count of the requests it cuts
            pass
        else:
            return True
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        # the logger checked its level against ERROR: one set above WARNING hears nothing
        return logging.getLogger(record.name).isEnabledFor(logging.WARNING)


def stopped_status(signals: list[int]) -> int:
    """The exit status of a server stopped gracefully by `signals` (those it handled):
    130 when one was SIGINT (Ctrl-C: a shell or script sees it interrupted, as any
    command's Ctrl-C), else 0 (SIGTERM: the ordinary stop of a process supervisor,
    systemd, Kubernetes, docker, which a clean shutdown answers with success, as
    gunicorn's does). `serve`, `serve --workers` and `dashboard` all say it so."""
    return 128 + signal.SIGINT if signal.SIGINT in signals else 0


_FORCED = "Force quit: cut %s running request(s) now (logged as server_shutdown)"
_CANCELLING = "Cancel %s running task(s)"  # uvicorn's line as the graceful timeout ends
_CUT_FILTER = _CutByShutdown()


class Server(uvicorn.Server):
    """uvicorn's server, noting the signal that stops it (`stopping`), and calling
    `on_started` (if given) the moment it serves: before it can have answered anything, so
    whoever it tells never sees an answer from a server it thinks is still starting."""

    def __init__(
        self, config: uvicorn.Config, on_started: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self.on_started = on_started
        self.signals: list[int] = []  # those that stopped it, in order
        uvicorn_log = logging.getLogger("uvicorn.error")
        if _CUT_FILTER not in uvicorn_log.filters:
            uvicorn_log.addFilter(_CUT_FILTER)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, less its raising the signals again once the server has stopped:
        that killed the process by SIGTERM (status 143, which supervisors count as a
        failure) after a clean shutdown; `exit_status` says how it stopped instead."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def exit_status(self) -> int:
        """The process's exit status once `run` returns (`stopped_status`); 3 when it
        never served (the port taken, a failed start-up: uvicorn has logged why)."""
        return stopped_status(self.signals) if self.started else 3

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        _STOPPING.set()
        self.signals.append(sig)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's own, and on a force quit (a second Ctrl-C) the requests cut and the
        app's shutdown run, as when the graceful timeout ends: uvicorn skips both, so the
        requests were cancelled only as the event loop closed, after the app had closed
        its Redis clients (their in-flight slots and budget holds kept for their leases),
        without the decision log (their records lost), and with a traceback."""
        await super().shutdown(sockets)
        ended = getattr(self.lifespan, "shutdown_event", None)  # None: lifespan "off"
        if not self.force_exit or ended is None or ended.is_set():
            return
        if self.server_state.tasks:
            logging.getLogger("uvicorn.error").warning(_FORCED, len(self.server_state.tasks))
        for task in self.server_state.tasks:
            if not task.cancelling():  # a second cancel would break into a stream's end
                task.cancel(msg="Task cancelled, force quit")
        await self.lifespan.shutdown()


_CUT_MESSAGE = "the gateway is shutting down and cut this request; retry it"
_CUT_ANSWER = json.dumps(
    {
        "error": {
            "message": _CUT_MESSAGE,
            "type": "server_error",
            "param": None,
            "code": "server_shutdown",
        }
    }
).encode()
# what an Anthropic client expects of /v1/messages, as the front says its other 503s
_CUT_MESSAGES_ANSWER = json.dumps(
    {"type": "error", "error": {"type": "overloaded_error", "message": _CUT_MESSAGE}}
).encode()


class AnswerCutRequests:
    """A request uvicorn cancels when the graceful timeout runs out, before its answer
    started, gets 503 with ``Retry-After`` and OpenAI's error JSON (code
    ``server_shutdown``, as it is logged; on ``/v1/messages`` Anthropic's shape, as its
    other 503s) instead of uvicorn's plain-text 500; a stream already started is cut as
    it is. Elsewhere a cancellation goes on as it came."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched = WatchedSend.of(send)
        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            if watched.started or not stopping():
                raise
            task: Any = asyncio.current_task()
            if task is not None:
                task.uncancel()
            messages = str(scope.get("path", "")).startswith("/v1/messages")
            body = _CUT_MESSAGES_ANSWER if messages else _CUT_ANSWER
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
