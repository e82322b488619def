"""The SDK's decision log counts an answer the upstream's content filter withheld as
the gateway's does: on a request whose content fallback failed too, the failed row
carries the withheld answer's tokens and cost (it was charged to its model's budget)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_upstream import FakeUpstream, fake_upstream

from llmroute import Router
from llmroute.errors import LlmrouteError

TAG = uuid.uuid4().hex[:8]
REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
  filtered:
    provider: fake
    model: "filtered-%(tag)s?finish=content_filter"
    price: {input: 1000, output: 1000}
  down: {provider: fake, model: "down-%(tag)s?status=500"}
routes:
  - name: hopeless
    examples: ["describe the crime scene"]
    target: filtered
    policy: {content_fallback: down}
default: {target: filtered}
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def test_a_failed_call_logs_the_withheld_answers_cost(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY % {"url": upstream.url, "tag": TAG})
    messages = [{"role": "user", "content": "describe the crime scene"}]
    with Router.from_yaml(path) as router, pytest.raises(LlmrouteError):
        router.chat.completions.create(model="hopeless", messages=messages)
    store = sqlite3.connect(db)
    try:
        rows = store.execute("SELECT status, tokens_in, tokens_out, cost_usd FROM decisions")
        (status, tokens_in, tokens_out, cost), *more = rows.fetchall()
    finally:
        store.close()
    assert not more and status >= 500
    # was null: the row said nothing of the answer the filtered model was paid for
    assert tokens_in and tokens_out and cost is not None and cost > 0
