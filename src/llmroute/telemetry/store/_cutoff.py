"""`Cutoff`: a client-side deadline for a PostgreSQL call, which psycopg lacks.

libpq bounds connecting (``connect_timeout``) but not an answer: a server that keeps
the connection open and stops answering (hung, its disk stalled, a proxy or failover in
between that holds the socket) left a call waiting forever. That was the decision log's
writer thread (the log stopped until the process restarted, dropping every record as
``queue_full``) or a worker thread of feedback or the dashboard, holding a pooled
connection for good. ``statement_timeout`` does not help: it is the server's, and the
server is what stopped answering; TCP keepalives do not either, as the server's kernel
still acknowledges.

A `Cutoff` shuts the connection's socket down when the call outlives its time: the call
then fails as a lost connection would (psycopg marks the connection broken, the pool
replaces it), and `fired` tells the caller why.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Cutoff"]


class Cutoff:
    """Cuts the connection a `watching` block uses once `after_s` seconds pass."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self.fired = False
        self._lock = threading.Lock()
        self._done = False

    @contextmanager
    def watching(self, conn: Any) -> Iterator[None]:
        """Watch `conn` (a psycopg connection) until the block ends; a cut after that
        is called off, so a connection back in the pool (lent to another call) is never
        shut down by this one's timer. An infinite `after_s` watches nothing."""
        if math.isinf(self.after_s):
            yield
            return
        with self._lock:
            self._done = False
        timer = threading.Timer(self.after_s, self._cut, (conn,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            with self._lock:
                self._done = True
            timer.cancel()

    def _cut(self, conn: Any) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            # a shutdown through a duplicate of its descriptor wakes the thread that
            # waits on it (EOF): closing the descriptor itself would not, and could
            # close another file given its number meanwhile
            with (
                contextlib.suppress(Exception),
                socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock,
            ):
                sock.shutdown(socket.SHUT_RDWR)
