"""Worker entry points for `llmroute.server.workers.Supervisor` tests (importable by the
spawned worker processes, which get the test run's sys.path)."""

from __future__ import annotations

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
