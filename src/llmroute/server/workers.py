"""`serve_workers`: ``llmroute serve --workers N``, N gateway processes on one port, each
with a listening socket of its own (``SO_REUSEPORT``), so the kernel spreads new
connections across them.

Why not uvicorn's own ``--workers``: its workers share one listening socket, and the
event loop that wakes first accepts every pending connection at once. A burst of
keep-alive connections (a proxy's connection pool, a load generator) then lands on one
worker and stays there: in benchmarks/gateway_overhead.py runs, two workers used one
core about one run in four. With a socket per worker, each new connection is hashed to
one of them.

The parent only supervises. It checks that the port is free (binding it plainly, so an
address in use fails at once instead of silently sharing the port with another
``SO_REUSEPORT`` listener), opens one listening socket per worker, starts the workers
(spawned, each in its own process group, each handed its socket),
forwards SIGHUP (each worker reloads its registry, as a single-process gateway does),
and on SIGINT or SIGTERM asks them to stop and waits for them: each gives its requests in
flight the graceful timeout, then flushes its decision log; what is still running
`KILL_MARGIN_S` after that is killed. A worker that exits after it started serving is
restarted; one of the first workers that exits before, stops everything with exit status
1 (the port or the application is broken, and restarting would loop). A replacement that
exits before serving (say the registry on disk became invalid since) is retried after the
same growing pauses, while the other workers keep serving. A worker whose parent has gone
stops too.
"""

from __future__ import annotations

import contextlib
import logging
import logging.config
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from llmroute.server.invalid_http import http_protocol
from llmroute.server.settings import DEFAULT_GRACEFUL_TIMEOUT_S, ServeSettings
from llmroute.server.shutdown import Server, ignore_sighup, stopped_status

__all__ = [
    "KILL_MARGIN_S",
    "Supervisor",
    "Target",
    "free_port",
    "reuse_port_supported",
    "serve_workers",
]

log = logging.getLogger("llmroute.server")

APP = "llmroute.server.app:app_from_env"
KILL_MARGIN_S = 10.0  # past the graceful timeout, for a worker's shutdown (the log's flush)
_BACKLOG = 2048  # uvicorn's default
_STABLE_S = 10.0  # a worker that dies younger than this is restarted after a growing pause
_BACKOFF_MAX_S = 30.0
_POLL_S = 0.2


def reuse_port_supported() -> bool:
    """``SO_REUSEPORT`` balances connections across listeners on Linux (only)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str, port: int) -> int:
    """`port` (or, for 0, a free one), checked free with a plain bind; raises `OSError`
    when it is not (in use, an address this machine does not have)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        bound: int = probe.getsockname()[1]
        return bound


def _listener(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(sock: socket.socket, log_config: dict[str, Any], ready: Connection) -> None:
    """One worker process: one uvicorn server on `sock` (a socket of its own); it sends
    one message on `ready` once it serves. (A pipe, not a multiprocessing Event: no
    semaphore to track.)"""
    os.setpgrp()  # the terminal's Ctrl-C reaches the parent, which stops each worker once
    ignore_sighup()  # the supervisor forwards one to a worker still starting
    parent = os.getppid()
    import uvicorn

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        http=http_protocol(),
        log_config=log_config,
        timeout_graceful_shutdown=ServeSettings.from_env().graceful_timeout_s,
    )
    # told from startup itself, not polled: a worker killed just after its first answers
    # must read as one that served (restarted), not one that never could (stop everything)
    server = Server(config, on_started=lambda: ready.send(True))

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_POLL_S)
        server.should_exit = True  # the supervisor is gone: do not serve on alone

    threading.Thread(target=watch, name="llmroute-worker-watch", daemon=True).start()
    server.run(sockets=[sock])
    sys.exit(0 if server.started else 3)


