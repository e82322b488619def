"""``POST /v1/rerank`` and ``/v2/rerank`` end to end: `llmroute serve` as a subprocess,
httpx in front of it (as Cohere's and Jina's clients post), a fake upstream behind it
speaking vLLM's and Cohere's rerank answers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve, serve_text
from prometheus_client.parser import text_string_to_metric_families
from rate_windows import clear_of_a_minute_end

KEY_ENV = "LLMROUTE_TEST_UPSTREAM_KEY"
SECRET = "sk-test-SECRET-rerank-9f8e7d6c5b4a"
ROOT = Path(__file__).resolve().parents[2]

REGISTRY = """\
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", api_key_env: %(key_env)s, timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  embed: {provider: fake, model: up-embed, kind: embedding}
  rerank: {provider: fake, model: up-rerank, kind: rerank, price: {input: 1000}}
  cohere:
    provider: fake
    model: "up-cohere?cohere=1"
    kind: rerank
    price: {search: 2.0}
  voyage:
    provider: fake
    model: up-voyage
    kind: rerank
    rename_params: {top_n: top_k}
    params: {truncation: true}
  rerank-down: {provider: fake, model: "rr-down?status=500", kind: rerank}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
aliases:
  bge-reranker: rerank
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {enabled: false}
"""
DOCS = ["Paris is the capital of France.", "Berlin is in Germany.", "Rome is old."]


@dataclass
class Gateway:
    url: str
    upstream: FakeUpstream


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("rerank")
    with fake_upstream() as upstream:
        text = REGISTRY % {"url": upstream.url, "key_env": KEY_ENV}
        with serve_text(text, tmp, env={KEY_ENV: SECRET}) as served:
            yield Gateway(served.url, upstream)
        assert SECRET not in served.log_text()


def _post(gateway: Gateway, body: Any, path: str = "/v1/rerank") -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", json=body, timeout=10)


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_a_rerank_is_passed_to_its_model_and_priced(gateway: Gateway, path: str) -> None:
    body = {"model": "rerank", "query": "capital of France", "documents": DOCS, "top_n": 2}
    response = _post(gateway, body, path)
    assert response.status_code == 200, response.text
    assert response.headers["x-llmroute-model"] == "rerank"
    answer = response.json()
    assert answer["model"] == "rerank"  # the pool model, not the upstream's name
    assert [r["index"] for r in answer["results"]] == [0, 1]
    # the upstream reports 10 tokens a document: 30 tokens at $1,000 per million
    assert answer["usage"]["total_tokens"] == 30
    assert answer["usage"]["cost_usd"] == pytest.approx(0.03)
    assert answer["usage"]["estimated"] is False
    sent = gateway.upstream.requests[-1]
    assert sent.path == "/v1/rerank"  # base_url + /rerank, whichever path the client used
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.body == {**body, "model": "up-rerank"}


def test_the_answer_names_the_deployment_as_a_chats_does(gateway: Gateway) -> None:
    """``x-llmroute-deployment`` and ``x-llmroute-attempts`` (0: a reranker is retried,
    not fallen back from), as on chat answers."""
    for path in ("/v1/rerank", "/v2/rerank"):
        response = _post(gateway, {"model": "rerank", "query": "q", "documents": ["d"]}, path)
        assert response.status_code == 200, response.text
        assert response.headers["x-llmroute-deployment"] == "fake"
        assert response.headers["x-llmroute-attempts"] == "0"


def test_an_alias_names_a_reranker(gateway: Gateway) -> None:
    response = _post(gateway, {"model": "bge-reranker", "query": "q", "documents": ["d"]})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "rerank"


def test_a_reranker_priced_per_search(gateway: Gateway) -> None:
    """Cohere's answers carry search units, no tokens: a search at $2 per 1,000."""
    response = _post(gateway, {"model": "cohere", "query": "capital", "documents": DOCS})
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["search_units"] == 1
    assert usage["cost_usd"] == pytest.approx(0.002)
    assert usage["estimated"] is True  # its tokens were counted here
    assert usage["total_tokens"] > 0
    assert response.json()["meta"] == {"billed_units": {"search_units": 1}}  # kept


