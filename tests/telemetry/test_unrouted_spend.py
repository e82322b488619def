"""Embeddings and rerank in the decision log, end to end: `llmroute serve` as a
subprocess with client keys and a real SQLite log, a fake OpenAI-compatible upstream
behind it. What a key's budget was charged (``GET /v1/key``), the metrics, `llmroute
report` and the dashboard's data must say the same spend per key for a mix of chat,
Messages, embeddings and rerank requests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small, price: {input: 1000, output: 2000}}
  large: {provider: fake, model: up-large, price: {input: 10000, output: 30000}}
  embed: {provider: fake, model: up-embed, kind: embedding, price: {input: 100000}}
  embed-down: {provider: fake, model: "emb-down?status=500", kind: embedding}
  rr: {provider: fake, model: up-rerank, kind: rerank, price: {input: 1000}}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {enabled: false}
auth:
  keys:
    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY, budget: {usd: 100, period: day}}
    - {name: ops, key_env: LLMROUTE_TEST_OPS_KEY, admin: true, budget: {usd: 100, period: day}}
telemetry:
  prompts: redacted
  embeddings_text: true  # their text too, as prompts says
  flush_seconds: 0.05
"""
TEAM_KEY, OPS_KEY = "sk-team-unrouted-0123456789", "sk-ops-unrouted-0123456789"
BIN = Path(sys.executable).parent
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi there"}]}
MESSAGES = {"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
EMBED = {"model": "embed", "input": ["mail bob@example.com", "two"], "user": "mary"}
RERANK = {"model": "rr", "query": "capital?", "documents": ["Paris", "Rome", "Oslo"]}


def _llmroute(*args: str) -> Any:
    done = subprocess.run(
        [str(BIN / "llmroute"), *args], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def test_report_and_dashboard_spend_per_key_is_what_budgets_were_charged(
    tmp_path: Path,
) -> None:
    db = tmp_path / "log.db"
    url = f"sqlite:///{db}"
    env = {
        "LLMROUTE_TEST_TEAM_KEY": TEAM_KEY,
        "LLMROUTE_TEST_OPS_KEY": OPS_KEY,
        "LLMROUTE_TELEMETRY_URL": url,
    }
    with (
        fake_upstream() as upstream,
        serve_text(REGISTRY % {"url": upstream.url}, tmp_path, ["--dashboard"], env) as served,
    ):

        def post(path: str, body: dict[str, Any], key: str, **headers: str) -> httpx.Response:
            headers["authorization"] = f"Bearer {key}"
            return httpx.post(f"{served.url}{path}", json=body, headers=headers, timeout=10)

        sent = [
            post("/v1/chat/completions", CHAT, TEAM_KEY),
            post("/v1/messages", MESSAGES, TEAM_KEY),
            post("/v1/embeddings", EMBED, TEAM_KEY, **{"x-llmroute-tags": "app=search"}),
            post("/v1/embeddings", EMBED, TEAM_KEY),
            post("/v1/rerank", RERANK, TEAM_KEY),
            post("/v2/rerank", RERANK, OPS_KEY),
            post("/v1/embeddings", EMBED, OPS_KEY),
            post("/v1/chat/completions", {**CHAT, "model": "large"}, OPS_KEY),
        ]
        assert [r.status_code for r in sent] == [200] * len(sent), [r.text for r in sent]
        failed = post("/v1/embeddings", {**EMBED, "model": "embed-down"}, OPS_KEY)
        assert failed.status_code == 502, failed.text
        store = open_store(url)
        try:

            def all_logged() -> bool:
                try:
                    return store.count_decisions() == len(sent) + 1
                except TelemetryError:  # the writer has not created the tables yet
                    return False

            wait_for("every request in the log", all_logged, 10)
            rows = store.decisions(0)
        finally:
            store.close()
        charged: dict[str, float] = {}
        for key in (TEAM_KEY, OPS_KEY):
            info = httpx.get(
                f"{served.url}/v1/key", headers={"authorization": f"Bearer {key}"}
            ).json()
            charged[info["name"]] = info["budget"]["spent_usd"]
        admin = {"authorization": f"Bearer {OPS_KEY}"}
        # feedback judges a routing decision: an embeddings or rerank row takes none
        judged = {}
        for row in rows:
            if row.api in ("chat", "embeddings", "rerank"):
                asked = {"decision_id": row.id, "thumbs": "down"}
                answer = httpx.post(f"{served.url}/v1/feedback", json=asked, headers=admin)
                judged[row.api, answer.status_code] = answer.json()
        dashboard = httpx.get(f"{served.url}/dashboard/data?since=1h", headers=admin).json()
        metrics = httpx.get(f"{served.url}/metrics", headers=admin).text

    assert sorted(judged) == [("chat", 200), ("embeddings", 400), ("rerank", 400)]
    refused = judged["embeddings", 400]["error"]
    assert (refused["code"], refused["param"]) == ("decision_not_routed", "decision_id")
    assert "not routed" in refused["message"]
    # and the answers do not hand out the id as one to judge
    assert all("x-llmroute-decision-id" not in r.headers for r in sent[2:7])

    unrouted = [d for d in rows if d.api in ("embeddings", "rerank")]
    assert sorted((d.api, d.route, d.model, d.client, d.status) for d in unrouted) == [
        ("embeddings", "(embeddings)", "embed", "ops", 200),
        ("embeddings", "(embeddings)", "embed", "team", 200),
        ("embeddings", "(embeddings)", "embed", "team", 200),
        ("embeddings", "(embeddings)", "embed-down", "ops", 502),
        ("rerank", "(rerank)", "rr", "ops", 200),
        ("rerank", "(rerank)", "rr", "team", 200),
    ]
    assert all(d.layer == "(unrouted)" and d.margin is None for d in unrouted)
    # the deployment that answered (its provider), as a chat's row names it; none failed
    assert {d.deployment for d in unrouted if d.status == 200} == {"fake"}
    assert [d.deployment for d in unrouted if d.status != 200] == [None]
    embedded = [d for d in unrouted if d.model == "embed"]
    assert {d.end_user for d in embedded} == {"mary"}
    assert sorted(d.tags for d in embedded) == [(), (), ("app=search",)]
    # embeddings_text: the text is kept as telemetry.prompts (redacted) keeps a chat's: PII replaced
    assert all(d.prompt is not None and "bob@example.com" not in d.prompt for d in embedded)
    assert all("<EMAIL" in (d.prompt or "") for d in embedded)

    report = json.loads(_llmroute("report", "--url", url, "--since", "1h", "--json"))
    reported = {c["name"]: c["cost_usd"] for c in report["clients"]}
    shown = {c["name"]: c["spend_usd"] for c in dashboard["clients"]}
    counted = {
        s.labels["client"]: s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "llmroute_client_cost_usd_total"
    }
    assert charged["team"] > 0.2 and charged["ops"] > 0.2  # embeddings cost $0.20 each
    for name in ("team", "ops"):
        assert reported[name] == pytest.approx(charged[name]), name
        assert shown[name] == pytest.approx(charged[name]), name
        assert counted[name] == pytest.approx(charged[name]), name
    assert report["total"]["cost_usd"] == pytest.approx(sum(charged.values()))
    assert dashboard["summary"]["spend_usd"] == pytest.approx(sum(charged.values()))
    routes = {r["name"]: r["n"] for r in report["routes"]}
    assert (routes["(embeddings)"], routes["(rerank)"]) == (4, 2)
    assert "(unrouted)" not in {g["name"] for g in report["layers"]}
    assert "(unrouted)" not in {g["name"] for g in dashboard["layers"]}

    # export leaves the unrouted requests out (its prompts feed calibrate) unless asked
    exported = [json.loads(line) for line in _llmroute("export", "--url", url).splitlines()]
    assert {e["api"] for e in exported} == {"chat", "messages"}
    asked = _llmroute("export", "--url", url, "--api", "rerank").splitlines()
    assert [json.loads(line)["route"] for line in asked] == ["(rerank)", "(rerank)"]
