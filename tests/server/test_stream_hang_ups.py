"""Clients that hang up mid-stream on `llmroute serve` (a real process, Redis limits,
the fake upstream behind): each front's stream, a cascade's included, is ended as its
client leaves: the capped model's slot is free again, the key's hard-budget holds are
settled to what the log says was spent, and every cut stream is logged
``client_disconnected`` with the usage it paid for; and ``least_in_flight`` counts a
stream on its deployment until its client leaves."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from fake_upstream import fake_upstream
from gateway_proc import serve_text, wait_for
from redis_service import REDIS_URL

KEY = "sk-hang-ups-5772156649"
REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 30}
models:
  capped:
    {provider: fake, model: "capped-%(tag)s?gap=0.1", max_in_flight: 1, max_output_tokens: 4096,
     price: {input: 1, output: 1}}
  spare:
    {provider: fake, model: "spare-%(tag)s", max_output_tokens: 4096, price: {input: 1, output: 1}}
  tiny:
    {provider: fake, model: "tiny-%(tag)s?reply=I%%27m%%20sorry%%2C%%20but%%20I%%20can%%27t",
     max_output_tokens: 4096, price: {input: 1, output: 1}}
routes:
  - {name: chat, examples: [hello there], target: capped, policy: {fallback: [spare]}}
  - {name: casc, examples: [cascade please], target: tiny, cascade: {tiers: [tiny, capped]}}
default: {target: capped}
dispatch:
  limits: {url: "%(redis)s", namespace: "%(ns)s", timeout_s: 2}
auth:
  keys:
    - name: payer
      key_env: LLMROUTE_TEST_HANG_UPS_KEY
      budget: {usd: 100, period: day, hard: true}
"""
WORDS = " ".join(f"w{i}" for i in range(40))  # 4 s of stream at 0.1 s a word


def _bodies(route: str) -> dict[str, dict[str, Any]]:
    text = f"{WORDS} {uuid.uuid4().hex}"
    messages = [{"role": "user", "content": text}]
    return {
        "/v1/chat/completions": {"model": route, "stream": True, "messages": messages},
        "/v1/messages": {"model": route, "stream": True, "max_tokens": 500, "messages": messages},
        "/v1/responses": {"model": route, "stream": True, "input": text},
        "/v1/completions": {"model": route, "stream": True, "prompt": text},
    }


def _first_event_then_gone(
    port: int, path: str, body: dict[str, Any], key: str | None = KEY
) -> bytes:
    """Send `body` (with `key`, when given), read the headers and a first event, and
    hang up: what was read."""
    data = json.dumps(body).encode()
    auth = "" if key is None else f"Authorization: Bearer {key}\r\n"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + data)
        got = b""
        while b"data:" not in got.partition(b"\r\n\r\n")[2]:
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
    return got


def _records(db: Path) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []  # the log's writer makes it with its first record
    with contextlib.closing(sqlite3.connect(db)) as con:
        query = "select api, error, served_model, tokens_in, cost_usd from decisions"
        try:
            return con.execute(query).fetchall()
        except sqlite3.OperationalError:  # not made yet
            return []


def test_streams_cut_by_their_clients_free_slots_and_log_what_they_paid(
    tmp_path: Path, redis_namespace: str
) -> None:
    db = tmp_path / "log.db"
    env = {"LLMROUTE_TEST_HANG_UPS_KEY": KEY, "LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"}
    with fake_upstream() as upstream:
        values = {"url": upstream.url, "tag": uuid.uuid4().hex[:6], "redis": REDIS_URL}
        text = REGISTRY % {**values, "ns": redis_namespace}
        with serve_text(text, tmp_path, env=env) as served:
            port = int(served.url.rsplit(":", 1)[1])
            cut = 0
            for route in ("chat", "casc"):
                for path, body in _bodies(route).items():
                    _first_event_then_gone(port, path, body)
                    cut += 1
                    # logged once ended: its slot is given back before, so the next
                    # stream finds it free (a stream ended, not one still noticing)
                    logged = lambda n=cut: len(_records(db)) == n  # noqa: E731
                    wait_for(f"cut stream {cut} logged", logged, 10, served.log)
            headers = {"authorization": f"Bearer {KEY}"}
            probe = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
            answer = httpx.post(
                f"{served.url}/v1/chat/completions", json=probe, headers=headers, timeout=20
            )
            time.sleep(0.5)  # the probe's record and charge
            budget = httpx.get(f"{served.url}/v1/key", headers=headers, timeout=10).json()
            log = served.log_text()
    records = _records(db)
    assert answer.status_code == 200 and answer.headers["x-llmroute-model"] == "capped"
    streams = [r for r in records if r[1] is not None]
    assert len(streams) == cut
    assert {r[1] for r in streams} == {"client_disconnected"}
    assert {r[2] for r in streams} == {"capped"}  # each found the slot free, none the spare
    assert all(r[3] is not None and r[4] for r in streams), streams
    spent = sum(r[4] or 0 for r in records)
    assert budget["budget"]["spent_usd"] == round(spent, 6), (budget, records)
    assert len(upstream.cut) >= cut
    assert "Traceback" not in log and "never retrieved" not in log


PAIR = """
encoder: builtin:static
providers:
  one: {kind: openai, base_url: "%(url)s", timeout_s: 30}
  two: {kind: openai, base_url: "%(url)s", timeout_s: 30}
models:
  pair:
    model: "pair-%(tag)s?gap=0.1"
    balance: least_in_flight
    deployments: [{provider: one}, {provider: two}]
routes:
  - {name: chat, examples: [hello there], target: pair}
default: {target: pair}
"""


def _deployment_then_gone(port: int, body: dict[str, Any]) -> str:
    """Send `body`, read the headers and a first event, hang up: the deployment named."""
    got = _first_event_then_gone(port, "/v1/chat/completions", body, key=None)
    headers = got.partition(b"\r\n\r\n")[0].decode().lower().splitlines()
    (named,) = [
        h.split(":", 1)[1].strip() for h in headers if h.startswith("x-llmroute-deployment:")
    ]
    return named


def test_least_in_flight_counts_a_stream_until_its_client_hangs_up(tmp_path: Path) -> None:
    """Two deployments balanced by ``least_in_flight``, a stream held open on one: each
    next stream goes to the other, and once its client hangs up that one is free again
    for the next (counted off when its client left, never left counted; counted off at
    its opening, the pick was random)."""
    messages = [{"role": "user", "content": WORDS}]
    body = {"model": "chat", "stream": True, "messages": messages}
    with fake_upstream() as upstream:
        text = PAIR % {"url": upstream.url, "tag": uuid.uuid4().hex[:6]}
        with serve_text(text, tmp_path) as served:
            port = int(served.url.rsplit(":", 1)[1])
            url = f"{served.url}/v1/chat/completions"
            with httpx.Client(timeout=20) as client, client.stream("POST", url, json=body) as held:
                assert held.status_code == 200
                busy = held.headers["x-llmroute-deployment"]
                lines = held.iter_lines()  # kept: dropping it closes the response
                next(lines)  # its first event: open, being read
                picks = []
                for n in range(1, 7):
                    picks.append(_deployment_then_gone(port, body))
                    # the hang-up noticed: the gateway cut its upstream stream as it
                    # ended it, counted off just after
                    cut = lambda n=n: len(upstream.cut) >= n  # noqa: E731
                    wait_for(f"stream {n} cut upstream", cut, 10, served.log)
                    time.sleep(0.05)
            log = served.log_text()
    assert busy in ("one", "two") and picks == [({"one", "two"} - {busy}).pop()] * 6
    assert "Traceback" not in log
