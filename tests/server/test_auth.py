"""Client keys on `llmroute serve` (a real process on 127.0.0.1, the official openai
client in front, the fake upstream behind): who gets in, who may read the dashboard and
metrics, a key's requests-per-minute limit, reloads, and keys never logged."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import BIN, Served, serve, wait_for
from prometheus_client.parser import text_string_to_metric_families
from rate_windows import clear_of_a_minute_end

from llmroute.dispatch.usage import (
    estimated_prompt_tokens,
    prompt_tokens,
    prompt_tokens_at_most,
)
from llmroute.errors import ConfigError
from llmroute.registry import ConfigErrors, parse_registry
from llmroute.registry.schema import ApiKey, AuthSettings
from llmroute.server.auth import KeyTable

TEAM_KEY = "sk-team-0123456789"
OPS_KEY = "ops-secret-9876"
LIMITED_KEY = "sk-limited-5555-5555"
CAPPED_KEY = "sk-capped-3141"
REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: small, price: {input: 1, output: 2}}
  slow: {provider: fake, model: "slow?delay=1.5"}
  slow-embed: {provider: fake, model: "slow-embed?delay=1.5", kind: embedding}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
cache: {ttl_s: 300}
auth:
  keys:
    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY, tags: ["team:core"]}
    - {name: ops, sha256: "%(ops)s", admin: true}
    - {name: limited, key_env: LLMROUTE_TEST_LIMITED_KEY, rpm: 2}
    - {name: capped, sha256: "%(capped)s", budget: {usd: 0.000001, period: day}}
    - {name: narrow, key_env: LLMROUTE_TEST_NARROW_KEY, models: [chat, small], header_tags: false}
    - {name: rotating, key_env: [LLMROUTE_TEST_OLD_KEY, LLMROUTE_TEST_NEW_KEY], rpm: 3}
    - {name: thrifty, key_env: LLMROUTE_TEST_THRIFTY_KEY, tpm: 10}
    - {name: bursty, key_env: LLMROUTE_TEST_BURSTY_KEY, tpm: 1000}
    - {name: leaver, key_env: LLMROUTE_TEST_LEAVER_KEY, tpm: 1000}
    - {name: embedder, key_env: LLMROUTE_TEST_EMBEDDER_KEY, tpm: 1000}
    - {name: hanzi, key_env: LLMROUTE_TEST_HANZI_KEY, tpm: 5000}
    - name: strict
      key_env: LLMROUTE_TEST_STRICT_KEY
      rpm: 3
      tpm: 100000
      budget: {usd: 0.000001, period: day}
%(extra)s
"""
NARROW_KEY = "sk-narrow-2718281828"
THRIFTY_KEY = "sk-thrifty-1618033988"
BURSTY_KEY = "sk-bursty-1414213562"
LEAVER_KEY = "sk-leaver-1732050807"
EMBEDDER_KEY = "sk-embedder-2449489742"
STRICT_KEY = "sk-strict-2236067977"
HANZI_KEY = "sk-hanzi-3162277660"
OLD_KEY, NEW_KEY = "sk-rotating-old-1111", "sk-rotating-new-2222"
ENV = {
    "LLMROUTE_TEST_NARROW_KEY": NARROW_KEY,
    "LLMROUTE_TEST_OLD_KEY": OLD_KEY,
    "LLMROUTE_TEST_NEW_KEY": NEW_KEY,
    "LLMROUTE_TEST_TEAM_KEY": TEAM_KEY,
    "LLMROUTE_TEST_LIMITED_KEY": LIMITED_KEY,
    "LLMROUTE_TEST_THRIFTY_KEY": THRIFTY_KEY,
    "LLMROUTE_TEST_BURSTY_KEY": BURSTY_KEY,
    "LLMROUTE_TEST_LEAVER_KEY": LEAVER_KEY,
    "LLMROUTE_TEST_EMBEDDER_KEY": EMBEDDER_KEY,
    "LLMROUTE_TEST_STRICT_KEY": STRICT_KEY,
    "LLMROUTE_TEST_HANZI_KEY": HANZI_KEY,
    "LLMROUTE_TELEMETRY_URL": "off",
}
ASK = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}


