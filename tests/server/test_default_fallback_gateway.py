"""The default's fallback chain end to end: `llmroute serve` (a real process on
127.0.0.1) whose default target fails (5xx) in front of the fake upstream; the default's
`policy.fallback` answers, under the default's policy (its retries and params), and the
decision log and the metrics count a fallback of route ``default`` as they count a
route's. A pool model named by the client is still tried alone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from fake_upstream import FAIL_500, FakeUpstream, fake_upstream
from gateway_proc import serve_text, wait_for

from llmroute.errors import TelemetryError
from llmroute.telemetry.record import LoggedDecision
from llmroute.telemetry.report import is_fallback
from llmroute.telemetry.store import open_store

REGISTRY = """
encoder: builtin:static
intent: {threshold: 0.99}  # no route is that sure of these prompts: the default serves them
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  large: {provider: fake, model: up-large}
  broken: {provider: fake, model: %(fail_500)s}
routes:
  - name: code
    examples: ["write a Python function to parse JSON"]
    target: large
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default:
  target: broken
  policy: {fallback: [small], retries: 0, params: {temperature: 0.5}}
dispatch:
  retries: {attempts: 2, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {enabled: false}  # every request reaches the broken model
telemetry: {flush_seconds: 0.05}
"""


@dataclass
class Running:
    url: str
    store_url: str
    upstream: FakeUpstream


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("default-fallback")
    store_url = f"sqlite:///{tmp / 'log.db'}"
    with fake_upstream() as upstream:
        text = REGISTRY % {"url": upstream.url, "fail_500": FAIL_500}
        with serve_text(text, tmp, env={"LLMROUTE_TELEMETRY_URL": store_url}) as served:
            yield Running(served.url, store_url, upstream)


def _logged(store_url: str, decision_id: str) -> LoggedDecision:
    store = open_store(store_url)
    found: list[LoggedDecision] = []

    def check() -> bool:
        try:
            found[:] = [d for d in store.decisions(0) if d.id == decision_id]
        except TelemetryError:  # the writer has not created the tables yet
            return False
        return bool(found)

    try:
        wait_for(f"decision {decision_id} in the log", check, 10)
    finally:
        store.close()
    return found[0]


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_the_defaults_failing_target_falls_back_down_its_policy(gateway: Running) -> None:
    before = len(gateway.upstream.requests)
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=_user("what is the tallest mountain on mars?")
        )
    assert raw.headers["x-llmroute-route"] == "default"
    assert raw.headers["x-llmroute-model"] == "small"
    assert raw.headers["x-llmroute-attempts"] == "1"  # the target that failed
    assert raw.parse().model == "up-small"
    sent = gateway.upstream.requests[before:]
    # the default's retries (0), not dispatch.retries (2): one call to the target
    assert [r.body["model"] for r in sent] == [FAIL_500, "up-small"]
    assert sent[1].body["temperature"] == 0.5  # the default's params
    row = _logged(gateway.store_url, raw.headers["x-llmroute-decision-id"])
    assert (row.route, row.model, row.served_model, row.status) == (
        "default",
        "broken",
        "small",
        200,
    )
    assert len(row.attempts) == 1 and is_fallback(row)  # a fallback in report and dashboard
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    assert 'llmroute_fallbacks_total{route="default"} 1.0' in metrics


def test_a_stream_falls_back_too(gateway: Running) -> None:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=_user("name a moon of saturn"), stream=True
        )
        assert raw.headers["x-llmroute-route"] == "default"
        assert raw.headers["x-llmroute-model"] == "small"
        with raw.parse() as stream:
            models = {c.model for c in stream}
    assert models == {"up-small"}


def test_a_pinned_pool_model_is_still_tried_alone(gateway: Running) -> None:
    before = len(gateway.upstream.requests)
    body = {"model": "broken", "messages": _user("hi")}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 502
    assert [a.split()[0] for a in response.json()["error"]["attempts"]] == ["broken"]
    # dispatch.retries: the default's policy is not a pinned model's
    assert gateway.upstream.models_called()[before:] == [FAIL_500] * 3
