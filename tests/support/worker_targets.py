"""Worker entry points for `llmroute.server.workers.Supervisor` tests (importable by the
spawned worker processes, which get the test run's sys.path)."""

from __future__ import annotations

import socket
import sys
from multiprocessing.connection import Connection
from typing import Any


def fails_at_startup(sock: socket.socket, log_config: dict[str, Any], ready: Connection) -> None:
    sys.exit(3)
