"""An answer the upstream's content filter withheld (a whole answer ending
``finish_reason: content_filter``) that goes to the route's content fallback is paid for:
on `llmroute serve` (a real process on 127.0.0.1, the fake upstream behind) its cost is
in the model's budget, and in the request's cost wherever that is counted: the decision
log, ``llmroute_cost_usd_total`` and the client key's budget, also when the content
fallback fails too."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import Served, serve, wait_for
from prometheus_client.parser import text_string_to_metric_families

KEY = "sk-withheld-cost-5772156649"
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
    budget: {usd: 100, period: day}
  guarded:
    provider: fake
    model: "guarded-%(tag)s"
    price: {input: 10, output: 10}
    budget: {usd: 100, period: day}
  down: {provider: fake, model: "down-%(tag)s?status=500"}
routes:
  - name: sensitive
    examples: ["summarise this court ruling"]
    target: filtered
    policy: {content_fallback: guarded}
  - name: hopeless
    examples: ["describe the crime scene"]
    target: filtered
    policy: {content_fallback: down}
default: {target: guarded}
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
auth:
  keys:
    - {name: payer, key_env: LLMROUTE_TEST_WITHHELD_KEY, budget: {usd: 100, period: day}}
  public_metrics: true
"""


@dataclass
class Gateway:
    served: Served
    db: Path


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("withheld")
    registry = tmp / "registry.yaml"
    registry.write_text(REGISTRY % {"url": upstream.url, "tag": TAG})
    db = tmp / "decisions.db"
    env = {
        "LLMROUTE_TEST_WITHHELD_KEY": KEY,
        "LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}",
    }
    with serve(registry, tmp / "serve.log", env=env) as served:
        yield Gateway(served, db)


def _ask(gateway: Gateway, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "the ruling"}]}
    headers = {"authorization": f"Bearer {KEY}"}
    url = f"{gateway.served.url}/v1/chat/completions"
    return httpx.post(url, json=body, headers=headers, timeout=20)


def _metrics(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    scraped = httpx.get(f"{gateway.served.url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
    }


def _model_spent(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return next(
        value
        for (metric, labels), value in found.items()
        if metric == "llmroute_budget_spent_usd" and ("name", name) in labels
    )


def _logged(gateway: Gateway, decision_id: str) -> tuple[int, float | None]:
    def row() -> Any:
        try:
            with contextlib.closing(sqlite3.connect(gateway.db)) as conn:
                query = "SELECT status, cost_usd FROM decisions WHERE id = ?"
                return conn.execute(query, (decision_id,)).fetchone()
        except sqlite3.OperationalError:  # the log's table is not made yet
            return None

    wait_for("the decision in the log", lambda: row() is not None, 10, gateway.served.log)
    status, cost = row()
    return int(status), cost


def _key_spent(gateway: Gateway) -> float:
    headers = {"authorization": f"Bearer {KEY}"}
    key = httpx.get(f"{gateway.served.url}/v1/key", headers=headers, timeout=10).json()
    return float(key["budget"]["spent_usd"])


def test_a_withheld_answers_cost_counts_wherever_the_requests_cost_does(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    """The withheld answer is charged to its model's budget; the request's cost in the
    log and in the key's budget is that plus the answer served, and
    ``llmroute_cost_usd_total`` counts each under the model that spent it (the
    withheld answer under its own model, not the one that served)."""
    answer = _ask(gateway, "sensitive")
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-llmroute-model"] == "guarded"
    assert upstream.models_called()[-2:] == [
        f"filtered-{TAG}?finish=content_filter",
        f"guarded-{TAG}",
    ]
    found = _metrics(gateway)
    withheld, served = _model_spent(found, "filtered"), _model_spent(found, "guarded")
    assert withheld > 0 and served > 0
    paid = withheld + served
    status, cost = _logged(gateway, answer.headers["x-llmroute-decision-id"])
    assert status == 200 and cost == pytest.approx(paid)
    labels = (("model", "guarded"), ("route", "sensitive"))
    assert found[("llmroute_cost_usd_total", labels)] == pytest.approx(served)
    labels = (("model", "filtered"), ("route", "sensitive"))
    assert found[("llmroute_cost_usd_total", labels)] == pytest.approx(withheld)
    time.sleep(0.3)  # the key is charged from the record, off the request path
    assert _key_spent(gateway) == pytest.approx(paid)


def test_a_withheld_answer_is_the_cost_of_a_request_whose_content_fallback_failed(
    gateway: Gateway,
) -> None:
    """The content fallback fails too: the client gets the error, and the request's
    logged cost is the withheld answer it paid for (its model's budget has it)."""
    before = _model_spent(_metrics(gateway), "filtered")
    key_before = _key_spent(gateway)
    answer = _ask(gateway, "hopeless")
    assert answer.status_code == 502, answer.text
    withheld = _model_spent(_metrics(gateway), "filtered") - before
    assert withheld > 0
    status, cost = _logged(gateway, answer.headers["x-llmroute-decision-id"])
    assert status == 502 and cost == pytest.approx(withheld)
    time.sleep(0.3)
    assert _key_spent(gateway) - key_before == pytest.approx(withheld)
