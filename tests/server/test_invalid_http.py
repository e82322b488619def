"""What `llmroute serve` answers of bytes that are not an HTTP request
(`llmroute.server.invalid_http`): the error JSON of every other client error, 400, the
connection closed; whatever the request said is not repeated; each is counted, and the
first logged. End to end: the bytes are written to a raw socket, as no HTTP client
would send them."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_proc import ECHO_ONLY, Served, serve_text, wait_for
from prometheus_client.parser import text_string_to_metric_families

from llmroute.server.invalid_http import ANSWER_CODE

HOST = b"Host: 127.0.0.1\r\n"
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
NOT_HTTP = {
    "a garbage request line": b"GARBAGE\r\n\r\n",
    "a space in the method": b"GE T /v1/models HTTP/1.1\r\n" + HOST + b"\r\n",
    "an unknown HTTP version": b"GET /v1/models HTTP/9.9\r\n" + HOST + b"\r\n",
    "a control byte in a header": b"GET /v1/models HTTP/1.1\r\n" + HOST + b"X-A: a\x01b\r\n\r\n",
    "a space in a header name": b"GET /v1/models HTTP/1.1\r\n" + HOST + b"Bad Name: x\r\n\r\n",
    "a header without a colon": b"GET /v1/models HTTP/1.1\r\n" + HOST + b"NoColon\r\n\r\n",
    "a non-ASCII path": "GET /v1/modèls HTTP/1.1\r\n".encode() + HOST + b"\r\n",
    "a Content-Length that is not a number": CHAT + b"Content-Length: abc\r\n\r\n",
    "Content-Length beside chunked": CHAT
    + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "an unknown transfer coding": CHAT + b"Transfer-Encoding: gzip\r\n\r\n",
    "a broken chunk size": CHAT + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
    # the app is already reading the body when the second chunk's size is found broken
    "a broken second chunk": CHAT + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\nQQ\r\n",
    "HTTP/2 (prior knowledge)": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "TLS (a ClientHello)": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_text(ECHO_ONLY, tmp_path_factory.mktemp("invalid_http")) as served:
        yield served


def _exchange(url: str, data: bytes) -> bytes:
    """Write `data` on a new connection; all the server sent until it closed it (a
    server that kept it open fails the test by the socket's timeout)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _invalid_http_count(served: Served) -> float:
    """``llmroute_invalid_http_total`` as /metrics reads now."""
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llmroute_invalid_http_total"
    )


def _answer(received: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("data", NOT_HTTP.values(), ids=NOT_HTTP.keys())
def test_what_is_not_http_gets_the_error_json(gateway: Served, data: bytes) -> None:
    status, headers, body = _answer(_exchange(gateway.url, data))
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)  # all of it, and nothing after
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        None,
        ANSWER_CODE,
    )
    assert "HTTP/1.1" in error["message"]
    assert "date" in headers and "server" in headers  # uvicorn's, as on every answer


def test_nothing_of_the_request_is_repeated_and_the_gateway_serves_on(gateway: Served) -> None:
    secret = b"sk-not-for-the-answer-0123456789"
    data = b"GET /v1/models HTTP/1.1\r\n" + HOST + b"Authorization: Bearer " + secret + b"\r\n"
    data += b"X-Bad: \x00" + b"<script>" * 100 + b"\r\n\r\n"
    received = _exchange(gateway.url, data)
    status, _, body = _answer(received)
    assert status == 400 and json.loads(body)["error"]["code"] == ANSWER_CODE
    assert secret not in received and b"<script>" not in received
    # the next connection is served as usual
    reply = httpx.get(f"{gateway.url}/v1/models", timeout=10)
    assert reply.status_code == 200 and reply.json()["object"] == "list"
    assert "Traceback" not in gateway.log_text()


