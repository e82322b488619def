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
import redis
from gateway_proc import wait_for
from redis_service import REDIS_URL
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


def test_refusing_resets_every_connection_until_it_resumes(_redis_available: None) -> None:
    """`refuse` (a Redis that went away, for the chaos harness): the connections it
    holds are reset and each new one is reset as it is taken; `resume` passes them on
    again."""
    with stall_proxy(REDIS_URL) as (proxy, url):
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            assert client.ping()
            proxy.refuse()
            for _ in range(2):  # the connection it held, then a new one
                with pytest.raises(redis.ConnectionError):
                    client.ping()
            assert proxy.refused >= 1
            proxy.resume()
            assert client.ping()
        finally:
            client.close()


def test_unlistening_refuses_connections_until_it_listens_again(_redis_available: None) -> None:
    """`unlisten` (a server that stopped, for the chaos harness's PostgreSQL): the
    connections it holds are reset and nothing listens on its port; `listen` takes
    connections on the same port again."""
    with stall_proxy(REDIS_URL) as (proxy, url):
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            assert client.ping()
            proxy.unlisten()
            with pytest.raises(redis.ConnectionError):
                client.ping()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", proxy.port), timeout=5).close()
            proxy.listen()
            assert client.ping()
        finally:
            client.close()


def test_a_reply_cut_once_lets_the_next_through(_redis_available: None) -> None:
    """`cut_replies(once=True)` (a COMMIT whose answer was lost, for the decision log's
    tests): one reply cut, its connection reset; the next call is answered."""
    with stall_proxy(REDIS_URL) as (proxy, url):
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            assert client.ping()
            proxy.cut_replies(once=True)
            with pytest.raises(redis.ConnectionError):
                client.echo("cut")
            assert not proxy.holding()
            assert client.ping()
        finally:
            client.close()
