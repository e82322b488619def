"""A client that hangs up is a 499 wherever it leaves: before its whole body came (not
a 500 with a traceback), as soon as it has sent it all (its decision logged, once), and
while its request is dispatched even when a library swallows the cancel that stops the
work (Python 3.11's `asyncio.wait_for`, around every command redis-py sends: CPython
gh-86296)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_proc import ECHO_ONLY, serve_text, wait_for
from starlette.requests import Request

from llmroute.server import chat

_PATHS = ("/v1/chat/completions", "/v1/responses", "/v1/messages")


def _metric_lines(url: str) -> list[str]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return [line for line in text.splitlines() if line.startswith("llmroute_api_errors_total{")]


def test_a_client_gone_before_its_whole_body_came_is_a_499_not_a_500(tmp_path: Path) -> None:
    with serve_text(ECHO_ONLY, tmp_path) as served:
        port = int(served.url.rsplit(":", 1)[1])
        for path in _PATHS:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    "Content-Length: 100\r\n\r\n"
                )
                sock.sendall(head.encode() + b'{"model": ')  # 10 of the 100 bytes
                time.sleep(0.2)  # the handler is reading the body when the client goes

        def all_counted() -> bool:
            return sum(" 1.0" in line for line in _metric_lines(served.url)) == len(_PATHS)

        wait_for("the three hang-ups counted", all_counted, 10, served.log)
        lines = _metric_lines(served.url)
        log = served.log_text()
    assert sorted(lines) == [
        'llmroute_api_errors_total{api="chat",status="499"} 1.0',
        'llmroute_api_errors_total{api="messages",status="499"} 1.0',
        'llmroute_api_errors_total{api="responses",status="499"} 1.0',
    ]
    assert "unhandled error" not in log and "Traceback" not in log


# the echo model answers after 2 s: every client below has long gone by then
_SLOW_ECHO = ECHO_ONLY.replace("{kind: echo}", "{kind: echo, delay_s: 2}").replace(
    "telemetry: {enabled: false}\n", ""
)
_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "small", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"model": "small", "input": "hi"},
    "/v1/messages": {
        "model": "small",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
    },
}


def _tags_logged(db: Path) -> list[tuple[str, int, str]]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db)) as con:
        try:
            return con.execute("select tags, status, error from decisions").fetchall()
        except sqlite3.OperationalError:  # not made yet
            return []


def test_a_client_gone_once_its_whole_request_came_is_logged_once(tmp_path: Path) -> None:
    # the chaos benchmark's clients that give up after a few ms: one that gave up after
    # its request was written whole must be in the decision log (one that gave up
    # before, opening its connection, sent nothing)
    db = tmp_path / "log.db"
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"}
    sent = []
    with serve_text(_SLOW_ECHO, tmp_path, env=env) as served:
        port = int(served.url.rsplit(":", 1)[1])
        for n in range(4):
            for path, body in _BODIES.items():
                tag = f"gone={path.rsplit('/', 1)[1]}-{n}"
                data = json.dumps(body).encode()
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: application/json\r\nx-llmroute-tags: {tag}\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n"
                )
                with socket.create_connection(("127.0.0.1", port)) as sock:
                    sock.sendall(head.encode() + data)  # all of it, then gone at once
                sent.append(json.dumps([tag]))

        def all_logged() -> bool:
            return len(_tags_logged(db)) >= len(sent)

        wait_for("every request logged", all_logged, 20, served.log)
        time.sleep(0.5)  # a second row for any of them would be written by now
        lines = _metric_lines(served.url)
    assert sorted(_tags_logged(db)) == sorted((t, 499, "client_disconnected") for t in sent)
    assert lines == []  # none answered 499 before its decision


async def _gone() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _at_once() -> None:
    return None


async def _work(started: list[str]) -> str:
    # On Python 3.11 the watcher's cancel lands as this wait_for's inner task has just
    # completed, and wait_for returns its result instead of raising (gh-86296) ...
    await asyncio.wait_for(_at_once(), 1)
    started.append("the call")
    await asyncio.Event().wait()  # ... then an upstream call that never answers
    return "served"


async def _served(started: list[str]) -> str:
    request = Request({"type": "http", "method": "POST", "headers": []}, _gone)
    return await chat._unless_client_leaves(request, _work(started))


def test_a_swallowed_cancel_is_said_again_so_the_work_stops() -> None:
    started: list[str] = []
    bound_hit: list[bool] = []

    async def run() -> None:
        task = asyncio.ensure_future(_served(started))

        def stop() -> None:  # only keeps the old code from hanging the suite
            bound_hit.append(True)
            task.cancel()

        bound = asyncio.get_running_loop().call_later(10, stop)
        try:
            with pytest.raises(chat._ClientGone):
                await task
        finally:
            bound.cancel()

    asyncio.run(run())
    assert not bound_hit  # the hang-up stopped the work, not the bound
    assert started in ([], ["the call"])  # 3.12+: stopped in wait_for; 3.11: after it
