"""A chat its client hangs up on while its fallback is answering, end to end: `llmroute
serve` as a subprocess, a fake upstream whose first model fails at once and whose
fallback takes 4 s. The prompt the fallback was sent is the request's cost, charged to
the fallback: ``llmroute_cost_usd_total`` and ``llmroute_tokens_total`` count it under the
fallback, not under the decided model, which was paid nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fake_upstream import fake_upstream
from gateway_proc import serve_text, wait_for
from prometheus_client.parser import text_string_to_metric_families

from llmroute.errors import TelemetryError
from llmroute.telemetry.store import open_store

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
  first: {provider: fake, model: "first?status=500", price: {input: 1000, output: 1000}}
  second: {provider: fake, model: "second?delay=4", price: {input: 1000, output: 1000}}
routes:
  - {name: chitchat, examples: ["hi there!"], target: first, policy: {fallback: [second]}}
default: {target: first}
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
telemetry:
  prompts: hash
  flush_seconds: 0.05
"""
BODY = {"model": "chitchat", "messages": [{"role": "user", "content": "hi there! " * 20}]}


def test_a_cut_fallbacks_cost_is_counted_under_the_fallback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    env = {"LLMROUTE_TELEMETRY_URL": url}
    with (
        fake_upstream() as upstream,
        serve_text(REGISTRY % {"url": upstream.url}, tmp_path, env=env) as served,
    ):
        with pytest.raises(httpx.ReadTimeout):  # the client gives up after 0.5 s
            httpx.post(f"{served.url}/v1/chat/completions", json=BODY, timeout=0.5)
        wait_for("the fallback's call closed", lambda: len(upstream.cut) >= 1, 3)
        assert [model for model, _ in upstream.cut] == ["second?delay=4"]
        store = open_store(url)
        try:

            def logged() -> bool:
                try:
                    return store.count_decisions() == 1
                except TelemetryError:  # the writer has not created the tables yet
                    return False

            wait_for("the request in the log", logged, 10, served.log)
            (row,) = store.decisions(0)
        finally:
            store.close()
        metrics = httpx.get(f"{served.url}/metrics", timeout=10).text

    assert (row.status, row.error, row.model) == (499, "client_disconnected", "first")
    assert row.cost_usd and row.tokens_in and row.usage_estimated
    samples = [s for f in text_string_to_metric_families(metrics) for s in f.samples]

    def value(name: str, **labels: str) -> float:
        found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
        return sum(found)

    # the request counts under its decided model; what it cost, under the one it cost at
    assert value("llmroute_requests_total", model="first", status="499") == 1
    assert value("llmroute_cost_usd_total", model="second") == pytest.approx(row.cost_usd)
    assert value("llmroute_cost_usd_total", model="first") == 0
    assert value("llmroute_tokens_total", model="second", direction="in") == row.tokens_in
    assert value("llmroute_tokens_total", model="first") == 0
