"""The tests' `StallProxy` itself: once closed it holds nothing. Its accept thread sat
in ``accept()`` for the life of the process (closing a socket does not wake a thread
blocked on it), so the port kept listening; a connection not yet taken when it closed
(the accept thread late under load) was taken after its sockets were closed, and both
of its sockets were left open: each an unraisable ``ResourceWarning`` in whichever test
was running when the proxy's last thread let go of it."""

from __future__ import annotations

import gc
import socket
import sys
from typing import Any

import pytest
from gateway_proc import wait_for
from stall_proxy import silent_server, stall_proxy


def test_a_closed_proxy_takes_no_connection() -> None:
    with silent_server() as target, stall_proxy(target) as (proxy, _):
        port = proxy.port
        with socket.create_connection(("127.0.0.1", port)):  # its thread back in accept()
            wait_for("the connection taken", lambda: len(proxy._sockets) == 2, 10)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_connections_made_as_it_closes_are_closed_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    raised: list[str] = []

    def hook(unraisable: Any) -> None:
        raised.append(f"{unraisable.object!r}: {unraisable.exc_value!r}")

    monkeypatch.setattr(sys, "unraisablehook", hook)
    with silent_server() as target:
        for _ in range(20):  # bounded: each a connection racing the close
            with stall_proxy(target) as (proxy, _):
                port = proxy.port
                clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
            for client in clients:
                client.close()
            del proxy
            gc.collect()
    assert raised == []
