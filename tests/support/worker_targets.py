"""Worker entry points for `llmroute.server.workers.Supervisor` tests (importable by the
spawned worker processes, which get the test run's sys.path)."""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Any


def fails_at_startup(sock: socket.socket, log_config: dict[str, Any], ready: Connection) -> None:
    sys.exit(3)


def serves_then_exits(sock: socket.socket, log_config: dict[str, Any], ready: Connection) -> None:
    ready.send(True)
    time.sleep(0.05)
    sys.exit(0)


def second_worker_breaks_after_one_run(
    sock: socket.socket, log_config: dict[str, Any], ready: Connection
) -> None:
    """Worker 0 serves until stopped. Worker 1 serves once, then every replacement fails
    before serving (a marker file in $WORKER_MARKERS says it has run)."""
    name = multiprocessing.current_process().name
    marker = os.path.join(os.environ["WORKER_MARKERS"], name)
    if name.endswith("-1"):
        if os.path.exists(marker):
            sys.exit(3)
        open(marker, "w").close()
        ready.send(True)
        time.sleep(0.05)
        sys.exit(0)
    ready.send(True)
    while True:
        time.sleep(0.1)