def _registry(path: Path, upstream: FakeUpstream, extra: str = "") -> Path:
    ops = hashlib.sha256(OPS_KEY.encode()).hexdigest()
    capped = hashlib.sha256(CAPPED_KEY.encode()).hexdigest()
    text = REGISTRY % {"url": upstream.url, "ops": ops, "capped": capped, "extra": extra}
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth")


@pytest.fixture(scope="module")
def gateway(tmp: Path, upstream: FakeUpstream) -> Iterator[Served]:
    registry = _registry(tmp / "registry.yaml", upstream)
    env = {**ENV, "LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp / 'decisions.db'}"}
    with serve(registry, tmp / "serve.log", ["--reload-interval", "0.2"], env=env) as served:
        yield served


def _client(gateway: Served, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def test_probes_need_no_key(gateway: Served) -> None:
    assert httpx.get(f"{gateway.url}/health", timeout=5).status_code == 200
    assert httpx.get(f"{gateway.url}/ready", timeout=5).status_code == 200


def test_a_request_without_a_known_key_is_a_401(gateway: Served) -> None:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=ASK, timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and "Authorization: Bearer" in error["message"]
    # both ways a key counts are named: an Anthropic client on /v1/messages sends x-api-key
    assert "x-api-key" in error["message"]
    with _client(gateway, "sk-wrong") as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**ASK)
    for path in ("/v1/models", "/v1/route"):
        assert httpx.get(f"{gateway.url}{path}", timeout=5).status_code == 401


def test_the_messages_front_takes_the_key_and_answers_in_anthropics_format(
    gateway: Served,
) -> None:
    """Anthropic's clients send the key as ``x-api-key``; the key check's rejections on
    ``/v1/messages`` come in Anthropic's error format."""
    import anthropic

    def client(key: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)

    ask = {"model": "auto", "max_tokens": 16, "messages": ASK["messages"]}
    with client(TEAM_KEY) as team:
        assert team.messages.create(**ask).content[0].type == "text"  # type: ignore[call-overload]
    with client("sk-wrong") as stranger, pytest.raises(anthropic.AuthenticationError) as caught:
        stranger.messages.create(**ask)  # type: ignore[call-overload]
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    with client(NARROW_KEY) as narrow, pytest.raises(anthropic.PermissionDeniedError) as denied:
        narrow.messages.create(**ask)  # type: ignore[call-overload]  # auto is not allowed
    body = denied.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "permission_error"


def test_a_known_key_gets_in_by_any_usual_header(gateway: Served) -> None:
    with _client(gateway, TEAM_KEY) as client:
        answer = client.chat.completions.create(**ASK)
        assert answer.choices[0].message.content
        assert next(m.id for m in client.models.list()) == "auto"
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=ASK, headers={"x-api-key": TEAM_KEY}
    )
    assert response.status_code == 200


def test_several_authorization_headers_are_refused(gateway: Served) -> None:
    """Which of two would count is up to whatever parses them (Starlette took the first,
    this check the last): a proxy appending its own after a client's must not decide."""
    for first, second in ((TEAM_KEY, NARROW_KEY), ("sk-wrong-0000000000", TEAM_KEY)):
        headers = [("authorization", f"Bearer {first}"), ("authorization", f"Bearer {second}")]
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json=ASK, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "authorization"
    same = [("authorization", f"Bearer {TEAM_KEY}")] * 2  # the same twice is one key
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json=ASK, headers=same).is_success


def test_only_admin_keys_read_the_dashboard_and_metrics(gateway: Served) -> None:
    page = httpx.get(f"{gateway.url}/dashboard", timeout=10)
    assert page.status_code == 401
    assert page.headers["www-authenticate"] == 'Basic realm="llmroute"'  # a browser prompts
    team = {"Authorization": f"Bearer {TEAM_KEY}"}
    forbidden = httpx.get(f"{gateway.url}/metrics", headers=team, timeout=10)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert httpx.get(f"{gateway.url}/dashboard/data", headers=team).status_code == 403
    # a browser's login prompt: any user name, the key as password
    assert httpx.get(f"{gateway.url}/dashboard", auth=("me", OPS_KEY)).status_code == 200
    ops = {"Authorization": f"Bearer {OPS_KEY}"}
    assert httpx.get(f"{gateway.url}/dashboard/data", headers=ops).status_code == 200
    metrics = httpx.get(f"{gateway.url}/metrics", headers=ops)
    assert metrics.status_code == 200
    assert 'llmroute_auth_rejected_total{reason="forbidden"}' in metrics.text
    assert 'llmroute_auth_rejected_total{reason="missing"}' in metrics.text


