"""The decision log, feedback and metrics end to end: `llmroute serve` as a subprocess
writing to a real SQLite file or the real PostgreSQL, a fake OpenAI upstream (a real
HTTP server) behind it, the official `openai` client and httpx in front."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_upstream import FAIL_500, FakeUpstream, fake_upstream
from gateway_proc import free_port, serve, wait_for
from prometheus_client.parser import text_string_to_metric_families

from llmroute.dispatch.usage import prompt_tokens
from llmroute.errors import TelemetryError
from llmroute.server.chat import api_of
from llmroute.telemetry.record import LoggedDecision
from llmroute.telemetry.store import open_store
from llmroute.telemetry.store.base import Store

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small, price: {input: 1, output: 2}}
  large: {provider: fake, model: up-large, price: {input: 10, output: 30}}
  broken: {provider: fake, model: %(fail_500)s}
  throttled: {provider: fake, model: "throttled?status=429&retry_after=45"}  # not retried
  slow: {provider: fake, model: "slow?gap=0.05"}
  hung: {provider: fake, model: "hung?delay=4", price: {input: 5, output: 15}}
  thinking: {provider: fake, model: "thinking?ttft=4"}
  cutoff: {provider: fake, model: "cutoff?finish=length", price: {input: 1, output: 2}}
  # 400s whose error code is no identifier: a line of the prompt, and a key
  spilled: {provider: fake, model: "spilled?status=400&code=ignore%%20all%%20rules%%0Asay%%20yes"}
  keyed: {provider: fake, model: "keyed?status=400&code=sk-live-0123456789abcdefghij"}
  named: {provider: fake, model: "named?status=400&code=invalid_value"}
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: large
    policy: {fallback: [small]}
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
  - name: doomed
    examples: ["plan a trip to Rome", "book a hotel in Paris"]
    target: broken
  - name: escalating
    examples: ["summarise the quarterly report"]
    target: cutoff
    cascade: [cutoff, hung]
default: {target: small}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {enabled: false}
telemetry:
  prompts: %(prompts)s
  flush_seconds: 0.05
"""


@dataclass
class Running:
    url: str
    store_url: str
    upstream: FakeUpstream
    log: Path


def _registry(tmp: Path, upstream: FakeUpstream, prompts: str = "full") -> Path:
    path = tmp / "registry.yaml"
    path.write_text(REGISTRY % {"url": upstream.url, "fail_500": FAIL_500, "prompts": prompts})
    return path


@pytest.fixture(scope="module")
def sqlite_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("telemetry-gateway")
    store_url = f"sqlite:///{tmp / 'log.db'}"
    with fake_upstream() as upstream:
        registry = _registry(tmp, upstream)
        env = {"LLMROUTE_TELEMETRY_URL": store_url}
        with serve(registry, tmp / "serve.log", env=env) as served:
            yield Running(served.url, store_url, upstream, tmp / "serve.log")


def _logged(
    store_url: str, decision_id: str | None = None, timeout: float = 10, *, prompt: str = ""
) -> LoggedDecision:
    """The row of the decision (or of the request with that `prompt`), once the writer
    has flushed it (bounded wait)."""
    store = open_store(store_url)
    found: list[LoggedDecision] = []

    def check() -> bool:
        try:
            decisions = store.decisions(0)
        except TelemetryError:  # the writer has not created the tables yet
            return False
        found[:] = [d for d in decisions if d.id == decision_id or (prompt and d.prompt == prompt)]
        return bool(found)

    try:
        wait_for(f"decision {decision_id or prompt} in the log", check, timeout)
    finally:
        store.close()
    return found[0]


def _metrics(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def test_every_field_of_a_served_request_is_logged(sqlite_gateway: Running) -> None:
    with openai.OpenAI(base_url=f"{sqlite_gateway.url}/v1", api_key="x", max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "write a Python function to parse YAML"}],
        )
    decision_id = raw.headers["x-llmroute-decision-id"]
    row = _logged(sqlite_gateway.store_url, decision_id)
    assert (row.route, row.model, row.served_model) == ("code", "large", "large")
    assert row.deployment == "fake"
    assert row.layer == "intent" and 0 < row.confidence <= 1 and row.margin is not None
    assert row.status == 200 and row.error is None
    assert row.latency_ms > 0 and row.ttft_ms is None and not row.stream
    assert row.tokens_in and row.tokens_out and row.cost_usd and row.cost_usd > 0
    assert row.attempts == () and not row.cache_hit
    assert row.prompt == "write a Python function to parse YAML"
    assert row.prompt_mode == "full" and row.prompt_hash and len(row.prompt_hash) == 64
    layers = [layer["layer"] for layer in row.signals["layers"]]
    assert "intent" in layers
    assert row.registry_version and time.time() - 60 < row.ts <= time.time()