def test_a_models_renames_and_params_apply(gateway: Gateway) -> None:
    response = _post(gateway, {"model": "voyage", "query": "q", "documents": DOCS, "top_n": 1})
    assert response.status_code == 200, response.text
    sent = gateway.upstream.requests[-1].body
    assert sent["top_k"] == 1 and "top_n" not in sent
    assert sent["truncation"] is True


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"model": "nope", "query": "q", "documents": ["d"]}, 404, "model", "model_not_found"),
        ({"model": "auto", "query": "q", "documents": ["d"]}, 404, "model", "model_not_found"),
        ({"model": "small", "query": "q", "documents": ["d"]}, 404, "model", "model_not_rerank"),
        ({"model": "embed", "query": "q", "documents": ["d"]}, 404, "model", "model_not_rerank"),
        ({"query": "q", "documents": ["d"]}, 400, "model", None),
        ({"model": "rerank", "documents": ["d"]}, 400, "query", None),
        ({"model": "rerank", "query": " ", "documents": ["d"]}, 400, "query", None),
        ({"model": "rerank", "query": 3, "documents": ["d"]}, 400, "query", None),
        ({"model": "rerank", "query": "q"}, 400, "documents", None),
        ({"model": "rerank", "query": "q", "documents": []}, 400, "documents", None),
        ({"model": "rerank", "query": "q", "documents": "d"}, 400, "documents", None),
        ({"model": "rerank", "query": "q", "documents": ["d", 4]}, 400, "documents[1]", None),
        ({"model": "rerank", "query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n", None),
        ({"model": "rerank", "query": "q", "documents": ["d"], "top_n": True}, 400, "top_n", None),
        ({"model": "rerank", "query": "q", "documents": ["d"], "top_n": "2"}, 400, "top_n", None),
        (["rerank", "q"], 400, None, None),
    ],
)
def test_bad_requests_are_openai_errors(
    gateway: Gateway, body: Any, status: int, param: str | None, code: str | None
) -> None:
    before = len(gateway.upstream.requests)
    response = _post(gateway, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert set(error) >= {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    assert len(gateway.upstream.requests) == before  # nothing went upstream


def test_more_documents_than_the_gateway_reranks_are_refused_at_once(gateway: Gateway) -> None:
    """Past 10,000 documents a 400 naming them, nothing sent: 400,000 short ones (a 2 MB
    body) held the worker's event loop 1.7 s to be checked, estimated and answered."""
    before = len(gateway.upstream.requests)
    body = {"model": "rerank", "query": "q", "documents": ["d"] * 10_001}
    response = _post(gateway, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "documents" and "holds 10001 documents" in error["message"]
    assert len(gateway.upstream.requests) == before
    at_most = _post(gateway, {**body, "documents": ["d"] * 10_000})
    assert at_most.status_code == 200, at_most.text


def test_document_objects_pass_through(gateway: Gateway) -> None:
    documents = [{"text": "Paris is in France."}, {"text": "Rome"}]
    response = _post(gateway, {"model": "rerank", "query": "France", "documents": documents})
    assert response.status_code == 200, response.text
    assert gateway.upstream.requests[-1].body["documents"] == documents


def test_a_chat_request_naming_a_reranker_is_told_where_to_go(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    with client as c, pytest.raises(openai.NotFoundError) as refused:
        c.chat.completions.create(model="rerank", messages=[{"role": "user", "content": "hi"}])
    assert "POST /v1/rerank" in refused.value.message


def test_upstream_failures_are_retried_not_fallen_back(gateway: Gateway) -> None:
    down = _post(gateway, {"model": "rerank-down", "query": "q", "documents": ["d"]})
    assert down.status_code == 502
    assert down.headers["x-llmroute-model"] == "rerank-down"
    assert down.json()["error"]["code"] == "upstream_error"
    assert gateway.upstream.models_called()[-2:] == ["rr-down?status=500"] * 2  # one retry
    assert SECRET not in down.text


KEYED = """\
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  rerank: {provider: fake, model: up-rerank, kind: rerank, price: {input: 10000}}
  capped:
    provider: fake
    model: up-capped
    kind: rerank
    price: {input: 10000}
    budget: {usd: 0.7, period: day, hard: true}
routes:
  - {name: chitchat, examples: ["hi there!", "how are you today?"], target: small}
default: {target: small}
auth:
  keys:
    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY, rpm: 3}
    - {name: ops, key_env: LLMROUTE_TEST_OPS_KEY, admin: true}
"""
TEAM_KEY, OPS_KEY = "sk-team-rerank-0987654321", "sk-ops-rerank-1234567890"


def test_keys_limits_budgets_and_metrics_cover_reranking(tmp_path: Path) -> None:
    """Both paths need a key and count against its rpm (``/v2/rerank`` is outside
    ``/v1`` too); a hard budget holds a rerank's worst case; the cost lands in the
    metrics under route ``(rerank)``."""
    env = {
        "LLMROUTE_TEST_TEAM_KEY": TEAM_KEY,
        "LLMROUTE_TEST_OPS_KEY": OPS_KEY,
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    with (
        fake_upstream() as upstream,
        serve_text(KEYED % {"url": upstream.url}, tmp_path, env=env) as served,
    ):

        def post(path: str, key: str | None, model: str = "rerank") -> httpx.Response:
            headers = {"authorization": f"Bearer {key}"} if key else {}
            body = {"model": model, "query": "q", "documents": DOCS}
            return httpx.post(f"{served.url}{path}", json=body, headers=headers, timeout=10)

        assert post("/v2/rerank", None).status_code == 401
        assert post("/v1/rerank", None).status_code == 401
        clear_of_a_minute_end()
        statuses = [post(p, TEAM_KEY).status_code for p in ("/v1/rerank", "/v2/rerank") * 2]
        assert statuses == [200, 200, 200, 429]
        limited = post("/v2/rerank", TEAM_KEY)
        assert limited.status_code == 429 and "retry-after" in limited.headers

        # 30 tokens at $10,000 per million: $0.30 each; the hard $0.70 holds a worst case
        # of $0.59 (59 tokens: texts at bytes / 2, 8 a pair): it lets one in
        first = post("/v1/rerank", OPS_KEY, "capped")
        assert first.status_code == 200, first.text
        calls = len(upstream.calls_to("up-capped"))
        refused = post("/v1/rerank", OPS_KEY, "capped")
        assert refused.status_code == 503, refused.text
        assert "budget" in refused.json()["error"]["message"]
        assert len(upstream.calls_to("up-capped")) == calls

        text = httpx.get(
            f"{served.url}/metrics", headers={"authorization": f"Bearer {OPS_KEY}"}
        ).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    cost = samples[("llmroute_cost_usd_total", (("model", "rerank"), ("route", "(rerank)")))]
    assert cost == pytest.approx(0.3 * 3)
    assert samples[("llmroute_cost_usd_total", (("model", "capped"), ("route", "(rerank)")))] == (
        pytest.approx(0.3)
    )


def test_the_echo_example_reranks_offline(tmp_path: Path) -> None:
    with serve(ROOT / "examples" / "echo.yaml", tmp_path / "serve.log") as served:
        body = {
            "model": "rerank",
            "query": "capital of France",
            "documents": ["Berlin is in Germany.", "Paris is the capital of France."],
            "return_documents": True,
        }
        response = httpx.post(f"{served.url}/v2/rerank", json=body, timeout=10)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [1, 0]
    assert results[0]["relevance_score"] == 1.0
    assert results[0]["document"] == {"text": "Paris is the capital of France."}
    assert response.json()["usage"]["cost_usd"] > 0