def test_basic_credentials_count_only_on_the_dashboard_and_metrics(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """A browser that logged in to the dashboard sends its cached Basic credentials on
    its own, also with a form another site's page posts (``text/plain``, no preflight):
    on the API they must not let it in, or any page the operator visits could spend on
    the admin key. Bearer and x-api-key are what API clients send."""
    body = '{"model": "auto", "messages": [{"role": "user", "content": "from a form"}]}'
    called = len(upstream.requests)
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/batches"):
        for key in (OPS_KEY, TEAM_KEY):
            posted = httpx.post(
                f"{gateway.url}{path}",
                content=body,
                headers={"content-type": "text/plain"},
                auth=("me", key),
                timeout=10,
            )
            assert posted.status_code == 401, (path, posted.text)
            assert posted.headers["www-authenticate"] == "Bearer"  # no browser prompt
            message = posted.json()["error"]["message"]
            assert "Basic credentials count only on /dashboard and /metrics" in message
            assert key not in message
    assert len(upstream.requests) == called  # nothing reached the upstream
    listed = httpx.get(f"{gateway.url}/v1/models", auth=("me", OPS_KEY), timeout=10)
    assert listed.status_code == 401
    team = {"Authorization": f"Bearer {TEAM_KEY}"}
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json=ASK, headers=team).is_success
    # where a browser logs in, Basic still counts: the page, its data, its files, /metrics
    for path in ("/dashboard", "/dashboard/data", "/dashboard/app.js", "/metrics"):
        assert httpx.get(f"{gateway.url}{path}", auth=("me", OPS_KEY)).status_code == 200
    page = httpx.get(f"{gateway.url}/dashboard", timeout=10)
    assert "a browser asks for it" in page.json()["error"]["message"]
    # what a browser asks for by itself beside the page: refused, it would make the
    # browser drop the dashboard's login (and ask again on the page's next refresh)
    for auth in (None, ("me", OPS_KEY)):
        assert httpx.get(f"{gateway.url}/favicon.ico", auth=auth).status_code == 404