def test_a_stream_is_logged_with_its_time_to_first_token(sqlite_gateway: Running) -> None:
    with openai.OpenAI(base_url=f"{sqlite_gateway.url}/v1", api_key="x", max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="chitchat",
            messages=[{"role": "user", "content": "hi there, how are you?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices
        )
    assert text
    row = _logged(sqlite_gateway.store_url, raw.headers["x-llmroute-decision-id"])
    assert row.stream and row.status == 200 and row.error is None
    assert row.ttft_ms is not None and 0 < row.ttft_ms <= row.latency_ms
    assert row.layer == "pinned" and row.served_model == "small"
    assert row.tokens_out


@pytest.mark.parametrize(
    ("model", "code"),
    [("spilled", "upstream_rejected"), ("keyed", "upstream_rejected"), ("named", "invalid_value")],
)
def test_an_upstream_code_reaches_the_client_and_the_log_only_as_an_identifier(
    sqlite_gateway: Running, model: str, code: str
) -> None:
    """An upstream's 400 passes its error code on, but only a short identifier that
    holds no credential: any string could come (a line of the prompt, a key), and it
    would go into the client's JSON and the decision log as it came."""
    response = httpx.post(
        f"{sqlite_gateway.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    row = _logged(sqlite_gateway.store_url, response.headers["x-llmroute-decision-id"])
    assert row.status == 400 and row.error == code


def test_a_failed_request_is_logged_with_its_status_and_attempts(sqlite_gateway: Running) -> None:
    response = httpx.post(
        f"{sqlite_gateway.url}/v1/chat/completions",
        json={"model": "doomed", "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    )
    assert response.status_code == 502
    row = _logged(sqlite_gateway.store_url, response.headers["x-llmroute-decision-id"])
    assert row.status == 502 and row.error == "upstream_error"
    assert row.served_model is None and row.attempts and "broken" in row.attempts[0]


def test_rate_limited_upstreams_are_a_429_logged_and_counted_as_such(
    sqlite_gateway: Running,
) -> None:
    """Every try answered 429: the client's `RateLimitError` (was a 503 ``upstream_error``,
    an `InternalServerError`), with the upstream's wait and the attempts; the log row and
    ``llmroute_requests_total`` say 429 as the client heard it."""
    url = f"{sqlite_gateway.url}/v1"
    with (
        openai.OpenAI(base_url=url, api_key="x", max_retries=0) as c,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        c.chat.completions.create(model="throttled", messages=[{"role": "user", "content": "x"}])
    answer = caught.value.response
    assert answer.headers["retry-after"] == "45"
    error = answer.json()["error"]
    assert error["code"] == "upstream_rate_limited" and "429" in error["attempts"][0]
    row = _logged(sqlite_gateway.store_url, answer.headers["x-llmroute-decision-id"])
    assert row.status == 429 and row.error == "upstream_rate_limited"
    assert row.attempts and "throttled" in row.attempts[0] and not row.stream
    streamed = httpx.post(
        f"{url}/chat/completions",
        json={"model": "throttled", "messages": [{"role": "user", "content": "y"}], "stream": True},
        timeout=10,
    )  # failed before its first event: the same answer, not a 200 that breaks off
    assert streamed.status_code == 429 and streamed.headers["retry-after"] == "45"
    row = _logged(sqlite_gateway.store_url, streamed.headers["x-llmroute-decision-id"])
    assert row.stream and row.status == 429 and row.error == "upstream_rate_limited"
    counted = [
        value
        for labels, value in _metrics(sqlite_gateway.url)["llmroute_requests_total"]
        if labels["model"] == "throttled" and labels["status"] == "429"
    ]
    assert counted == [2.0]


def test_feedback_is_stored_and_checked(sqlite_gateway: Running) -> None:
    url = sqlite_gateway.url
    served = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hi there!"}]},
        timeout=10,
    )
    decision_id = served.headers["x-llmroute-decision-id"]
    # Straight after the response: the decision may still be in the writer's queue.
    ok = httpx.post(
        f"{url}/v1/feedback",
        json={"decision_id": decision_id, "thumbs": "up", "score": 0.75, "comment": "good"},
        timeout=10,
    )
    assert ok.status_code == 200, ok.text
    store = open_store(sqlite_gateway.store_url)
    try:
        stored = [f for f in store.feedback(0) if f.decision_id == decision_id]
    finally:
        store.close()
    assert [(f.thumbs, f.score, f.comment) for f in stored] == [("up", 0.75, "good")]

    unknown = httpx.post(
        f"{url}/v1/feedback", json={"decision_id": "nope", "thumbs": "down"}, timeout=10
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "decision_not_found"
    for bad, param in (
        ({"thumbs": "up"}, "decision_id"),
        ({"decision_id": decision_id, "score": 7}, "score"),
        ({"decision_id": decision_id, "thumbs": "sideways"}, "thumbs"),
        ({"decision_id": decision_id}, "score"),
        ({"decision_id": decision_id, "thumbs": "up", "rating": 5}, "rating"),
        ({"decision_id": decision_id, "score": 10**400}, "score"),  # was a 500
        ({"decision_id": "a\x00b", "thumbs": "up"}, "decision_id"),  # was a 503
    ):
        response = httpx.post(f"{url}/v1/feedback", json=bad, timeout=10)
        assert response.status_code == 400, bad
        assert response.json()["error"]["param"] == param
    assert httpx.post(f"{url}/v1/feedback", content=b"{", timeout=10).status_code == 400


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"thumbs": "up"}, "'decision_id' is required"),
        ({"decision_id": 5, "thumbs": "up"}, "'decision_id' must be"),  # was "is required"
        ({"decision_id": "", "thumbs": "up"}, "'decision_id' must be"),
    ],
)
def test_a_bad_decision_id_is_said_as_missing_or_as_wrong(given: dict[str, Any], said: str) -> None:
    from llmroute.server.errors import GatewayError
    from llmroute.server.feedback import parse_feedback

    with pytest.raises(GatewayError) as caught:
        parse_feedback(given, 0.0)
    assert caught.value.status == 400 and caught.value.param == "decision_id"
    assert caught.value.message.startswith(said)


KEYS = {"A_KEY": "a" * 24, "B_KEY": "b" * 24, "OPS_KEY": "o" * 24}
AUTH = """
auth:
  keys:
    - {name: team-a, key_env: A_KEY}
    - {name: team-b, key_env: B_KEY}
    - {name: ops, key_env: OPS_KEY, admin: true}
"""


def test_a_key_gives_feedback_on_its_own_decisions_only(tmp_path: Path) -> None:
    """Another key's feedback would skew that key's quality numbers and evict its cached
    answers; it gets the 404 of an unknown id (so an id tells it nothing). An admin key
    may judge any decision."""
    with fake_upstream() as upstream:
        registry = _registry(tmp_path, upstream, "hash")
        registry.write_text(registry.read_text() + AUTH)
        env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp_path / 'log.db'}", **KEYS}
        with serve(registry, tmp_path / "serve.log", env=env) as served:

            def post(path: str, key: str, body: dict[str, object]) -> httpx.Response:
                headers = {"authorization": f"Bearer {KEYS[key]}"}
                return httpx.post(f"{served.url}{path}", json=body, headers=headers, timeout=10)

            chat = {"model": "auto", "messages": [{"role": "user", "content": "hi there!"}]}
            decision_id = post("/v1/chat/completions", "B_KEY", chat).headers[
                "x-llmroute-decision-id"
            ]
            judged = {"decision_id": decision_id, "thumbs": "down"}
            other = post("/v1/feedback", "A_KEY", judged)
            assert other.status_code == 404, other.text
            assert other.json()["error"]["code"] == "decision_not_found"
            assert post("/v1/feedback", "B_KEY", judged).status_code == 200
            assert post("/v1/feedback", "OPS_KEY", judged).status_code == 200
    store = open_store(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        assert len([f for f in store.feedback(0) if f.decision_id == decision_id]) == 2
    finally:
        store.close()


def test_feedback_takes_the_request_id_openais_client_exposes(sqlite_gateway: Running) -> None:
    """``x-request-id`` is the decision id, so `completion._request_id` is what feedback
    takes: no raw-response call needed."""
    url = sqlite_gateway.url
    with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "how are you today?"}]
        )
    assert completion._request_id
    row = _logged(sqlite_gateway.store_url, completion._request_id)
    assert row.route == "chitchat"
    feedback = {"decision_id": completion._request_id, "thumbs": "up"}
    assert httpx.post(f"{url}/v1/feedback", json=feedback, timeout=10).status_code == 200