@pytest.mark.parametrize(
    "data",
    [
        b"GET /v1/models HTTP/1.1\r\nHost: evil.example\r\n" + HOST + b"\r\n",
        b"GET /v1/models HTTP/1.1\r\n" + HOST + b"Host: evil.example\r\n\r\n",
        b"GET /health HTTP/1.1\r\n" + HOST + HOST + b"\r\n",
        CHAT + b"Host: 127.0.0.2\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["other-first", "other-last", "health-same-twice", "chat"],
)
def test_more_than_one_host_header_is_a_400_and_the_connection_closed(
    gateway: Served, data: bytes
) -> None:
    """RFC 9112 (3.2): a server MUST answer 400 to a request with more than one Host
    field line. httptools passes both on: the loopback check read the last, so
    ``Host: evil.example`` then ``Host: 127.0.0.1`` was served (200), while a proxy in
    front may have read the first. Counted and said as the parser's refusals are."""
    before = _invalid_http_count(gateway)
    received = _exchange(gateway.url, data)  # read until the server closes
    status, headers, body = _answer(received)
    assert status == 400, body
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        None,
        ANSWER_CODE,
    )
    assert "more than one Host header" in error["message"]
    assert b"evil.example" not in received and b"127.0.0.2" not in received
    assert _invalid_http_count(gateway) == before + 1
    assert "a request with more than one Host header from 127.0.0.1" in gateway.log_text()
    ok = b"GET /health HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    assert _answer(_exchange(gateway.url, ok))[0] == 200  # one Host: served


@pytest.mark.parametrize(
    "data",
    [
        b"GET /health HTTP/1.1\r\n" + HOST + b"X-Forwarded-Host: evil.example\r\n",
        b"GET http://127.0.0.1/health HTTP/1.1\r\n" + HOST,
        b"GET /health HTTP/1.1\r\n" + HOST + b"X-Host: 127.0.0.2\r\n",
    ],
    ids=["forwarded-host", "absolute-form", "other-header"],
)
def test_one_host_header_and_others_naming_hosts_are_served(gateway: Served, data: bytes) -> None:
    """Only a second ``Host`` field line is refused: a proxy's ``X-Forwarded-Host``, an
    absolute-form target or another header naming a host is not one."""
    before = _invalid_http_count(gateway)
    status, _, body = _answer(_exchange(gateway.url, data + b"Connection: close\r\n\r\n"))
    assert status == 200, body
    assert _invalid_http_count(gateway) == before


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"GET http://evil.example/v1/models HTTP/1.1\r\n" + HOST, "absolute-form"),
        (b"GET http://evil.example/health HTTP/1.1\r\n" + HOST, "absolute-form"),
        (b"GET http://127.0.0.1/v1/models HTTP/1.1\r\nHost: evil.example\r\n", "absolute-form"),
        (b"GET http://u:evil.example@127.0.0.1/health HTTP/1.1\r\n" + HOST, "absolute-form"),
        (b"GET /v1/models HTTP/1.1\r\n", "without a Host"),
        (b"GET /health HTTP/1.1\r\n", "without a Host"),
        (b"GET /v1/models HTTP/1.1\r\nHost: \r\n", "an empty Host"),
        (b"GET /health HTTP/1.1\r\nHost:\r\n", "an empty Host"),
        (b"GET /health HTTP/1.0\r\nHost: \r\n", "an empty Host"),
        (b"GET /health HTTP/1.1\r\nHost: :8000\r\n", "an empty Host"),
        (b"GET /v1/models HTTP/1.0\r\nHost: :80\r\n", "an empty Host"),
    ],
    ids=[
        "other-authority",
        "other-authority-health",
        "other-host",
        "credentials",
        "none",
        "none-health",
        "empty",
        "empty-health",
        "empty-http-1.0",
        "port-alone-health",
        "port-alone-http-1.0",
    ],
)
def test_a_target_not_its_host_or_no_host_on_http_1_1_is_a_400(
    gateway: Served, data: bytes, said: str
) -> None:
    """RFC 9112: an absolute-form target's authority wins over Host (3.2.2), and an
    HTTP/1.1 request without Host, or any whose Host names no host (empty, or a port
    alone), is a 400 (3.2: an empty Host is only for a target without an authority;
    RFC 9110, 4.2.1: an http URI with an empty host is invalid). uvicorn keeps only the
    target's path, so ``GET http://evil.example/v1/models`` with ``Host: 127.0.0.1`` was
    served as a request to 127.0.0.1 (200), and so was one with no Host, or an empty one.
    Refused as a second Host is: nothing repeated, counted, said."""
    before = _invalid_http_count(gateway)
    received = _exchange(gateway.url, data + b"Connection: close\r\n\r\n")
    status, headers, body = _answer(received)
    assert status == 400, body
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        None,
        ANSWER_CODE,
    )
    told = {"absolute-form": "absolute URL", "without a Host": "no Host header"}
    assert told.get(said, "Host header names no host") in error["message"]
    assert b"evil.example" not in received
    assert _invalid_http_count(gateway) == before + 1
    assert f"{said} " in gateway.log_text()


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET HTTP://127.0.0.1:80/health HTTP/1.1\r\n" + HOST, 200),
        (b"GET http://LOCALHOST/v1/models HTTP/1.1\r\nHost: localhost\r\n", 200),
        (b"GET /health HTTP/1.0\r\n", 200),
        (b"GET http://127.0.0.1/v1/models HTTP/1.0\r\n", 200),
        (b"GET http://evil.example/v1/models HTTP/1.0\r\n", 400),
    ],
    ids=["same-default-port", "same-case", "http-1.0", "http-1.0-target", "http-1.0-target-other"],
)
def test_an_agreeing_target_and_http_1_0_without_host_are_read_by_the_target(
    gateway: Served, data: bytes, status: int
) -> None:
    """A target whose authority is the Host (case and default port aside) is served; an
    HTTP/1.0 request may lack Host, and one with an absolute target is read as a request
    to its authority: the loopback check refuses another name (``invalid_host``)."""
    before = _invalid_http_count(gateway)
    got, _, body = _answer(_exchange(gateway.url, data + b"Connection: close\r\n\r\n"))
    assert got == status, body
    if status == 400:
        assert json.loads(body)["error"]["code"] == "invalid_host"
    assert _invalid_http_count(gateway) == before


