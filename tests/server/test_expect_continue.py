"""``Expect: 100-continue`` on `llmroute serve` (`llmroute.server.expect`), on a raw
socket as curl and the .NET and Java clients send it: headers first, the body only after
``100 Continue``. An answer given before the body is read (a 413 by Content-Length, a
401, a quota's 429) says ``Connection: close`` and the connection is closed (it stayed
open, waiting for a body the client would not send); one that reads it keeps it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_proc import ECHO_ONLY, Served, serve_text
from rate_windows import clear_of_a_minute_end

from llmroute.server.settings import DEFAULT_MAX_BODY_BYTES

KEY = "sk-expect-0123456789"
ONCE_KEY = "sk-expect-once-0123456789"
REGISTRY = (
    ECHO_ONLY
    + """
auth:
  keys:
    - {name: team, key_env: LLMROUTE_TEST_EXPECT_KEY}
    - {name: once, key_env: LLMROUTE_TEST_EXPECT_ONCE_KEY, rpm: 1}
"""
)
_BEFORE_KEEPALIVE_ENDS_S = 2.0
BODY = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello"}]}).encode()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {"LLMROUTE_TEST_EXPECT_KEY": KEY, "LLMROUTE_TEST_EXPECT_ONCE_KEY": ONCE_KEY}
    with serve_text(REGISTRY, tmp_path_factory.mktemp("expect"), env=env) as served:
        yield served


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _head(key: str | None, length: int) -> bytes:
    lines = [
        b"POST /v1/chat/completions HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Content-Type: application/json",
        b"Content-Length: %d" % length,
        b"Expect: 100-continue",
    ]
    if key is not None:
        lines.append(b"Authorization: Bearer " + key.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One final answer (a ``100 Continue`` before it skipped), by its Content-Length."""
    received = b""
    while True:
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        head, _, received = received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        if int(status_line.split()[1]) != 100:
            break
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    while len(received) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk
        received += chunk
    return int(status_line.split()[1]), headers, received


def _refused_and_closed(url: str, key: str | None, length: int) -> tuple[int, dict[str, str]]:
    """The answer to headers alone, then the end of the connection, well before
    uvicorn's keep-alive timeout (5 s) would end it: a server that keeps it open fails
    by the socket's timeout (a client reusing it meanwhile had its request read as the
    body, and no answer)."""
    with _connect(url) as sock:
        sock.sendall(_head(key, length))
        status, headers, body = _answer(sock)
        assert json.loads(body)["error"]["message"]
        sock.settimeout(_BEFORE_KEEPALIVE_ENDS_S)
        assert sock.recv(65536) == b""  # closed: nothing more comes
    return status, headers


def test_a_413_by_content_length_closes_the_connection(gateway: Served) -> None:
    status, headers = _refused_and_closed(gateway.url, KEY, 10**9)
    assert status == 413
    assert headers["connection"] == "close"


def test_a_body_just_past_the_limit_is_refused_before_it_is_sent(gateway: Served) -> None:
    # not asked for (100 Continue) and drained, as one sent without the header is
    status, headers = _refused_and_closed(gateway.url, KEY, DEFAULT_MAX_BODY_BYTES + 1)
    assert status == 413
    assert headers["connection"] == "close"


def test_a_401_before_the_body_closes_the_connection(gateway: Served) -> None:
    status, headers = _refused_and_closed(gateway.url, None, len(BODY))
    assert status == 401
    assert headers["connection"] == "close"


def test_a_quota_429_before_the_body_closes_the_connection(gateway: Served) -> None:
    clear_of_a_minute_end()
    with _connect(gateway.url) as sock:  # the key's one request a minute
        sock.sendall(_head(ONCE_KEY, len(BODY)))
        sock.sendall(BODY)
        assert _answer(sock)[0] == 200
    status, headers = _refused_and_closed(gateway.url, ONCE_KEY, len(BODY))
    assert status == 429
    assert headers["connection"] == "close"


def test_an_answer_that_read_the_body_keeps_the_connection(gateway: Served) -> None:
    with _connect(gateway.url) as sock:
        for _ in range(2):  # the second on the same connection
            sock.sendall(_head(KEY, len(BODY)))
            continued = b""
            while b"\r\n\r\n" not in continued:
                continued += sock.recv(65536)
            assert continued.startswith(b"HTTP/1.1 100 "), continued
            sock.sendall(BODY)
            status, headers, body = _answer(sock)
            assert status == 200, body
            assert "connection" not in headers
    assert "Traceback" not in Path(gateway.log).read_text()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_an_expect_without_a_body_keeps_the_connection(gateway: Served, method: str) -> None:
    """Nothing is left unread after a request without a body (a client should not send
    Expect then, some do): two on one connection are both answered (it was closed)."""
    ask = b"%s /health HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n\r\n"
    with _connect(gateway.url) as sock:
        for _ in range(2):
            sock.sendall(ask % method.encode())
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                assert chunk, received  # closed after the first
                received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert b"connection: close" not in head.lower(), head
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while method == "GET" and len(body) < length:
                body += sock.recv(65536)