def _forget_metrics(pid: int | None) -> None:
    """Drop the live gauges of a worker that died without its exit handlers (killed), as
    prometheus_client's multi-process mode asks of whoever manages the workers."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if pid is None or not directory:
        return
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def _sighup_ignored() -> Iterator[None]:
    """SIGHUP ignored while inside (from the main thread; elsewhere nothing changes)."""
    hup = getattr(signal, "SIGHUP", None)
    try:
        previous = signal.signal(hup, signal.SIG_IGN) if hup is not None else None
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if hup is not None and previous is not None:
            signal.signal(hup, previous)


@dataclass
class _Slot:
    process: multiprocessing.process.BaseProcess
    pipe: Connection
    started: bool = False
    born: float = field(default_factory=time.monotonic)

    def serving(self) -> bool:
        """Whether the worker has said it serves (reads its pipe without blocking)."""
        if not self.started and self.pipe.poll():
            with contextlib.suppress(EOFError, OSError):
                self.started = bool(self.pipe.recv())
        return self.started


Target = Callable[[socket.socket, dict[str, Any], Connection], None]


class Supervisor:
    """Starts, watches and stops one worker per socket of `sockets` (see the module
    docstring). `target` is the worker's entry point, ``target(sock, log_config,
    ready_pipe)``: it must send one message on the pipe once it serves."""

    def __init__(
        self,
        sockets: list[socket.socket],
        log_config: dict[str, Any],
        target: Target | None = None,
        graceful_timeout_s: int = DEFAULT_GRACEFUL_TIMEOUT_S,
    ) -> None:
        self.sockets, self.log_config = sockets, log_config
        self.grace_s = graceful_timeout_s + KILL_MARGIN_S
        self.target = _worker if target is None else target
        self.context = multiprocessing.get_context("spawn")
        self.stop = threading.Event()
        self.slots: list[_Slot] = []
        self.failed = False
        self.backoff = [0.0] * len(sockets)  # per worker: the pause before its next start
        self.due: dict[int, float] = {}  # workers waiting to be restarted: when
        self.replaced: set[int] = set()  # workers whose first process served, then died
        self.starts = 0
        self.reopened = 0  # sockets closed for a worker's wait, opened again for its start
        self.hup_pending: set[int] = set()  # workers a SIGHUP is still to be handed to
        self.signals: list[int] = []  # the SIGINTs and SIGTERMs that stopped it
        self.address = sockets[0].getsockname()[:2] if sockets else ("127.0.0.1", 0)

    def start_one(self, i: int) -> _Slot:
        receive, send = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=self.target,
            args=(self.sockets[i], self.log_config, send),
            name=f"llmroute-worker-{i}",
        )
        # started with SIGHUP ignored (an ignored signal stays so across the exec; a
        # handler does not): one forwarded while it starts would end it
        with _sighup_ignored():
            process.start()
        send.close()  # the worker holds its end
        self.starts += 1
        return _Slot(process, receive)

    def signal_all(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process.pid is not None and slot.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signum)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            log.info("SIGHUP: each worker reloads its registry")
            # handed on by `keep_alive`, to each worker once it serves: one still starting
            # has no handler yet (the HUP would end it) and may have read the file before
            self.hup_pending = set(range(len(self.slots)))
        else:
            self.signals.append(signum)
            self.stop.set()

    def run(self) -> int:
        """Serve until SIGINT/SIGTERM (or a worker that fails to start); the exit status:
        1 for a worker that failed to start, else as a single process's
        (`stopped_status`: 130 after Ctrl-C, 0 after SIGTERM)."""
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self.on_signal) for signum in handled}
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self) -> int:
        self.slots = [self.start_one(i) for i in range(len(self.sockets))]
        host, port = self.sockets[0].getsockname()[:2]
        log.info(
            "llmroute: %d workers on http://%s:%d, one socket each (SO_REUSEPORT); pids %s",
            len(self.sockets),
            f"[{host}]" if ":" in host else host,
            port,
            ", ".join(str(slot.process.pid) for slot in self.slots),
        )
        while not self.stop.wait(_POLL_S):
            self.keep_alive()
        self.shutdown()
        return 1 if self.failed else stopped_status(self.signals)

    def keep_alive(self) -> None:
        now = time.monotonic()
        self._hand_on_sighup()
        for i, when in list(self.due.items()):
            if now >= when:
                del self.due[i]
                self.hup_pending.discard(i)  # a new worker reads the file as it is
                if self.sockets[i].fileno() == -1:
                    try:
                        self.sockets[i] = self._reopened()
                    except OSError as exc:
                        log.error("worker %d cannot listen again: %s; trying again in 30s", i, exc)
                        self.due[i] = now + _BACKOFF_MAX_S
                        continue
                self.slots[i] = self.start_one(i)
        for i, slot in enumerate(self.slots):
            if i in self.due:
                continue
            served = slot.serving()  # read while it lives, not only from a dead one's pipe
            if slot.process.is_alive():
                continue
            code = slot.process.exitcode
            if not served and i not in self.replaced:
                log.error(
                    "a worker (pid %s) exited with status %s before serving (%.1f s after it "
                    "started; see its error above); stopping",
                    slot.process.pid,
                    code,
                    now - slot.born,
                )
                self.failed = True
                self.stop.set()
                return
            _forget_metrics(slot.process.pid)
            slot.pipe.close()
            young = now - slot.born < _STABLE_S
            self.backoff[i] = min(max(1.0, 2 * self.backoff[i]), _BACKOFF_MAX_S) if young else 0.0
            pause = f" in {self.backoff[i]:g}s" if self.backoff[i] else ""
            if served:
                log.warning(
                    "worker %s exited with status %s; starting another%s",
                    slot.process.pid,
                    code,
                    pause,
                )
            else:
                log.error(
                    "a replacement worker exited with status %s before serving (see its error "
                    "above); trying again%s while the other workers serve",
                    code,
                    pause,
                )
            self.replaced.add(i)
            self.due[i] = now + self.backoff[i]
            others_listen = any(s.fileno() != -1 for j, s in enumerate(self.sockets) if j != i)
            if self.backoff[i] and others_listen:
                # nobody accepts on its socket while it waits: the kernel would still hand
                # it a share of new connections, which would hang (up to 30 s); closed,
                # they go to the workers that serve (the last one open is kept: closed,
                # the port would be free for another process to take)
                self.sockets[i].close()

    def _hand_on_sighup(self) -> None:
        """The SIGHUP the supervisor got, to each worker that serves now (a dead one waiting
        to be restarted reads the file afresh)."""
        for i in list(self.hup_pending):
            slot = self.slots[i]
            if i in self.due or not slot.process.is_alive():
                self.hup_pending.discard(i)
            elif slot.serving() and slot.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signal.SIGHUP)
                self.hup_pending.discard(i)

    def _reopened(self) -> socket.socket:
        """A listening socket on the workers' address again, for a worker whose own was
        closed while it waited to be restarted."""
        sock = _listener(*self.address)
        sock.listen(_BACKLOG)
        self.reopened += 1
        return sock

    def shutdown(self) -> None:
        # This process's copies of the listening sockets go first: once each worker has
        # closed its own, nothing holds them, so new connections are refused at once (a
        # client or load balancer tries another replica) instead of queueing unaccepted
        # for the whole graceful drain and then getting an empty reply.
        for sock in self.sockets:
            sock.close()
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for slot in self.slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
        for slot in self.slots:
            if slot.process.is_alive():
                log.warning(
                    "worker %s did not stop within %gs; killing it", slot.process.pid, self.grace_s
                )
                slot.process.kill()
                slot.process.join(5)


def serve_workers(
    host: str,
    port: int,
    workers: int,
    log_config: dict[str, Any],
    graceful_timeout_s: int = DEFAULT_GRACEFUL_TIMEOUT_S,
) -> int:
    """Run `workers` gateway processes on `host`:`port` until SIGINT/SIGTERM; the exit
    status. The app comes from `APP` (the registry and settings from the environment).
    Raises `OSError` when the port is not free.

    Every socket listens before any worker starts, so connections that arrive while the
    workers start are spread and queued, not all given to the first worker up; a worker
    that is replaced at once hands its socket, with what is queued on it, to the next (one
    restarted after a pause has its socket closed meanwhile: what was queued is reset)."""
    port = free_port(host, port)
    sockets = [_listener(host, port) for _ in range(workers)]
    try:
        for sock in sockets:
            sock.listen(_BACKLOG)
        logging.config.dictConfig(log_config)  # the parent's own lines, as the workers'
        return Supervisor(sockets, log_config, graceful_timeout_s=graceful_timeout_s).run()
    finally:
        for sock in sockets:
            sock.close()