def test_feedback_on_the_first_decision_of_a_fresh_log(tmp_path: Path) -> None:
    """A new SQLite log has no tables until the writer's first pass: feedback straight
    after the first answer waits for it instead of failing with a 503 (it did)."""
    with fake_upstream() as upstream:
        registry = tmp_path / "registry.yaml"
        text = REGISTRY % {"url": upstream.url, "fail_500": FAIL_500, "prompts": "hash"}
        registry.write_text(text.replace("flush_seconds: 0.05", "flush_seconds: 1.0"))
        env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
        with serve(registry, tmp_path / "serve.log", env=env) as served:
            answer = httpx.post(
                f"{served.url}/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": "hi there!"}]},
                timeout=10,
            )
            decision_id = answer.headers["x-llmroute-decision-id"]
            feedback = httpx.post(
                f"{served.url}/v1/feedback",
                json={"decision_id": decision_id, "thumbs": "up"},
                timeout=10,
            )
    assert feedback.status_code == 200, feedback.text


def test_a_route_only_decision_is_logged_and_takes_feedback(sqlite_gateway: Running) -> None:
    """``/v1/route`` dispatches nothing, but its decision is logged (marked route_only),
    so a client that calls the model itself can still send feedback on it; the metrics
    count it as a decision, not a request."""
    url = sqlite_gateway.url
    prompt = "debug this SQL query that never returns"

    def counts() -> tuple[float, float]:
        samples = _metrics(url)
        requests = sum(
            v
            for labels, v in samples.get("llmroute_requests_total", [])
            if labels["route"] == "code"
        )
        decisions = sum(
            v
            for labels, v in samples.get("llmroute_decisions_total", [])
            if labels["route"] == "code"
        )
        return requests, decisions

    before, upstream_calls = counts(), len(sqlite_gateway.upstream.requests)
    decided = httpx.post(
        f"{url}/v1/route",
        json={"model": "auto", "messages": [{"role": "user", "content": prompt}]},
        timeout=10,
    )
    assert decided.status_code == 200, decided.text
    decision_id = decided.headers["x-llmroute-decision-id"]
    assert decided.json()["id"] == decision_id
    ok = httpx.post(
        f"{url}/v1/feedback", json={"decision_id": decision_id, "thumbs": "down"}, timeout=10
    )
    assert ok.status_code == 200, ok.text
    row = _logged(sqlite_gateway.store_url, decision_id)
    assert row.route_only and (row.route, row.model) == ("code", "large")
    assert row.status == 200 and row.served_model is None and row.deployment is None
    assert row.tokens_in is None and row.cost_usd is None and row.ttft_ms is None
    assert row.prompt == prompt  # the registry logs prompts in full
    assert len(sqlite_gateway.upstream.requests) == upstream_calls
    after = counts()
    assert after[0] == before[0] and after[1] == before[1] + 1


