"""A large request body (past 1 MiB) is parsed in a worker thread: 3 MB of token ids
took ~110 ms on the event loop (each integer checked by a Python call), every other
request of the worker waiting. Its errors are told as a small body's."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from loop_ticks import ticks_while
from starlette.requests import Request
from starlette.types import Message

from llmroute.server import body as body_module
from llmroute.server.body import read_json_object
from llmroute.server.errors import GatewayError
from llmroute.untrusted_json import where_not_finite

LIMIT = 8 << 20


def _request(body: bytes) -> Request:
    chunks = [body[at : at + 65536] for at in range(0, len(body), 65536)]

    async def receive() -> Message:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    headers = [(b"content-type", b"application/json")]
    scope: dict[str, Any] = {"type": "http", "method": "POST", "headers": headers}
    return Request(scope, receive)


def test_a_large_body_is_parsed_while_the_event_loop_runs() -> None:
    sent = {"model": "e", "input": [[1234] * 500] * 1000}  # token ids: 3 MB
    body = json.dumps(sent).encode()
    read, ticks = ticks_while(lambda: read_json_object(_request(body), LIMIT))
    assert read == sent
    assert ticks > 3  # the integers' checks let the GIL go: the loop takes turns


def test_a_small_body_is_parsed_at_once() -> None:
    sent = {"model": "e", "input": [[1234] * 500] * 10}
    read, ticks = ticks_while(lambda: read_json_object(_request(json.dumps(sent).encode()), LIMIT))
    assert read == sent and ticks == 1


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"input": [' + b"1," * (1 << 20) + b"NaN]}", "NaN, Infinity"),
        (
            b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b", " + b" " * (1 << 20) + b"}",
            "nests",
        ),
        (b'{"input": "' + b"x" * (1 << 20) + b'\xff"}', "not UTF-8"),
        (b"[" + b"1," * (1 << 20) + b"1]", "must be a JSON object"),
    ],
)
def test_a_large_bodys_errors_are_told_as_a_small_ones(body: bytes, said: str) -> None:
    with pytest.raises(GatewayError) as raised:
        asyncio.run(read_json_object(_request(body), LIMIT))
    assert raised.value.status == 400 and said in str(raised.value)


def test_where_a_large_bodys_nan_is_is_found_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 400's ``param`` is found by reading the body again and walking it: for 3 MB of
    token ids that took ~0.6 s on the event loop (a path written for every number),
    after the parse itself had been moved off it. It is found in the joins' threads,
    and a small body's at once."""
    threads: list[str] = []

    def where(text: str | bytes) -> str | None:
        threads.append(threading.current_thread().name)
        return where_not_finite(text)

    monkeypatch.setattr(body_module, "where_not_finite", where)
    ids = json.dumps([[1234] * 500] * 1000)
    for sent, param in [
        ('{"model": "e", "temperature": NaN, "input": ' + ids + "}", "temperature"),
        ('{"model": "e", "input": ' + ids[:-1] + ", [1, -Infinity]]}", "input[1000][1]"),
        ('{"model": "e", "input": [[1], [2, 1e400]]}', "input[1][1]"),
    ]:
        with pytest.raises(GatewayError) as raised:
            asyncio.run(read_json_object(_request(sent.encode()), LIMIT))
        assert raised.value.status == 400 and raised.value.param == param
    assert [name.startswith("llmroute-join") for name in threads] == [True, True, False]
