"""An embeddings or rerank call its client hangs up on, end to end: `llmroute serve` as a
subprocess with client keys (a soft and a hard budget) and a real SQLite log, a fake
upstream that takes 4 s to answer. As a chat's: the upstream call is closed, the request
is logged 499 ``client_disconnected``, and it is charged what it may have cost (its input
counted, at the model's input price: the upstream had it) to the key's budget, hard or
not, and counted in the metrics as a request."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fake_upstream import fake_upstream
from gateway_proc import serve_text, wait_for
from prometheus_client.parser import text_string_to_metric_families

from llmroute.errors import TelemetryError
from llmroute.telemetry.record import LoggedDecision
from llmroute.telemetry.store import open_store

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
  small: {provider: fake, model: up-small, max_output_tokens: 100}
  embed: {provider: fake, model: "emb-slow?delay=4", kind: embedding, price: {input: 100000}}
  rr: {provider: fake, model: "rr-slow?delay=4", kind: rerank, price: {input: 50000}}
routes:
  - {name: chitchat, examples: ["hi there!"], target: small}
default: {target: small}
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
auth:
  keys:
    - {name: soft, key_env: LLMROUTE_TEST_SOFT_KEY, budget: {usd: 100, period: day}}
    - {name: hard, key_env: LLMROUTE_TEST_HARD_KEY, budget: {usd: 100, period: day, hard: true}}
  public_metrics: true
telemetry:
  prompts: hash
  flush_seconds: 0.05
"""
SOFT, HARD = "sk-unrouted-cut-soft-0123456789", "sk-unrouted-cut-hard-0123456789"
WORDS = " ".join(f"word{i}" for i in range(40))
EMBED = {"model": "embed", "input": [f"first {WORDS}", f"second {WORDS}"]}
RERANK = {"model": "rr", "query": "which one?", "documents": [WORDS, f"{WORDS} again"]}


def _spent(url: str, key: str) -> float:
    headers = {"authorization": f"Bearer {key}"}
    budget = httpx.get(f"{url}/v1/key", headers=headers, timeout=10).json()["budget"]
    return float(budget["spent_usd"])


def test_a_client_that_hangs_up_on_embeddings_or_rerank_is_logged_and_charged_as_a_chat(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    env = {
        "LLMROUTE_TEST_SOFT_KEY": SOFT,
        "LLMROUTE_TEST_HARD_KEY": HARD,
        "LLMROUTE_TELEMETRY_URL": url,
    }
    sent = [("/v1/embeddings", EMBED, SOFT), ("/v1/rerank", RERANK, HARD)]
    with (
        fake_upstream() as upstream,
        serve_text(REGISTRY % {"url": upstream.url}, tmp_path, env=env) as served,
    ):
        for path, body, key in sent:
            before = len(upstream.cut)
            with pytest.raises(httpx.ReadTimeout):  # the client gives up after 0.5 s
                httpx.post(
                    f"{served.url}{path}",
                    json=body,
                    headers={"authorization": f"Bearer {key}"},
                    timeout=0.5,
                )
            n = before + 1  # the gateway closed its call before the upstream answered
            wait_for(f"the upstream call of {path} closed", lambda n=n: len(upstream.cut) >= n, 3)
        assert [model for model, _ in upstream.cut] == ["emb-slow?delay=4", "rr-slow?delay=4"]
        store = open_store(url)
        try:

            def both_logged() -> bool:
                try:
                    return store.count_decisions() == 2
                except TelemetryError:  # the writer has not created the tables yet
                    return False

            wait_for("both requests in the log", both_logged, 10, served.log)
            rows = {d.api: d for d in store.decisions(0)}
        finally:
            store.close()
        # a hard budget settles as the dispatcher's charges land: bounded, never the hold
        hard_cost = rows["rerank"].cost_usd or 0.0
        wait_for(
            "the hard key charged the cut call",
            lambda: _spent(served.url, HARD) == pytest.approx(hard_cost),
            10,
        )
        spent = {"soft": _spent(served.url, SOFT), "hard": _spent(served.url, HARD)}
        metrics = httpx.get(f"{served.url}/metrics", timeout=10).text

    embedded, reranked = rows["embeddings"], rows["rerank"]
    _assert_cut(embedded, "(embeddings)", "embed", "soft", 100000)
    _assert_cut(reranked, "(rerank)", "rr", "hard", 50000)
    # the key's budget holds what the log says it cost, the hard one too (its hold was
    # not given back as if the call had been free)
    assert spent["soft"] == pytest.approx(embedded.cost_usd)
    assert spent["hard"] == pytest.approx(reranked.cost_usd)
    samples = [s for f in text_string_to_metric_families(metrics) for s in f.samples]

    def value(name: str, **labels: str) -> float:
        found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
        return sum(found)

    assert value("llmroute_requests_total", route="(embeddings)", model="embed", status="499") == 1
    assert value("llmroute_requests_total", route="(rerank)", model="rr", status="499") == 1
    assert value("llmroute_cost_usd_total", route="(embeddings)") == pytest.approx(
        embedded.cost_usd
    )
    assert value("llmroute_client_cost_usd_total", client="hard") == pytest.approx(
        reranked.cost_usd
    )
    assert value("llmroute_client_requests_total", client="soft", status="499") == 1
    # counted once: as a request, not also as an error no record counts
    assert value("llmroute_api_errors_total", api="embeddings") == 0
    assert value("llmroute_api_errors_total", api="rerank") == 0


def _assert_cut(row: LoggedDecision, route: str, model: str, client: str, price: float) -> None:
    assert (row.route, row.model, row.client) == (route, model, client)
    assert (row.status, row.error) == (499, "client_disconnected")
    assert row.served_model is None and row.deployment is None
    # its input was sent and may be billed: counted (estimated), priced, no output
    assert row.usage_estimated and row.tokens_out == 0
    assert row.tokens_in is not None and row.tokens_in > 40  # the fake upstream says 2
    assert row.cost_usd == pytest.approx(row.tokens_in * price / 1e6)