def _assert_waits_for_the_window(headers: httpx.Headers) -> None:
    """A 429 says when the sliding minute will have room: within the two minutes it
    spans, in seconds and (what OpenAI's clients read first) milliseconds."""
    seconds, ms = int(headers["retry-after"]), int(headers["retry-after-ms"])
    assert 1 <= seconds <= 120 and seconds == max(1, -(-ms // 1000))


def test_a_key_over_its_rpm_gets_a_429(gateway: Served, upstream: FakeUpstream) -> None:
    """rpm 2: two requests, then a 429; OpenAI's x-ratelimit-* headers say what is left."""
    clear_of_a_minute_end()
    with _client(gateway, LIMITED_KEY) as client:
        left = []
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(**ASK)
            assert raw.headers["x-ratelimit-limit-requests"] == "2"
            left.append(raw.headers["x-ratelimit-remaining-requests"])
        assert left == ["1", "0"]
        assert "x-ratelimit-limit-tokens" not in raw.headers  # no tpm on this key
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(**ASK)
    headers = caught.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    _assert_waits_for_the_window(headers)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "requests"  # OpenAI's type for an rpm refusal
    with _client(gateway, TEAM_KEY) as client:  # other keys are not affected
        raw = client.chat.completions.with_raw_response.create(**ASK)
        assert not any(name.startswith("x-ratelimit") for name in raw.headers)
    # /metrics counts each key's requests, its refusals among them, and what they cost
    ops = {"Authorization": f"Bearer {OPS_KEY}"}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(
            httpx.get(f"{gateway.url}/metrics", headers=ops, timeout=10).text
        )
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("llmroute_client_requests_total", client="limited", status="200") == 2
    assert value("llmroute_client_requests_total", client="limited", status="429") >= 1
    assert value("llmroute_client_tokens_total", client="limited", direction="in") > 0
    assert value("llmroute_client_cost_usd_total", client="limited") > 0
    assert value("llmroute_client_requests_total", client="team", status="200") >= 1
    assert not any(
        name == "llmroute_client_requests_total" and dict(labels)["client"] == "ops"
        for name, labels in samples
    )  # ops only read /metrics: no chat request, no refusal


def test_a_key_over_its_tpm_gets_a_429(gateway: Served) -> None:
    """tpm 10: each answer here uses 6 tokens (3 in, 3 out), counted as it finishes, so
    the second request is let in (6 < 10) and the next is refused; others go on."""
    statuses, left = [], []
    with _client(gateway, THRIFTY_KEY) as client:
        for i in range(4):  # distinct prompts: a cache hit spends no tokens
            ask = {**ASK, "messages": [{"role": "user", "content": f"hello there {i}"}]}
            try:
                raw = client.chat.completions.with_raw_response.create(**ask)
                statuses.append(200)
                assert raw.headers["x-ratelimit-limit-tokens"] == "10"
                left.append(raw.headers["x-ratelimit-remaining-tokens"])
            except openai.RateLimitError as exc:
                statuses.append(429)
                assert exc.code == "rate_limit_exceeded" and "10 tokens per minute" in exc.message
                assert exc.type == "tokens"
                _assert_waits_for_the_window(exc.response.headers)
                assert exc.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert statuses[:2] == [200, 200] and 429 in statuses
    # what was left when each was let in, less its own held estimate (14 characters with
    # the separator: 4 tokens, rounded up): 10 - 4, then 10 - 6 (the first answer's real
    # tokens) - 4
    assert left[:2] == ["6", "0"]
    with _client(gateway, TEAM_KEY) as client:
        client.chat.completions.create(**ASK)


def test_concurrent_requests_hold_their_prompt_against_the_tpm(gateway: Served) -> None:
    """tpm 1000 and five requests of about 400 prompt tokens at once, against a model
    that takes 1.5 s: none has finished when the others arrive, so counting only
    finished requests would let all five through. Each holds its estimate while in
    flight: the first two fit (800), the other three are refused before anything is
    sent upstream."""
    prompt = "please summarise this paragraph of notes. " * 40  # 1,680 characters
    bodies = [
        {"model": "slow", "messages": [{"role": "user", "content": f"{i} {prompt}"}]}
        for i in range(5)
    ]
    headers = {"Authorization": f"Bearer {BURSTY_KEY}"}
    url = f"{gateway.url}/v1/chat/completions"

    def post(body: dict[str, object]) -> httpx.Response:
        return httpx.post(url, json=body, headers=headers, timeout=20)

    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(post, bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429, 429, 429], [r.text for r in responses]
    refused = next(r for r in responses if r.status_code == 429)
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "needs about 421 more" in error["message"]
    _assert_waits_for_the_window(refused.headers)
    # A stream gives its hold back when it ends: after one of ~900 tokens, a ~420 one
    # fits beside the real tokens counted so far (it would not beside a hold left over).
    long = {"role": "user", "content": "x " * 1800}
    stream = {
        "model": "small",
        "stream": True,
        "stream_options": {"include_usage": True},  # the fake upstream reports 6 tokens
        "messages": [long],
    }
    with httpx.stream("POST", url, json=stream, headers=headers, timeout=20) as answer:
        assert answer.status_code == 200 and "[DONE]" in answer.read().decode()
    time.sleep(0.2)  # the release is counted in the background
    after = post(bodies[0])
    assert after.status_code == 200, after.text


def test_concurrent_embeddings_hold_their_input_against_the_tpm(gateway: Served) -> None:
    """Embeddings held nothing in flight: ten at once with an empty window all passed a
    tpm they were nine times over. Each holds its estimate now, as chat requests do."""
    text = "a sentence to embed for the search index. " * 40  # 1,720 characters: ~430
    headers = {"Authorization": f"Bearer {EMBEDDER_KEY}"}

    def post(i: int) -> httpx.Response:
        body = {"model": "slow-embed", "input": [f"{i} {text}"]}
        return httpx.post(f"{gateway.url}/v1/embeddings", json=body, headers=headers, timeout=20)

    with ThreadPoolExecutor(max_workers=5) as pool:
        statuses = sorted(r.status_code for r in pool.map(post, range(5)))
    assert statuses == [200, 200, 429, 429, 429]


def test_a_chinese_prompt_holds_about_a_token_a_character_against_the_tpm(
    gateway: Served,
) -> None:
    """1,050 Chinese characters are about 1,050 tokens to hosted tokenizers; held at four
    characters a token (262) a key's tpm let four times its Chinese traffic through. What
    the minute has left, this request's hold counted, says it holds about one a character."""
    chinese = "季度报告显示大多数地区办事处都完成了目标。" * 50  # 1,050 characters
    body = {"model": "small", "messages": [{"role": "user", "content": chinese}]}
    headers = {"Authorization": f"Bearer {HANZI_KEY}"}
    url = f"{gateway.url}/v1/chat/completions"
    answer = httpx.post(url, json=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    remaining = int(answer.headers["x-ratelimit-remaining-tokens"])
    assert 5000 - prompt_tokens_at_most(body) <= remaining <= 5000 - 1000


def test_a_request_whose_client_hangs_up_gives_its_hold_back(gateway: Served) -> None:
    """tpm 1000: a request of ~420 prompt tokens whose client times out is cancelled; its
    hold is given back then, and its prompt (which the upstream may bill) is counted in
    its place. A second ~420-token request fits beside that count (it would not beside a
    hold left over as well: 3 x 420 > 1000), and what the minute has left says the
    abandoned prompt was counted."""
    url = f"{gateway.url}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {LEAVER_KEY}"}
    notes = "please summarise this paragraph of notes. " * 40  # 1,680 characters
    left = {"model": "slow", "messages": [{"role": "user", "content": f"first {notes}"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=left, headers=headers, timeout=0.3)
    time.sleep(0.4)  # the gateway sees the hang-up; the counts change in the background
    small = {"model": "small", "messages": [{"role": "user", "content": notes}]}
    after = httpx.post(url, json=small, headers=headers, timeout=10)
    assert after.status_code == 200, after.text
    held = estimated_prompt_tokens(small)  # this request's own hold: 421
    charged = prompt_tokens(left)  # the abandoned prompt, counted as its usage
    remaining = int(after.headers["x-ratelimit-remaining-tokens"])
    # the window slides: a count from the previous minute weighs a little less
    assert 1000 - held - charged <= remaining <= 1000 - held - int(0.95 * charged)


def test_a_rotated_key_lets_both_values_in_as_one_account(gateway: Served) -> None:
    clear_of_a_minute_end()
    with _client(gateway, OLD_KEY) as old, _client(gateway, NEW_KEY) as new:
        old.chat.completions.create(**ASK)
        new.chat.completions.create(**ASK)
        old.chat.completions.create(**ASK)
        with pytest.raises(openai.RateLimitError):  # rpm 3 is shared by both values
            new.chat.completions.create(**ASK)


def test_a_key_with_models_may_ask_only_for_those(gateway: Served) -> None:
    with _client(gateway, NARROW_KEY) as client:
        assert [m.id for m in client.models.list()] == ["chat", "small"]
        answer = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hello there"}]
        )
        assert answer.choices[0].message.content
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(**ASK)  # model "auto"
    assert caught.value.code == "model_not_allowed"
    assert "may use: chat, small" in caught.value.message
    denied = httpx.post(
        f"{gateway.url}/v1/route",
        json={"messages": ASK["messages"]},
        headers={"Authorization": f"Bearer {NARROW_KEY}"},
    )
    assert denied.status_code == 403 and denied.json()["error"]["param"] == "model"


def test_a_key_naming_an_unknown_model_is_a_registry_error(upstream: FakeUpstream) -> None:
    text = REGISTRY % {
        "url": upstream.url,
        "ops": "0" * 64,
        "capped": "1" * 64,
        "extra": "    - {name: typo, sha256: '%s', models: [chta]}" % ("2" * 64),
    }
    with pytest.raises(ConfigErrors, match=r"auth\.keys\[12\]\.models\[0\]: unknown model 'chta'"):
        parse_registry(text)


def test_each_key_has_its_own_cached_answers(gateway: Served) -> None:
    ask = {"model": "auto", "messages": [{"role": "user", "content": "how are you today?"}]}
    url = f"{gateway.url}/v1/chat/completions"

    def cache(key: str) -> str:
        response = httpx.post(url, json=ask, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
        return response.headers["x-llmroute-cache"]

    assert [cache(TEAM_KEY), cache(TEAM_KEY)] == ["miss", "hit"]
    assert [cache(OPS_KEY), cache(OPS_KEY)] == ["miss", "hit"]  # not the team's answer


def test_a_key_over_its_budget_gets_a_429(gateway: Served) -> None:
    with _client(gateway, CAPPED_KEY) as client:
        first = client.chat.completions.create(**ASK)  # costs more than the whole budget
        assert first.usage is not None
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(**ASK)
    assert caught.value.code == "insufficient_quota"
    assert caught.value.type == "insufficient_quota"
    assert "budget of $0.000001 this day" in caught.value.message


def test_every_429_carries_the_rate_limit_headers(gateway: Served) -> None:
    """A key with rpm, tpm and a budget: its budget's 429s say what is left of both
    limits, and do not use up the rpm (a batch of a key out of budget fails at once)."""
    with _client(gateway, STRICT_KEY) as client:
        client.chat.completions.create(**ASK)  # costs more than the whole budget
        refusals = []
        for _ in range(4):  # more than the rpm (3) allows
            with pytest.raises(openai.RateLimitError) as caught:
                client.chat.completions.create(**ASK)
            refusals.append(caught.value)
    assert [r.code for r in refusals] == ["insufficient_quota"] * 4
    for refused in refusals:
        headers = refused.response.headers
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-remaining-requests"] == "2"  # the first request's
        assert headers["x-ratelimit-limit-tokens"] == "100000"
        assert int(headers["x-ratelimit-remaining-tokens"]) < 100000  # the first answer's


def _key_info(gateway: Served, key: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.get(f"{gateway.url}/v1/key", headers=headers, timeout=10)


def test_a_key_sees_its_limits_and_spending_even_over_budget(gateway: Served) -> None:
    with _client(gateway, CAPPED_KEY) as client:
        with contextlib.suppress(openai.RateLimitError):  # spent already by another test
            client.chat.completions.create(**ASK)  # costs more than the whole budget
        budget: dict[str, Any] = {}
        for _ in range(50):  # the charge is counted off the request path
            budget = _key_info(gateway, CAPPED_KEY).json()["budget"]
            if budget["spent_usd"]:
                break
            time.sleep(0.05)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(**ASK)
    assert (budget["usd"], budget["period"], budget["remaining_usd"]) == (1e-06, "day", 0.0)
    assert budget["spent_usd"] >= 1e-06
    info = _key_info(gateway, CAPPED_KEY).json()
    assert (info["object"], info["name"], info["admin"]) == ("llmroute.key", "capped", False)
    narrow = _key_info(gateway, NARROW_KEY).json()
    assert (narrow["models"], narrow["pool"], narrow["budget"]) == (["chat", "small"], None, None)
    assert narrow["tags"] == [] and _key_info(gateway, TEAM_KEY).json()["tags"] == ["team:core"]
    assert narrow["header_tags"] is False and info["header_tags"] is True
    thrifty = _key_info(gateway, THRIFTY_KEY).json()
    assert thrifty["tpm"]["limit"] == 10 and isinstance(thrifty["tpm"]["used_last_minute"], int)
    assert _key_info(gateway, "sk-nobody-0000000000").status_code == 401


def test_key_info_does_not_use_up_the_rpm(gateway: Served) -> None:
    for _ in range(4):  # the limited key may send 2 requests a minute
        reply = _key_info(gateway, LIMITED_KEY)
        assert reply.status_code == 200 and reply.json()["rpm"] == {"limit": 2}


def test_a_key_without_header_tags_may_not_send_them(gateway: Served) -> None:
    """Its spend must rest on the key's own tags: a request asserting others is refused
    before any work, with an OpenAI-style 403; without the header it is served."""
    with _client(gateway, NARROW_KEY) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(
                model="chat", messages=ASK["messages"], extra_headers={"x-llmroute-tags": "team:x"}
            )
        assert caught.value.code == "tags_not_allowed"
        assert "narrow" in caught.value.message and "header_tags: false" in caught.value.message
        with pytest.raises(openai.PermissionDeniedError) as caught:  # LiteLLM's spelling
            client.chat.completions.create(
                model="chat", messages=ASK["messages"], extra_body={"metadata": {"tags": ["x"]}}
            )
        assert caught.value.code == "tags_not_allowed" and caught.value.param == "tags"
        assert client.chat.completions.create(model="chat", messages=ASK["messages"]).choices
    # /v1/route takes a body's tags as chat does: the same 403
    body = {"model": "chat", "messages": ASK["messages"], "tags": ["x"]}
    auth = {"Authorization": f"Bearer {NARROW_KEY}"}
    routed = httpx.post(f"{gateway.url}/v1/route", json=body, headers=auth, timeout=10)
    assert routed.status_code == 403 and routed.json()["error"]["code"] == "tags_not_allowed"


def test_messages_and_responses_take_body_tags_as_chat_does(gateway: Served) -> None:
    """LiteLLM's tags in a Messages or Responses body are the request's: a key without
    ``header_tags`` gets chat's 403 for them, in each API's shape, before any work."""
    auth = {"Authorization": f"Bearer {NARROW_KEY}"}
    messages = {"model": "chat", "max_tokens": 16, "messages": ASK["messages"]}
    for path, body in (
        ("/v1/messages", {**messages, "tags": ["x"]}),
        ("/v1/messages", {**messages, "metadata": {"user_id": "u-1", "tags": ["x"]}}),
        ("/v1/responses", {"model": "chat", "input": "hello there", "tags": ["x"]}),
    ):
        refused = httpx.post(f"{gateway.url}{path}", json=body, headers=auth, timeout=10)
        assert refused.status_code == 403, (path, refused.text)
        assert "header_tags: false" in refused.json()["error"]["message"]


def test_an_embeddings_model_outside_a_keys_list_is_chats_403(gateway: Served) -> None:
    """Whether or not the registry has it, as chat answers (a key limited to some models
    learns nothing of the others)."""
    with _client(gateway, NARROW_KEY) as client:
        for model in ("slow-embed", "nowhere"):
            with pytest.raises(openai.PermissionDeniedError) as caught:
                client.embeddings.create(model=model, input="hi")
            assert caught.value.code == "model_not_allowed"
            with pytest.raises(openai.PermissionDeniedError) as caught:
                client.chat.completions.create(model=model, messages=ASK["messages"])
            assert caught.value.code == "model_not_allowed"


def test_the_decision_log_names_the_key(gateway: Served, tmp: Path) -> None:
    """And carries the key's tags before the request's own."""
    with _client(gateway, TEAM_KEY) as client:
        answer = client.chat.completions.with_raw_response.create(
            **ASK, extra_headers={"x-llmroute-tags": "app=web,team:core"}
        )
    decision_id = answer.headers["x-llmroute-decision-id"]
    db = tmp / "decisions.db"

    def logged() -> tuple[str, str] | None:
        try:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                row = conn.execute(
                    "SELECT client, tags FROM decisions WHERE id = ?", (decision_id,)
                )
                found = row.fetchone()
        except sqlite3.OperationalError:  # the log's table is not made yet
            return None
        return (found[0], found[1]) if found else None

    wait_for("the decision in the log", lambda: logged() is not None, 10, gateway.log)
    assert logged() == ("team", '["team:core", "app=web"]')
    ops = {"Authorization": f"Bearer {OPS_KEY}"}
    data = httpx.get(f"{gateway.url}/dashboard/data?since=15m", headers=ops, timeout=10).json()
    clients = {c["name"]: c for c in data["clients"]}
    assert clients["team"]["n"] >= 1 and clients["team"]["spend_usd"] > 0


def test_keys_are_never_logged(gateway: Served) -> None:
    with _client(gateway, "sk-not-a-key-4242") as client, pytest.raises(openai.APIError):
        client.chat.completions.create(**ASK)
    log = gateway.log_text()
    for secret in (TEAM_KEY, OPS_KEY, LIMITED_KEY, "sk-not-a-key-4242"):
        assert secret not in log


def test_a_reload_adds_a_key(tmp_path: Path, upstream: FakeUpstream) -> None:
    registry = _registry(tmp_path / "registry.yaml", upstream)
    with serve(registry, tmp_path / "serve.log", ["--reload-interval", "0.2"], env=ENV) as served:
        new = "sk-new-key-777"
        headers = {"Authorization": f"Bearer {new}"}
        url = f"{served.url}/v1/chat/completions"
        assert httpx.post(url, json=ASK, headers=headers).status_code == 401
        extra = f'    - {{name: new, sha256: "{hashlib.sha256(new.encode()).hexdigest()}"}}'
        _registry(registry, upstream, extra)
        wait_for(
            "the new key",
            lambda: httpx.post(url, json=ASK, headers=headers).status_code == 200,
            20,
            served.log,
        )


def test_a_reload_naming_an_unset_key_variable_is_rejected(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    registry = _registry(tmp_path / "registry.yaml", upstream)
    with serve(registry, tmp_path / "serve.log", ["--reload-interval", "0.2"], env=ENV) as served:
        _registry(registry, upstream, "    - {name: ghost, key_env: LLMROUTE_TEST_UNSET_KEY}")
        wait_for(
            "the reload rejected",
            lambda: "rejected" in served.log_text(),
            20,
            served.log,
        )
        log = served.log_text()
        assert "LLMROUTE_TEST_UNSET_KEY is not set" in log and "Traceback" not in log
        rejected = next(line for line in log.splitlines() if "rejected" in line)
        assert re.search(rf"{re.escape(str(registry))}:\d+: auth\.keys\[\d+\]\.key_env", rejected)
        with _client(served, TEAM_KEY) as client:  # the running registry still serves
            assert client.chat.completions.create(**ASK).choices


def test_a_key_listed_twice_is_refused_and_lists_need_an_entry() -> None:
    twice = AuthSettings(keys=(ApiKey(name="a", key_env=["ONE", "TWO"]),))
    with pytest.raises(ConfigError, match="'a' lists the same key twice"):
        KeyTable.build(twice, {"ONE": "x" * 16, "TWO": "x" * 16})
    digest = hashlib.sha256(b"y" * 16).hexdigest()
    shared = AuthSettings(keys=(ApiKey(name="a", sha256=digest), ApiKey(name="b", sha256=[digest])))
    with pytest.raises(ConfigError, match="'b' has the same key as 'a'"):
        KeyTable.build(shared, {})
    with pytest.raises(ValueError, match="at least 1"):
        ApiKey(name="a", sha256=[])


def test_a_key_tag_that_breaks_the_rules_is_a_registry_error() -> None:
    for tags, said in (
        ('["team core"]', "letters, digits"),
        ('["a,b"]', "one tag per entry"),
    ):
        with pytest.raises(ConfigErrors) as caught:
            parse_registry(
                "encoder: builtin:static\n"
                "providers: {p: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
                "models: {m: {provider: p, model: m}}\n"
                "routes: [{name: r, examples: [hi], target: m}]\n"
                "default: {target: m}\n"
                f"auth: {{keys: [{{name: k, sha256: '{'0' * 64}', tags: {tags}}}]}}\n",
                source="r.yaml",
            )
        message = str(caught.value)
        assert "r.yaml:6" in message and "auth.keys[0].tags" in message and said in message


def test_a_short_key_is_refused() -> None:
    keys = AuthSettings(keys=(ApiKey(name="weak", key_env="WEAK"),))
    with pytest.raises(ConfigError, match="shorter than 16 characters"):
        KeyTable.build(keys, {"WEAK": "password"})
    assert KeyTable.build(keys, {"WEAK": "x" * 16}).find("x" * 16) is not None


def test_a_key_variable_not_set_stops_serve_in_one_line(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    registry = _registry(tmp_path / "registry.yaml", upstream)
    env = {k: v for k, v in ENV.items() if k != "LLMROUTE_TEST_LIMITED_KEY"}
    done = subprocess.run(
        [str(BIN / "llmroute"), "serve", "--registry", str(registry)],
        env={**{k: v for k, v in os.environ.items() if "_TEST_" not in k}, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    message = done.stderr.strip()
    assert message.count("\n") == 0 and "LLMROUTE_TEST_LIMITED_KEY is not set" in message
    assert re.search(rf"{re.escape(str(registry))}:\d+: auth\.keys\[\d+\]\.key_env", message)
    assert TEAM_KEY not in message
