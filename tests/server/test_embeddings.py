"""``POST /v1/embeddings`` end to end: `llmroute serve` as a subprocess, the official
`openai` client in front of it, a fake OpenAI-compatible upstream behind it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve_text
from prometheus_client.parser import text_string_to_metric_families

KEY_ENV = "LLMROUTE_TEST_UPSTREAM_KEY"
SECRET = "sk-test-SECRET-embed-1a2b3c4d5e6f"
MAX_INPUTS = 2048  # OpenAI's limit on one request's inputs, the gateway's too

REGISTRY = """\
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", api_key_env: %(key_env)s, timeout_s: 5}
  hasty: {kind: openai, base_url: "%(url)s", api_key_env: %(key_env)s, timeout_s: 0.3}
models:
  small: {provider: fake, model: up-small}
  embed: {provider: fake, model: up-embed, kind: embedding}
  embed-down: {provider: fake, model: "emb-down?status=500", kind: embedding}
  embed-picky: {provider: fake, model: "emb-picky?status=400", kind: embedding}
  embed-busy: {provider: fake, model: "emb-busy?status=429&retry_after=45", kind: embedding}
  embed-later: {provider: fake, model: "emb-later?status=503&retry_after=90", kind: embedding}
  embed-slow: {provider: hasty, model: "emb-slow?delay=2", kind: embedding}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {enabled: false}