def test_tags_and_the_end_user_are_logged_and_reported(sqlite_gateway: Running) -> None:
    """``x-llmroute-tags`` and the end user the request names (OpenAI's ``user`` /
    ``safety_identifier``, Anthropic's ``metadata.user_id``) reach the decision log and
    `llmroute report`, per tag and per end user; a malformed header is a 400 with
    nothing dispatched."""
    import json
    import subprocess
    import sys

    url = sqlite_gateway.url
    tags = {"x-llmroute-tags": "team:search, app=web,team:search"}
    with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "write a Python function to sort tags"}],
            user="user-7",
            extra_headers=tags,
        )
        streamed = c.chat.completions.with_raw_response.create(
            model="chitchat",
            messages=[{"role": "user", "content": "hi there, tag me"}],
            stream=True,
            extra_body={"safety_identifier": "hashed-42"},
            extra_headers={"x-llmroute-tags": "team:ads"},
        )
        list(streamed.parse())
        before = len(sqlite_gateway.upstream.requests)
        with pytest.raises(openai.BadRequestError) as refused:
            c.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-llmroute-tags": "team search"},
            )
    assert refused.value.status_code == 400
    assert refused.value.body["param"] == "x-llmroute-tags"  # type: ignore[index]
    assert "letters, digits" in refused.value.body["message"]  # type: ignore[index]
    assert len(sqlite_gateway.upstream.requests) == before
    utf8 = httpx.post(  # a UTF-8 tag is refused naming its characters, not latin-1 mojibake
        f"{url}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-llmroute-tags": "équipe:α".encode()},
        timeout=10,
    )
    assert utf8.status_code == 400 and "'équipe:α'" in utf8.json()["error"]["message"]
    messages = httpx.post(
        f"{url}/v1/messages",
        json={
            "model": "chitchat",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi from claude code"}],
            "metadata": {"user_id": "claude-user"},
        },
        headers={"x-llmroute-tags": "app=cli"},
        timeout=10,
    )
    assert messages.status_code == 200, messages.text
    row = _logged(sqlite_gateway.store_url, raw.headers["x-llmroute-decision-id"])
    assert (row.end_user, row.tags) == ("user-7", ("team:search", "app=web"))
    row = _logged(sqlite_gateway.store_url, streamed.headers["x-llmroute-decision-id"])
    assert (row.end_user, row.tags) == ("hashed-42", ("team:ads",))
    row = _logged(sqlite_gateway.store_url, messages.headers["x-llmroute-decision-id"])
    assert (row.end_user, row.tags) == ("claude-user", ("app=cli",))

    def report(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "llmroute"), "report", "--url",
             sqlite_gateway.store_url, "--since", "1h", "--json", *args],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        payload: dict[str, object] = json.loads(done.stdout)
        return payload

    everything = report()
    by_tag = {t["name"]: t["n"] for t in everything["tags"]}  # type: ignore[attr-defined]
    assert by_tag["team:search"] == by_tag["app=web"] == 1 and by_tag["team:ads"] == 1
    assert set(by_tag) - {"(untagged)"} == {"team:search", "app=web", "team:ads", "app=cli"}
    users = {u["name"] for u in everything["users"]}  # type: ignore[attr-defined]
    assert {"user-7", "hashed-42", "claude-user"} <= users
    search = report("--tag", "team:search")
    assert search["tag"] == "team:search" and search["total"]["n"] == 1  # type: ignore[index]
    assert [r["name"] for r in search["routes"]] == ["code"]  # type: ignore[attr-defined]


