"""A gateway request cut while its answer is written for the cache (a large answer is
written a step at a time, and a shutdown's cut can come meanwhile): the answer it paid
for upstream is in the decision log all the same. In-process, to patch the write."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest
from gateway_proc import ECHO_ONLY, serve_in_thread

from llmroute.dispatch import Served
from llmroute.server import app as app_module
from llmroute.state.lookup import CacheLookup

REGISTRY = ECHO_ONLY.replace("telemetry: {enabled: false}\n", "cache: {ttl_s: 60}\n").replace(
    "model: echo-small}", "model: echo-small, price: {input: 1, output: 2}}"
)


async def _cut_while_storing(self: CacheLookup, served: Served) -> None:
    raise asyncio.CancelledError  # a shutdown's cut, mid-write of a large answer


def test_a_request_cut_while_its_answer_is_stored_is_still_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CacheLookup, "store", _cut_while_storing)
    db = tmp_path / "decisions.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY)
    with serve_in_thread(app_module.create_app(str(registry))) as url:
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "hello there"}]},
            timeout=10,
        )
    assert answer.status_code == 500  # uvicorn's, for the cut: no answer went out
    store = sqlite3.connect(db)
    try:
        rows = store.execute("SELECT status, tokens_in, tokens_out, cost_usd FROM decisions")
        (status, tokens_in, tokens_out, cost), *more = rows.fetchall()
    finally:
        store.close()
    assert not more and status == 200
    assert tokens_in and tokens_out and cost is not None and cost > 0