"""


@dataclass
class Gateway:
    url: str
    upstream: FakeUpstream


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("embeddings")
    with fake_upstream() as upstream:
        text = REGISTRY % {"url": upstream.url, "key_env": KEY_ENV}
        with serve_text(text, tmp, env={KEY_ENV: SECRET}) as served:
            yield Gateway(served.url, upstream)
        assert SECRET not in served.log_text()


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def _post(gateway: Gateway, body: Any) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/embeddings", json=body, timeout=10)


def test_the_openai_client_gets_embeddings(gateway: Gateway, client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="embed", input=["one", "two"])
    assert raw.headers["x-llmroute-model"] == "embed"
    result = raw.parse()
    assert result.model == "embed"  # the pool model, not the upstream's name
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 4 for d in result.data)
    sent = gateway.upstream.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.body["model"] == "up-embed"
    assert sent.body["input"] == ["one", "two"]


def test_the_answer_names_the_deployment_as_a_chats_does(gateway: Gateway) -> None:
    """``x-llmroute-deployment`` and ``x-llmroute-attempts`` (0: an embeddings model is
    retried, not fallen back from), as on chat answers; an upstream error has neither."""
    response = _post(gateway, {"model": "embed", "input": "hi"})
    assert response.status_code == 200, response.text
    assert response.headers["x-llmroute-deployment"] == "fake"
    assert response.headers["x-llmroute-attempts"] == "0"
    down = _post(gateway, {"model": "embed-down", "input": "hi"})
    assert down.status_code == 502
    assert "x-llmroute-deployment" not in down.headers


def test_a_single_string_and_token_arrays(gateway: Gateway, client: openai.OpenAI) -> None:
    assert len(client.embeddings.create(model="embed", input="hello").data) == 1
    for tokens in ([1, 2, 3], [[1, 2], [3]]):
        response = _post(gateway, {"model": "embed", "input": tokens})
        assert response.status_code == 200, response.text
        assert gateway.upstream.requests[-1].body["input"] == tokens


def test_the_openai_client_sees_model_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="nope", input="hi")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as chat:  # as OpenAI answers one of another kind
        client.embeddings.create(model="small", input="hi")
    assert chat.value.code == "model_not_embedding"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "nope", "input": "hi"}, 404, "model"),
        ({"model": "auto", "input": "hi"}, 404, "model"),
        ({"model": "chitchat", "input": "hi"}, 404, "model"),
        ({"model": "small", "input": "hi"}, 404, "model"),  # a chat model
        ({"input": "hi"}, 400, "model"),
        ({"model": 3, "input": "hi"}, 400, "model"),
        ({"model": "embed"}, 400, "input"),
        ({"model": "embed", "input": ""}, 400, "input"),
        ({"model": "embed", "input": []}, 400, "input"),
        ({"model": "embed", "input": 12}, 400, "input"),
        ({"model": "embed", "input": [1.5]}, 400, "input"),
        ({"model": "embed", "input": [True]}, 400, "input"),
        ({"model": "embed", "input": ["a", 1]}, 400, "input"),
        ({"model": "embed", "input": [[]]}, 400, "input"),
        (["embed", "hi"], 400, None),
    ],
)
def test_bad_requests_are_openai_errors(
    gateway: Gateway, body: Any, status: int, param: str | None
) -> None:
    before = len(gateway.upstream.requests)
    response = _post(gateway, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert set(error) >= {"message", "type", "param", "code"}
    assert len(gateway.upstream.requests) == before  # nothing went upstream


@pytest.mark.parametrize(
    ("create", "param", "code"),
    [
        ({"model": "embed", "input": openai.NOT_GIVEN}, "input", "missing_required_parameter"),
        ({"model": "embed", "input": []}, "input", "empty_array"),
        ({"model": "embed", "input": 12}, "input", "invalid_type"),
        ({"model": openai.NOT_GIVEN, "input": "hi"}, "model", "missing_required_parameter"),
        ({"model": 3, "input": "hi"}, "model", "invalid_type"),
    ],
)
def test_a_refused_embeddings_body_carries_openais_code(
    client: openai.OpenAI, gateway: Gateway, create: dict[str, Any], param: str, code: str
) -> None:
    before = len(gateway.upstream.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(**create)
    error = caught.value.body
    assert isinstance(error, dict) and (error["param"], error["code"]) == (param, code)
    assert len(gateway.upstream.requests) == before


def test_more_inputs_than_openai_takes_are_refused_before_anything_else(
    gateway: Gateway,
) -> None:
    """Past 2,048 inputs (OpenAI's limit) a 400 at once, before each input is checked:
    a 4 MB body of 590,000 one-token arrays held the worker's event loop 3 s, every
    other request waiting, and went upstream to be refused there."""
    before = len(gateway.upstream.requests)
    for many in (["word"] * (MAX_INPUTS + 1), [[7]] * 100_000):
        response = _post(gateway, {"model": "embed", "input": many})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "input" and error["type"] == "invalid_request_error"
        assert f"'input' holds {len(many)} items" in error["message"]
    assert len(gateway.upstream.requests) == before  # nothing went upstream
    at_most = _post(gateway, {"model": "embed", "input": ["word"] * MAX_INPUTS})
    assert at_most.status_code == 200 and len(at_most.json()["data"]) == MAX_INPUTS
    one_long = _post(gateway, {"model": "embed", "input": [7] * (MAX_INPUTS + 1)})
    assert one_long.status_code == 200  # token ids: one input, however many


def test_an_upstream_429_is_a_429_with_its_wait(gateway: Gateway) -> None:
    """An embeddings model is retried, not fallen back from: its upstream's 429 is the
    client's 429 ``upstream_rate_limited`` with that ``Retry-After`` (was a 502)."""
    busy = _post(gateway, {"model": "embed-busy", "input": "hi"})
    assert busy.status_code == 429, busy.text
    assert busy.headers["retry-after"] == "45"
    assert busy.json()["error"]["code"] == "upstream_rate_limited"


def test_an_upstream_503_whose_wait_was_too_long_to_retry_keeps_it(gateway: Gateway) -> None:
    """An upstream 503 asking for 90 s (past ``max_retry_after_s``: the gateway did not
    wait, so did not retry) is a 503 with that ``Retry-After``, as a chat chain whose
    every model said so gets, and no ``x-should-retry: false``, which told the client
    not to try again at all (the wait was dropped). It was a 502 with the wait."""
    before = len(gateway.upstream.models_called())
    later = _post(gateway, {"model": "embed-later", "input": "hi"})
    assert later.status_code == 503, later.text
    assert later.headers["retry-after"] == "90"
    assert "x-should-retry" not in later.headers
    assert gateway.upstream.models_called()[before:] == ["emb-later?status=503&retry_after=90"]


def test_upstream_failures_map_to_gateway_errors(gateway: Gateway) -> None:
    down = _post(gateway, {"model": "embed-down", "input": "hi"})
    assert down.status_code == 502
    assert down.headers["x-llmroute-model"] == "embed-down"
    assert down.json()["error"]["code"] == "upstream_error"
    assert gateway.upstream.models_called()[-2:] == ["emb-down?status=500"] * 2  # one retry
    picky = _post(gateway, {"model": "embed-picky", "input": "hi"})
    assert picky.status_code == 400
    assert picky.json()["error"]["code"] == "upstream_rejected"
    assert "embed-picky" in picky.json()["error"]["message"]
    for response in (down, picky):
        assert SECRET not in response.text


def _scraped(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_embeddings_are_requests_in_the_metrics(gateway: Gateway) -> None:
    """An answered or failed embeddings call counts in ``llmroute_requests_total`` under
    route ``(embeddings)`` (as its decision-log row does), an answer's latency in
    ``llmroute_upstream_seconds``; only an error no record counts (refused before the
    call) is in ``llmroute_api_errors_total``."""
    before = _scraped(gateway)
    assert _post(gateway, {"model": "embed", "input": "count me"}).status_code == 200
    assert _post(gateway, {"model": "embed-down", "input": "count me"}).status_code == 502
    assert _post(gateway, {"model": "embed", "input": 12}).status_code == 400
    after = _scraped(gateway)

    def added(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    route = "(embeddings)"
    assert added("llmroute_requests_total", route=route, model="embed", status="200") == 1
    assert added("llmroute_requests_total", route=route, model="embed-down", status="502") == 1
    assert added("llmroute_upstream_seconds_count", model="embed") == 1
    assert added("llmroute_upstream_seconds_count", model="embed-down") == 0  # no answer
    assert added("llmroute_api_errors_total", api="embeddings", status="502") == 0
    assert added("llmroute_api_errors_total", api="embeddings", status="400") == 1


SPEND_REGISTRY = """\
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  embed: {provider: fake, model: up-embed, kind: embedding, price: {input: 100000}}
  embed-capped:
    provider: fake
    model: up-embed-capped
    kind: embedding
    price: {input: 100000}
    budget: {usd: 0.15, period: day}
routes:
  - {name: chitchat, examples: ["hi there!", "how are you today?"], target: small}
default: {target: small}
auth:
  keys:
    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY, budget: {usd: 0.25, period: day}}
    - {name: open, key_env: LLMROUTE_TEST_OPEN_KEY, admin: true}
"""
TEAM_KEY, OPEN_KEY = "sk-team-embed-0987654321", "sk-open-embed-1234567890"


def test_embedding_spend_counts_against_budgets_and_in_metrics(
    tmp_path: Path,
) -> None:
    """An embeddings answer is priced (the fake upstream reports one token per input at
    $0.10 a token here), charged to the client key's budget and to the model's, and
    counted in the cost metrics: a key cannot spend past its budget on embeddings."""
    with fake_upstream() as upstream:
        env = {
            "LLMROUTE_TEST_TEAM_KEY": TEAM_KEY,
            "LLMROUTE_TEST_OPEN_KEY": OPEN_KEY,
            "LLMROUTE_TELEMETRY_URL": "off",
        }
        with serve_text(SPEND_REGISTRY % {"url": upstream.url}, tmp_path, env=env) as served:

            def embed(key: str, model: str = "embed") -> httpx.Response:
                return httpx.post(
                    f"{served.url}/v1/embeddings",
                    json={"model": model, "input": ["one", "two"]},
                    headers={"authorization": f"Bearer {key}"},
                    timeout=10,
                )

            first = embed(TEAM_KEY)
            assert first.status_code == 200, first.text
            usage = first.json()["usage"]
            assert usage["prompt_tokens"] == usage["total_tokens"] == 2
            assert usage["cost_usd"] == pytest.approx(0.2) and usage["estimated"] is False

            # $0.20 of $0.25 spent: one more is let in, then the key is over its budget
            # (charges land in the background: allow one more call for that).
            assert embed(TEAM_KEY).status_code == 200
            statuses = [embed(TEAM_KEY) for _ in range(2)]
            over = next(r for r in statuses if r.status_code != 200)
            assert over.status_code == 429, over.text
            assert over.json()["error"]["code"] == "insufficient_quota"
            team_calls = 2 + sum(r.status_code == 200 for r in statuses)
            assert embed(OPEN_KEY).status_code == 200  # another key's spending is its own

            # The model's own budget ($0.15): the first call spends $0.20, the next is
            # refused without calling upstream.
            assert embed(OPEN_KEY, "embed-capped").status_code == 200
            calls = len(upstream.calls_to("up-embed-capped"))
            refused = embed(OPEN_KEY, "embed-capped")
            assert refused.status_code == 503 and "budget" in refused.json()["error"]["message"]
            assert len(upstream.calls_to("up-embed-capped")) == calls

            text = httpx.get(
                f"{served.url}/metrics", headers={"authorization": f"Bearer {OPEN_KEY}"}
            ).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    cost = samples[("llmroute_cost_usd_total", (("model", "embed"), ("route", "(embeddings)")))]
    assert cost == pytest.approx(0.2 * (team_calls + 1))
    tokens = samples[("llmroute_tokens_total", (("direction", "in"), ("model", "embed")))]
    assert tokens == 2 * (team_calls + 1)


def test_a_malformed_tags_header_is_refused_before_the_upstream_is_asked(gateway: Gateway) -> None:
    """``x-llmroute-tags`` is checked on embeddings as on chat: a 400 naming the header,
    and nothing embedded."""
    before = len(gateway.upstream.requests)
    reply = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": "embed", "input": "hello"},
        headers={"x-llmroute-tags": "no equals sign, and spaces"},
        timeout=10,
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "x-llmroute-tags"
    assert len(gateway.upstream.requests) == before


def test_a_call_past_the_registrys_timeout_is_a_504(gateway: Gateway) -> None:
    """The dispatcher's own bound on the call (``timeout_s``) ran out as a bare
    ``TimeoutError`` when it fired before the provider's: a 500 ``internal_error``
    (the first call of a provider, whose session is opened within it)."""
    for _ in range(2):
        response = _post(gateway, {"model": "embed-slow", "input": "hello"})
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "upstream_error"
