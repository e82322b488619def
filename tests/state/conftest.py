"""Fixtures of the state tests (Redis itself: ``redis_namespace`` in tests/conftest.py)."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