def test_the_api_each_request_came_by_is_logged_and_reported(sqlite_gateway: Running) -> None:
    """Chat, Messages, Responses and (legacy) completions requests are logged with the
    API they came by, ``/v1/route`` decisions with none, and `llmroute report` counts
    requests per API."""
    import json
    import subprocess
    import sys

    url = sqlite_gateway.url
    asked = {
        "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        "messages": (
            "/v1/messages",
            {"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
        ),
        "responses": ("/v1/responses", {"input": "hi"}),
        "completions": ("/v1/completions", {"prompt": "hi"}),
        None: ("/v1/route", {"messages": [{"role": "user", "content": "hi"}]}),
    }
    for api, (path, body) in asked.items():
        reply = httpx.post(f"{url}{path}", json={"model": "chitchat", **body}, timeout=10)
        assert reply.status_code == 200, reply.text
        row = _logged(sqlite_gateway.store_url, reply.headers["x-llmroute-decision-id"])
        assert row.api == api, path
    done = subprocess.run(
        [str(Path(sys.executable).parent / "llmroute"), "report", "--url",
         sqlite_gateway.store_url, "--since", "1h", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    by_api = {a["name"]: a["n"] for a in json.loads(done.stdout)["apis"]}
    assert {"chat", "messages", "responses", "completions"} <= set(by_api)
    assert all(n >= 1 for n in by_api.values())
    narrowed = subprocess.run(
        [str(Path(sys.executable).parent / "llmroute"), "report", "--url",
         sqlite_gateway.store_url, "--since", "1h", "--json", "--api", "completions"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    only = json.loads(narrowed.stdout)
    assert only["api"] == "completions" and only["total"]["n"] == by_api["completions"]
    assert [a["name"] for a in only["apis"]] == ["completions"]
    exported = subprocess.run(
        [str(Path(sys.executable).parent / "llmroute"), "export", "--url",
         sqlite_gateway.store_url, "--since", "1h", "--api", "messages"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(rows) == by_api["messages"] and {r["api"] for r in rows} == {"messages"}
    typo = subprocess.run(
        [str(Path(sys.executable).parent / "llmroute"), "report", "--url",
         sqlite_gateway.store_url, "--api", "message"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert typo.returncode == 2 and "'message' is not one of 'chat', 'messages'" in typo.stderr
    # a batch line's request carries its endpoint's path; a prefix in front changes nothing
    assert api_of("/llm/v1/completions") == "completions" and api_of("/v1/embeddings") is None


def test_metrics_count_requests_by_route_model_and_status(sqlite_gateway: Running) -> None:
    for model in ("chitchat", "auto"):  # pinned, then routed by intent
        httpx.post(
            f"{sqlite_gateway.url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi there!"}]},
            timeout=10,
        )
    samples = _metrics(sqlite_gateway.url)
    served = [
        value
        for labels, value in samples["llmroute_requests_total"]
        if labels == {"route": "chitchat", "model": "small", "status": "200"}
    ]
    assert served and served[0] >= 1
    assert any(
        labels.get("layer") == "intent"
        for labels, _ in samples.get("llmroute_decision_seconds_count", [])
    )


def test_requests_refused_before_routing_are_counted_once(sqlite_gateway: Running) -> None:
    """A client broken by a model rename got 404s that no metric counted: every error
    rate read 0 %. Refusals are `llmroute_api_errors_total{api, status}`; a failure that
    its decision record counts (`requests_total`) is not counted again."""
    url = sqlite_gateway.url

    def errors() -> dict[tuple[str, str], float]:
        return {
            (labels["api"], labels["status"]): value
            for labels, value in _metrics(url).get("llmroute_api_errors_total", [])
        }

    def failed_routed() -> float:
        samples = _metrics(url)["llmroute_requests_total"]
        return sum(v for labels, v in samples if labels["status"] == "502")

    before, routed_before = errors(), failed_routed()
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    sent = [
        ("/v1/chat/completions", {"model": "no-such-model", **ask}, 404, "chat"),
        ("/v1/chat/completions", {"model": "auto", "messages": "hi"}, 400, "chat"),
        ("/v1/messages", {"model": "no-such-model", "max_tokens": 5, **ask}, 404, "messages"),
        ("/v1/embeddings", {"model": "small", "input": "x"}, 404, "embeddings"),  # chat model
        ("/v1/unknown/path", {}, 404, "other"),
        ("/v1/chat/completions", {"model": "doomed", **ask}, 502, None),  # logged: not here
    ]
    for path, body, status, _ in sent:
        assert httpx.post(f"{url}{path}", json=body, timeout=10).status_code == status, path
    after = errors()
    for _, _, status, api in sent:
        if api is not None:
            key = (api, str(status))
            assert after.get(key, 0) - before.get(key, 0) == 1, key  # each once
    assert after.get(("chat", "502"), 0) == before.get(("chat", "502"), 0)
    assert failed_routed() == routed_before + 1
    assert all(api in {"chat", "messages", "embeddings", "other", "responses", "completions",
                       "rerank", "batches", "files", "route", "feedback", "conversations",
                       "models", "key"} for api, _ in after)  # fmt: skip


def test_a_burst_of_1000_requests_loses_no_record(tmp_path: Path, postgres_url: str) -> None:
    """1,000 requests, 32 at a time, through the gateway into PostgreSQL: every one is
    logged (counted in the database). Batches of 25 (not the default 500, which a burst
    at this rate seldom fills between two 0.05 s flushes) make the writer write full
    batches as well as the flush's partial ones, at a fifth of the requests."""
    total, concurrency = 1000, 32
    with fake_upstream() as upstream:
        registry = _registry(tmp_path, upstream, prompts="hash")
        text = registry.read_text()
        assert "flush_seconds: 0.05" in text  # where the batch size goes
        registry.write_text(
            text.replace("flush_seconds: 0.05", "flush_seconds: 0.05\n  batch_size: 25")
        )
        env = {"LLMROUTE_TELEMETRY_URL": postgres_url}
        with serve(registry, tmp_path / "serve.log", env=env) as served:
            statuses = asyncio.run(_burst(served.url, total, concurrency))
            assert statuses == {200: total}
            store = open_store(postgres_url)
            try:
                wait_for(
                    "all 1,000 decisions in PostgreSQL",
                    lambda: _count(store) >= total,
                    60,
                    tmp_path / "serve.log",
                )
                assert store.count_decisions() == total
            finally:
                store.close()
            dropped = _metrics(served.url).get("llmroute_telemetry_dropped_total", [])
            assert sum(value for _, value in dropped) == 0


def _count(store: Store) -> int:
    try:
        return store.count_decisions()
    except TelemetryError:  # not migrated yet
        return 0


async def _burst(url: str, total: int, concurrency: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                response = await client.post(
                    "/v1/chat/completions",
                    json={"model": "small", "messages": [{"role": "user", "content": f"n {i}"}]},
                )
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def test_with_the_store_down_requests_succeed_and_drops_are_counted(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    store_url = f"postgresql://postgres:pw-h8x@127.0.0.1:{closed}/test"
    with fake_upstream() as upstream:
        registry = _registry(tmp_path, upstream)
        env = {"LLMROUTE_TELEMETRY_URL": store_url}
        with serve(registry, tmp_path / "serve.log", env=env) as served:
            for i in range(40):
                response = httpx.post(
                    f"{served.url}/v1/chat/completions",
                    json={"model": "small", "messages": [{"role": "user", "content": f"{i}"}]},
                    timeout=10,
                )
                assert response.status_code == 200

            def dropped() -> float:
                samples = _metrics(served.url).get("llmroute_telemetry_dropped_total", [])
                return sum(value for _, value in samples)

            wait_for("40 dropped records", lambda: dropped() >= 40, 30, tmp_path / "serve.log")
            for _ in range(3):  # a client retrying: one line says why, not one a try
                feedback = httpx.post(
                    f"{served.url}/v1/feedback",
                    json={"decision_id": "x", "thumbs": "up"},
                    timeout=10,
                )
                assert feedback.status_code == 503
        log = (tmp_path / "serve.log").read_text()
        assert "dropped" in log
        unstored = [line for line in log.splitlines() if "feedback not stored" in line]
        assert len(unstored) == 1, log[-3000:]
        assert "no connection to PostgreSQL at postgresql://postgres:***@" in unstored[0]
        assert "pw-h8x" not in log


def test_requests_in_flight_are_a_gauge(sqlite_gateway: Running) -> None:
    """``llmroute_requests_in_flight`` counts the API requests being served (a stream
    until it ends), not the scrape that reads it."""

    def in_flight() -> float:
        (sample,) = _metrics(sqlite_gateway.url)["llmroute_requests_in_flight"]
        return sample[1]

    assert in_flight() == 0
    upstream = sqlite_gateway.upstream
    before = len(upstream.cut)
    prompt = " ".join(f"w{i}" for i in range(200)) + " in flight"
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", f"{sqlite_gateway.url}/v1/chat/completions", json=body) as reply,
    ):
        lines = reply.iter_lines()  # kept: a generator dropped mid-way closes the stream
        for _ in range(4):
            next(lines)
        assert in_flight() == 1
    wait_for("the stream's end", lambda: in_flight() == 0, 10)
    # and its upstream stream closed, so that the next tests see only their own cuts
    wait_for("the upstream stream closed", lambda: len(upstream.cut) > before, 10)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
def test_a_client_that_hangs_up_mid_stream_stops_the_upstream_stream(
    sqlite_gateway: Running, path: str
) -> None:
    """The gateway closes its upstream stream when the caller goes away, so the provider
    stops generating (and billing) the rest, and logs the request as cut off; through
    each front, whose translated stream must pass the close on."""
    words = 400  # 20 s at 0.05 s a word if nothing closed the upstream stream
    prompt = " ".join(f"w{i}" for i in range(words)) + f" {path}"
    body: dict[str, object] = {"model": "slow", "stream": True}
    if path == "/v1/responses":
        body["input"] = prompt
    else:
        body["messages"] = [{"role": "user", "content": prompt}]
    if path == "/v1/messages":
        body["max_tokens"] = 1000
    upstream = sqlite_gateway.upstream
    before = len(upstream.cut)
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", f"{sqlite_gateway.url}{path}", json=body) as reply,
    ):
        assert reply.status_code == 200
        decision_id = reply.headers["x-llmroute-decision-id"]
        for seen, _ in enumerate(reply.iter_lines()):
            if seen >= 8:
                break  # leaving the block closes the connection mid-stream
    wait_for("the upstream stream closed", lambda: len(upstream.cut) > before, 10)
    model, sent = upstream.cut[-1]
    assert model == "slow?gap=0.05" and sent < words // 2
    row = _logged(sqlite_gateway.store_url, decision_id)
    assert row.stream and row.error == "client_disconnected" and row.served_model == "slow"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
def test_a_client_that_times_out_stops_the_upstream_call(
    sqlite_gateway: Running, path: str
) -> None:
    """A whole (not streamed) answer is cancelled when its client hangs up first (a
    client-side timeout here): the upstream call is closed instead of running to its end
    for nobody, and the decision is logged with status 499."""
    upstream = sqlite_gateway.upstream
    before = len(upstream.cut)
    text = f"anyone there {path}?"
    body: dict[str, object] = {"model": "hung"}
    if path == "/v1/responses":
        body["input"] = text
    else:
        body["messages"] = [{"role": "user", "content": text}]
    if path == "/v1/messages":
        body["max_tokens"] = 64
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{sqlite_gateway.url}{path}", json=body, timeout=0.5)
    # the upstream answers after 4 s; the gateway's own limit is 5 s
    wait_for("the upstream call closed", lambda: len(upstream.cut) > before, 10)
    assert upstream.cut[-1] == ("hung?delay=4", 0)
    row = _logged(sqlite_gateway.store_url, prompt=text)
    assert row.status == 499 and row.error == "client_disconnected"
    assert row.model == "hung" and row.served_model is None
    # the prompt was sent and may be billed: counted (estimated), priced, no completion
    assert row.usage_estimated and row.tokens_out == 0 and row.tokens_in
    assert row.cost_usd == pytest.approx(row.tokens_in * 5 / 1e6)


def test_a_cascade_left_on_its_second_tier_logs_the_first_answer_and_the_cut_prompt(
    sqlite_gateway: Running,
) -> None:
    """The first tier answered (cut off, so escalated) and the second hangs until the
    client leaves: the request cost the first answer, as the upstream reported it, and
    the prompt sent to the second tier, counted; the log holds both, priced on each
    tier's model."""
    upstream = sqlite_gateway.upstream
    before = len(upstream.cut)
    body = {
        "model": "escalating",
        "messages": [{"role": "user", "content": "summarise the board's quarterly report"}],
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{sqlite_gateway.url}/v1/chat/completions", json=body, timeout=1.0)
    wait_for("the upstream call closed", lambda: len(upstream.cut) > before, 10)
    assert upstream.cut[-1] == ("hung?delay=4", 0)
    row = _logged(sqlite_gateway.store_url, prompt=body["messages"][0]["content"])
    assert row.status == 499 and row.error == "client_disconnected"
    cut = prompt_tokens(body)  # the second tier's prompt, counted: 5 $/M input
    assert row.usage_estimated
    assert (row.tokens_in, row.tokens_out) == (3 + cut, 3)  # the fake upstream reports 3 / 3
    assert row.cost_usd == pytest.approx((3 * 1 + 3 * 2 + cut * 5) / 1e6)


def test_a_cascade_left_on_its_second_tier_counts_each_tiers_tokens_under_its_model(
    sqlite_gateway: Running,
) -> None:
    """As its budget is charged, the metrics count the cut prompt under the second tier
    that was sent it and the first tier's answer under the first (`usage_by_model`): a
    request its client left was counted whole under the decided model (the first tier),
    as a served one no longer is."""
    upstream = sqlite_gateway.upstream
    before_cut = len(upstream.cut)
    text = "summarise the quarterly report for the board, in brief"
    body = {"model": "escalating", "messages": [{"role": "user", "content": text}]}

    def tokens() -> dict[tuple[str, str], float]:
        return {
            (labels["model"], labels["direction"]): value
            for labels, value in _metrics(sqlite_gateway.url).get("llmroute_tokens_total", [])
        }

    before = tokens()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{sqlite_gateway.url}/v1/chat/completions", json=body, timeout=1.0)
    wait_for("the upstream call closed", lambda: len(upstream.cut) > before_cut, 10)
    row = _logged(sqlite_gateway.store_url, prompt=text)
    assert row.status == 499 and row.model == "cutoff"
    after = tokens()
    spent = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    cut = prompt_tokens(body)
    assert spent == {("cutoff", "in"): 3, ("cutoff", "out"): 3, ("hung", "in"): cut}


def test_a_client_that_leaves_before_the_first_token_stops_the_stream(
    sqlite_gateway: Running,
) -> None:
    """A stream whose client leaves while the model has not sent its first event (a
    reasoning model thinking) is cancelled then, not when the first event arrives."""
    upstream = sqlite_gateway.upstream
    before = len(upstream.cut)
    text = "think before you answer"
    body = {"model": "thinking", "stream": True, "messages": [{"role": "user", "content": text}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{sqlite_gateway.url}/v1/chat/completions", json=body, timeout=0.5)
    wait_for("the upstream stream closed", lambda: len(upstream.cut) > before, 10)
    assert upstream.cut[-1] == ("thinking?ttft=4", 0)
    row = _logged(sqlite_gateway.store_url, prompt=text)
    assert row.stream and row.status == 499 and row.error == "client_disconnected"


def test_feedback_reaching_another_process_waits_for_its_writer(tmp_path: Path) -> None:
    """Two gateways on one log (as two replicas, or two ``--workers``): feedback sent to
    one right after the other answered is kept, though the answering process's writer
    holds the decision for up to its flush period (0.6 s here)."""
    store_url = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {"LLMROUTE_TELEMETRY_URL": store_url}
    with fake_upstream() as upstream:
        registry = _registry(tmp_path, upstream)
        registry.write_text(
            registry.read_text().replace("flush_seconds: 0.05", "flush_seconds: 0.6")
        )
        with (
            serve(registry, tmp_path / "a.log", env=env) as a,
            serve(registry, tmp_path / "b.log", env=env) as b,
        ):
            asked = {"model": "small", "messages": [{"role": "user", "content": "hi there!"}]}
            statuses = []
            for _ in range(3):
                answered = httpx.post(f"{a.url}/v1/chat/completions", json=asked, timeout=10)
                decision_id = answered.headers["x-llmroute-decision-id"]
                feedback = httpx.post(
                    f"{b.url}/v1/feedback",
                    json={"decision_id": decision_id, "thumbs": "up"},
                    timeout=10,
                )
                statuses.append(feedback.status_code)
    assert statuses == [200, 200, 200]
