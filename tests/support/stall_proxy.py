"""A TCP proxy on 127.0.0.1 in front of a real server (the tests' Redis), which can
`stall`: it keeps its connections open but passes nothing on, either way, until it
`resume`s, as a server that stopped answering does; or `cut_replies`: a connection is
reset where its reply would come back, once the server has made the command. Replies
can be held or cut from a given command on (`stall_replies`'s and `cut_replies`' `on`:
``b"SCRIPT"``, the reply to the first command that holds it, and those after; with
`cut_replies`' `once`, that reply only). One
gateway pointed at it sees its Redis hang for as long as a test needs, while every
other client of that Redis (other tests, running alongside) is served as usual, which
``CLIENT PAUSE`` cannot do. Or `refuse`: every connection reset, and each new one reset
as it is taken, as a Redis that went away (until `resume`). Or `slow`: each reply held that long
before it is passed on, as a Redis far away or overloaded. Or `unlisten`: nothing
listening on its port (until `listen`), as a server that stopped. And `silent_server`: one
that never answers at all (an OpenTelemetry collector that hangs)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

__all__ = ["StallProxy", "silent_server", "stall_proxy"]

_POLL_S = 0.05


class StallProxy:
    """Forwards each connection to `target` (host, port; or a Unix socket's path) on
    two threads."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        listener = socket.create_server(("127.0.0.1", 0))
        self._listener: socket.socket | None = listener
        self.port: int = listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()  # client to server
        self._replying = threading.Event()  # server to client
        self._replying.set()
        self._cutting = threading.Event()  # a reply resets its connection instead
        self._cut_once = False  # the next reply cut only (`cut_replies`' `once`)
        self._refusing = threading.Event()  # every connection reset, new ones too
        self.refused = 0  # connections reset as they were taken, while refusing
        self.delay_s = 0.0  # each reply held this long before it goes on (`slow`)
        # what a command holding these bytes sets off, before it is passed on
        self._on: tuple[bytes, threading.Event, bool] | None = None
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._pumps: list[threading.Thread] = []
        self._lock = threading.Lock()
        # polled, not blocked in: closing a socket does not wake a thread in its
        # accept(), which kept the port listening after `close`
        listener.settimeout(_POLL_S)
        self._accepting = threading.Thread(target=self._accept, name="stall-proxy", daemon=True)
        self._accepting.start()

    def stall(self) -> None:
        self._flowing.clear()
        self._replying.clear()

    def stall_replies(self, on: bytes | None = None) -> None:
        """Commands still reach the server, but its replies are held: a call made
        there whose client gives up waiting for the answer. With `on`, from the reply
        to the first command that holds those bytes."""
        self._set(self._replying, False, on)

    def cut_replies(self, on: bytes | None = None, *, once: bool = False) -> None:
        """Commands still reach the server, but where a reply comes back its client's
        connection is reset instead (and the server's closed): a call the server made
        whose client sees the connection lost after it was sent. With `on`, from the
        reply to the first command that holds those bytes; with `once`, that reply only
        (then replies come back again)."""
        self._cut_once = once
        self._set(self._cutting, True, on)

    def holding(self) -> bool:
        """Whether replies are held or cut now: `stall`, or `stall_replies` or
        `cut_replies` once the command their `on` waits for has come (its reply the
        first held)."""
        return not self._replying.is_set() or self._cutting.is_set()

    def _set(self, event: threading.Event, value: bool, on: bytes | None) -> None:
        if on is not None:
            self._on = (on, event, value)
        elif value:
            event.set()
        else:
            event.clear()

    def slow(self, delay_s: float) -> None:
        """Hold each reply (each piece read from the server) `delay_s` before passing it
        on, until `resume`: every round trip takes at least that long."""
        self.delay_s = delay_s

    def refuse(self) -> None:
        """Reset every connection, and each new one as it is taken, until `resume`."""
        self._refusing.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _reset(sock)

    def unlisten(self) -> None:
        """Reset every connection and stop listening: a new one is refused (nothing
        listens on the port), as a server that went away, until `listen`."""
        self.refuse()
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            self._accepting.join(timeout=10)

    def listen(self) -> None:
        """Listen again on the same port after `unlisten`, and pass connections on."""
        self.resume()
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen()
            listener.settimeout(_POLL_S)
            self._listener = listener
        self._accepting = threading.Thread(target=self._accept, name="stall-proxy", daemon=True)
        self._accepting.start()

    def resume(self) -> None:
        self._on = None
        self.delay_s = 0.0
        self._refusing.clear()
        self._cutting.clear()
        self._flowing.set()
        self._replying.set()

    def close(self) -> None:
        """Stop accepting, close every connection, and wait for the threads: nothing is
        left for the collector (an unclosed socket is a ResourceWarning in a later test)."""
        self._closed.set()
        self.resume()
        self._accepting.join(timeout=10)
        with self._lock:
            if self._listener is not None:
                self._listener.close()
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            pumps = list(self._pumps)
        for pump in pumps:
            pump.join(timeout=10)

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None and not self._closed.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing.is_set():
                self.refused += 1
                _reset(client)
                continue
            try:
                server = _connected(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed.is_set():  # taken as it closed: `close` would miss them
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
                for src, dst, gate in (
                    (client, server, self._flowing),
                    (server, client, self._replying),
                ):
                    pump = (src, dst, gate, gate is self._replying)
                    thread = threading.Thread(target=self._pump, args=pump, daemon=True)
                    self._pumps.append(thread)
                    thread.start()

    def _cut(self, data: bytes, src: socket.socket, dst: socket.socket, replies: bool) -> bool:
        """Whether `data` read from `src` resets the connection rather than going on to
        `dst` (a reply, while `cut_replies`). A command holding the bytes that
        `stall_replies` or `cut_replies` was given sets that off first."""
        if not replies:
            if (on := self._on) is not None and on[0] in data:
                self._on = None
                self._set(on[1], on[2], None)
            return False
        if not self._cutting.is_set():
            return False
        if self._cut_once:
            self._cut_once = False
            self._cutting.clear()
        _reset(dst)
        with contextlib.suppress(OSError):
            src.close()
        return True

    def _pump(
        self, src: socket.socket, dst: socket.socket, gate: threading.Event, replies: bool
    ) -> None:
        try:
            src.settimeout(_POLL_S)
        except OSError:  # closed (`close`) before this thread started
            return
        while not self._closed.is_set():
            if not gate.wait(_POLL_S):
                continue  # stalled: nothing read, so nothing passed on
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if self._cut(data, src, dst, replies):
                return
            if replies and self.delay_s:
                time.sleep(self.delay_s)
            while not gate.wait(_POLL_S):  # read as it stalled: held until resumed
                if self._closed.is_set():
                    return
            try:
                dst.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _reset(sock: socket.socket) -> None:
    """Close `sock` with a reset (RST), not a close (FIN)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _connected(target: tuple[str, int] | str) -> socket.socket:
    if isinstance(target, tuple):
        return socket.create_connection(target, timeout=5)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(target)
    except OSError:
        sock.close()
        raise
    return sock


@contextmanager
def stall_proxy(url: str) -> Iterator[tuple[StallProxy, str]]:
    """A `StallProxy` in front of the Redis at `url` (a ``unix://`` one too), and the
    ``redis://`` URL that goes through it."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        proxy = StallProxy(parts.path)
        parts = parts._replace(scheme="redis", path="/0")
    else:
        proxy = StallProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    netloc = f"127.0.0.1:{proxy.port}"
    if parts.username or parts.password:
        netloc = f"{parts.netloc.rpartition('@')[0]}@{netloc}"
    try:
        yield proxy, urlunsplit(parts._replace(netloc=netloc))
    finally:
        proxy.close()


@contextmanager
def silent_server() -> Iterator[str]:
    """A server on 127.0.0.1 that accepts connections and reads what comes but never
    answers, as a collector that hangs: its ``http://`` URL, until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    closed = threading.Event()
    held: list[socket.socket] = []

    def read(conn: socket.socket) -> None:
        conn.settimeout(_POLL_S)
        while not closed.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def accept() -> None:
        listener.settimeout(_POLL_S)
        while not closed.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            threading.Thread(target=read, args=(conn,), daemon=True).start()

    accepting = threading.Thread(target=accept, name="silent-server", daemon=True)
    accepting.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        closed.set()
        accepting.join()
        listener.close()
        for conn in held:
            with contextlib.suppress(OSError):
                conn.close()