def test_with_workers_each_worker_answers_so(tmp_path: Path) -> None:
    """--workers N: each worker process builds its own uvicorn server."""
    with serve_text(ECHO_ONLY, tmp_path, ["--workers", "2"]) as served:
        for _ in range(4):  # whichever worker takes the connection
            status, headers, body = _answer(
                _exchange(served.url, NOT_HTTP["a garbage request line"])
            )
            assert status == 400 and headers["content-type"] == "application/json"
            assert json.loads(body)["error"]["code"] == ANSWER_CODE
        for _ in range(2):  # every worker's, whichever one is scraped
            assert _invalid_http_count(served) == 4


def test_each_is_counted_and_the_first_logged(tmp_path: Path) -> None:
    """``llmroute_invalid_http_total`` counts each; one warning line says the first
    (with the client's address), the ones after it within a minute none, and uvicorn's
    own line a request is held back: whoever can connect can send such bytes as fast as
    they like."""
    with serve_text(ECHO_ONLY, tmp_path) as served:
        assert _invalid_http_count(served) == 0
        for data in list(NOT_HTTP.values())[:5]:
            assert _answer(_exchange(served.url, data))[0] == 400
        assert _invalid_http_count(served) == 5

        def lines() -> list[str]:
            return [line for line in served.log_text().splitlines() if "HTTP/1.1 req" in line]

        wait_for("the warning", lambda: bool(lines()), 10, served.log)
        reply = httpx.get(f"{served.url}/v1/models", timeout=10)  # and it serves on
        assert reply.status_code == 200
        logged = lines()
        log_text = served.log_text()
    assert len(logged) == 1, logged
    assert "WARNING" in logged[0], logged
    assert (
        "not an HTTP/1.1 request from 127.0.0.1: answered 400 invalid_http_request" in (logged[0])
    )
    assert "Invalid HTTP request received." not in log_text


def test_an_upgrade_it_does_not_take_is_served_and_said_once(tmp_path: Path) -> None:
    """A request asking to upgrade to a protocol the gateway does not speak (``h2c``;
    a WebSocket, no WebSocket library being installed) is served as HTTP/1.1; uvicorn's
    two warnings about it are said for the first, then at most once a minute. They were
    two lines a request, at any log level, for whoever sends the header."""
    upgrade = {"Connection": "Upgrade", "Upgrade": "h2c"}
    with serve_text(ECHO_ONLY, tmp_path) as served:
        for _ in range(4):
            reply = httpx.get(f"{served.url}/v1/models", headers=upgrade, timeout=10)
            assert reply.status_code == 200

        def said() -> list[str]:
            lines = served.log_text().splitlines()
            return [line for line in lines if "Unsupported upgrade request." in line]

        wait_for("the warning", lambda: bool(said()), 10, served.log)
        httpx.get(f"{served.url}/v1/models", timeout=10)  # a line after them: all written
        log_text = served.log_text()
    assert len(said()) == 1, said()
    assert log_text.count("No supported WebSocket library detected") <= 1, log_text
