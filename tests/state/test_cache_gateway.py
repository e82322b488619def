"""The response cache through the gateway, end to end: `llmroute serve` as a
subprocess, the official `openai` client in front, a fake upstream behind (it numbers
its answers, so a repeated answer is a cached one). In memory for one gateway, and in a
real Redis shared by two gateways."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import Served, serve, wait_for
from redis_service import REDIS_URL

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: 'small?vary=1', price: {input: 1, output: 2}}
  large: {provider: fake, model: 'large?vary=1', price: {input: 10, output: 20}}
routes:
  - {name: code, examples: ["write a python function", "fix the bug in my code"], target: large}
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
dispatch:
  retries: {attempts: 0}
cache: %(cache)s
"""


def _messages(text: str) -> Any:
    return [{"role": "user", "content": text}]


def _registry(tmp: Path, upstream: FakeUpstream, cache: str) -> Path:
    path = tmp / "registry.yaml"
    path.write_text(REGISTRY % {"url": upstream.url, "cache": cache})
    return path


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[openai.OpenAI, FakeUpstream, Served, Path]]:
    tmp = tmp_path_factory.mktemp("cache-gateway")
    db = tmp / "decisions.db"
    with fake_upstream() as upstream:
        registry = _registry(tmp, upstream, "{ttl_s: 300}")
        env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"}
        with (
            serve(registry, tmp / "serve.log", env=env) as served,
            openai.OpenAI(base_url=f"{served.url}/v1", api_key="-", max_retries=0) as c,
        ):
            yield c, upstream, served, db


def test_a_repeated_request_is_answered_from_the_cache(
    gateway: tuple[openai.OpenAI, FakeUpstream, Served, Path],
) -> None:
    c, upstream, _, _ = gateway
    before = len(upstream.requests)
    ask = {"model": "auto", "messages": _messages("write a python function to sort a list")}
    first = c.chat.completions.with_raw_response.create(**ask)
    second = c.chat.completions.with_raw_response.create(**ask)
    assert first.headers["x-llmroute-cache"] == "miss"
    assert second.headers["x-llmroute-cache"] == "hit"
    assert int(second.headers["age"]) >= 0
    assert second.headers["x-llmroute-model"] == "large"
    assert second.headers["x-llmroute-route"] == "code"
    assert first.headers["x-llmroute-decision-id"] != second.headers["x-llmroute-decision-id"]
    answer = first.parse().choices[0].message.content
    assert answer is not None and " #" in answer
    assert second.parse().choices[0].message.content == answer
    first_usage, second_usage = first.parse().usage, second.parse().usage
    assert first_usage is not None and second_usage is not None
    assert second.parse().id == first.parse().id
    assert second_usage.total_tokens == first_usage.total_tokens
    assert (first_usage.model_extra or {})["cost_usd"] > 0
    assert (second_usage.model_extra or {})["cost_usd"] == 0.0  # the hit cost nothing
    assert len(upstream.requests) == before + 1
    # Asking for the route by name is the same request: still a hit.
    third = c.chat.completions.with_raw_response.create(**{**ask, "model": "code"})
    assert third.headers["x-llmroute-cache"] == "hit"
    assert len(upstream.requests) == before + 1


def test_other_parameters_miss_and_cache_control_bypasses(
    gateway: tuple[openai.OpenAI, FakeUpstream, Served, Path],
) -> None:
    c, upstream, _, _ = gateway
    ask = {"model": "auto", "messages": _messages("hello there, how is the weather")}
    c.chat.completions.create(**ask)
    before = len(upstream.requests)
    warmer = c.chat.completions.with_raw_response.create(**ask, temperature=1.5)
    assert warmer.headers["x-llmroute-cache"] == "miss"
    fresh = c.chat.completions.with_raw_response.create(
        **ask, extra_headers={"Cache-Control": "no-cache"}
    )
    assert fresh.headers["x-llmroute-cache"] == "bypass"
    assert len(upstream.requests) == before + 2
    # no-cache stored its fresh answer: the next plain request gets that one.
    again = c.chat.completions.create(**ask)
    assert again.choices[0].message.content == fresh.parse().choices[0].message.content
    private = c.chat.completions.with_raw_response.create(
        model="auto",
        messages=_messages("hello there, a secret question"),
        extra_headers={"Cache-Control": "no-store"},
    )
    assert private.headers["x-llmroute-cache"] == "bypass"
    after = c.chat.completions.with_raw_response.create(
        model="auto", messages=_messages("hello there, a secret question")
    )
    assert after.headers["x-llmroute-cache"] == "miss"  # no-store kept it out
    assert len(upstream.requests) == before + 4


def test_a_stream_is_replayed(
    gateway: tuple[openai.OpenAI, FakeUpstream, Served, Path],
) -> None:
    c, upstream, served, _ = gateway
    ask = {"model": "auto", "messages": _messages("fix the bug in my code please"), "stream": True}

    def text(raw: Any) -> str:
        return "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)

    stored = _stored_count(served)
    first = c.chat.completions.with_raw_response.create(**ask)
    first_text = text(first)
    # polling with requests would store a probe's answer if one came before the write
    wait_for("the stream to be stored", lambda: _stored_count(served) > stored, 10)
    before = len(upstream.requests)
    second = c.chat.completions.with_raw_response.create(**ask)
    assert second.headers["x-llmroute-cache"] == "hit"
    assert second.headers["content-type"].startswith("text/event-stream")
    assert text(second) == first_text and " #" in first_text  # numbered: one answer
    assert len(upstream.requests) == before
    # A streamed answer is not served to a request that does not stream, and back.
    plain = c.chat.completions.with_raw_response.create(**{**ask, "stream": False})
    assert plain.headers["x-llmroute-cache"] == "miss"


def _hit(c: openai.OpenAI, ask: dict[str, Any]) -> bool:
    raw = c.chat.completions.with_raw_response.create(**ask)
    hit = raw.headers["x-llmroute-cache"] == "hit"
    parsed = raw.parse()
    if isinstance(parsed, openai.Stream):
        parsed.close()
    return hit


def test_metrics_and_the_decision_log_count_hits(
    gateway: tuple[openai.OpenAI, FakeUpstream, Served, Path],
) -> None:
    c, _, served, db = gateway
    ask = {"model": "auto", "messages": _messages("hello there, count me")}
    c.chat.completions.create(**ask)
    hit = c.chat.completions.with_raw_response.create(**ask)
    decision_id = hit.headers["x-llmroute-decision-id"]
    metrics = httpx.get(f"{served.url}/metrics", timeout=5).text
    assert 'llmroute_cache_total{result="hit"}' in metrics
    assert 'llmroute_cache_total{result="stored"}' in metrics

    def logged() -> bool:
        try:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                row = conn.execute(
                    "SELECT cache_hit, served_model, cost_usd FROM decisions WHERE id = ?",
                    (decision_id,),
                ).fetchone()
        except sqlite3.OperationalError:  # the log's table is not made yet
            return False
        return row is not None and row == (1, "small", None)

    wait_for("the hit in the decision log", logged, 10)


def test_negative_feedback_evicts_the_answer_it_judged(
    gateway: tuple[openai.OpenAI, FakeUpstream, Served, Path],
) -> None:
    """A thumbs down on a cached answer (here on the decision a hit served) drops it:
    the next request gets a fresh answer. Thumbs up keeps it."""
    c, _, served, _ = gateway
    ask = {"model": "auto", "messages": _messages("hello there, is this answer any good")}
    first = c.chat.completions.create(**ask)
    wait_for("the answer to be stored", lambda: _hit(c, ask), 10)
    hit = c.chat.completions.with_raw_response.create(**ask)
    decision_id = hit.headers["x-llmroute-decision-id"]
    url = f"{served.url}/v1/feedback"
    up = httpx.post(url, json={"decision_id": decision_id, "thumbs": "up"}, timeout=10)
    assert up.status_code == 200 and "cache_evicted" not in up.json(), up.text
    assert _hit(c, ask)
    down = httpx.post(url, json={"decision_id": decision_id, "thumbs": "down"}, timeout=10)
    assert down.json() == {"ok": True, "decision_id": decision_id, "cache_evicted": True}
    fresh = c.chat.completions.with_raw_response.create(**ask)
    assert fresh.headers["x-llmroute-cache"] == "miss"
    assert fresh.parse().choices[0].message.content != first.choices[0].message.content
    again = httpx.post(url, json={"decision_id": decision_id, "score": 0.1}, timeout=10)
    assert again.json()["cache_evicted"] is False  # already gone
    metrics = httpx.get(f"{served.url}/metrics", timeout=5).text
    assert 'llmroute_cache_total{result="evicted"} 1.0' in metrics


SEMANTIC = "{ttl_s: 300, semantic: {threshold: 0.95}}"
FRANCE = "What is the capital of France?"


def test_a_request_close_in_meaning_is_answered_from_the_cache(tmp_path: Path) -> None:
    """With the builtin static encoder "what is the capital of france" is at cosine
    0.977 from the stored question (a hit at 0.95), "... of Spain?" at 0.905 (a miss).
    Everything else about the request must match exactly: another system prompt or
    temperature misses, however close the message."""
    with fake_upstream() as upstream:
        registry = _registry(tmp_path, upstream, SEMANTIC)
        with (
            serve(registry, tmp_path / "serve.log") as served,
            openai.OpenAI(base_url=f"{served.url}/v1", api_key="-", max_retries=0) as c,
        ):
            first = c.chat.completions.with_raw_response.create(
                model="auto", messages=_messages(FRANCE)
            )
            assert first.headers["x-llmroute-cache"] == "miss"
            ask = {"model": "auto", "messages": _messages("what is the capital of france")}
            wait_for("the answer to be stored", lambda: _stored(served), 10)
            close = c.chat.completions.with_raw_response.create(**ask)
            assert close.headers["x-llmroute-cache"] == "hit"
            assert 0.95 <= float(close.headers["x-llmroute-cache-similarity"]) < 1.0
            answer = first.parse().choices[0].message.content
            assert close.parse().choices[0].message.content == answer
            spain = c.chat.completions.with_raw_response.create(
                model="auto", messages=_messages("What is the capital of Spain?")
            )
            assert spain.headers["x-llmroute-cache"] == "miss"
            assert "x-llmroute-cache-similarity" not in spain.headers
            system = [{"role": "system", "content": "Answer in French."}, *_messages(FRANCE)]
            other_system = c.chat.completions.with_raw_response.create(
                model="auto", messages=system
            )
            warmer = c.chat.completions.with_raw_response.create(**ask, temperature=1.5)
            assert other_system.headers["x-llmroute-cache"] == "miss"
            assert warmer.headers["x-llmroute-cache"] == "miss"
            assert len(upstream.requests) == 4  # France, Spain, the system prompt, warmer
            # Numbers must be equal: these two are at 0.983 but ask about other times.
            nine = _messages("book a room between 9 and 10:30")
            c.chat.completions.create(model="auto", messages=nine)
            wait_for("the booking to be stored", lambda: _stored_count(served) >= 5, 10)
            other_time = c.chat.completions.with_raw_response.create(
                model="auto", messages=_messages("book a room between 9:30 and 10:30")
            )
            assert other_time.headers["x-llmroute-cache"] == "miss"
            # An image is not embedded: the same words about another picture are not a hit.
            for url in ("https://example.com/a.png", "https://example.com/b.png"):
                picture = [
                    {"type": "text", "text": "what is in this picture?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ]
                seen = c.chat.completions.with_raw_response.create(
                    model="auto", messages=[{"role": "user", "content": picture}]
                )
                assert seen.headers["x-llmroute-cache"] == "miss"
            # Past max_chars (254: what the encoder surely sees whole) only exact hits.
            notes = "here are my meeting notes from the planning session. " * 5
            for ending in ("summarise them.", "translate them."):
                long = c.chat.completions.with_raw_response.create(
                    model="auto", messages=_messages(notes + ending)
                )
                assert long.headers["x-llmroute-cache"] == "miss"
                wait_for("it to be stored", lambda: _stored_count(served) >= 6, 10)
            assert len(upstream.requests) == 10
            # Streams are looked up by meaning too (among streams).
            joke = {"model": "auto", "stream": True}
            first_stream = c.chat.completions.with_raw_response.create(
                **joke, messages=_messages("tell me a joke about cats")
            )
            first_text = "".join(
                ch.choices[0].delta.content or "" for ch in first_stream.parse() if ch.choices
            )
            wait_for("the stream to be stored", lambda: _stored_count(served) >= 8, 10)
            again = c.chat.completions.with_raw_response.create(
                **joke, messages=_messages("Tell me a joke about cats!")
            )
            again_text = "".join(
                ch.choices[0].delta.content or "" for ch in again.parse() if ch.choices
            )
            assert again.headers["x-llmroute-cache"] == "hit"
            assert "x-llmroute-cache-similarity" in again.headers
            assert again_text == first_text
            assert len(upstream.requests) == 11
            # Who does what to whom: the same words in another order embed alike (1.000
            # with this encoder), their word pairs do not.
            c.chat.completions.create(
                model="auto", messages=_messages("send a transfer from alice to bob")
            )
            wait_for("the transfer to be stored", lambda: _stored_count(served) >= 9, 10)
            swapped = c.chat.completions.with_raw_response.create(
                model="auto", messages=_messages("send a transfer from bob to alice")
            )
            assert swapped.headers["x-llmroute-cache"] == "miss"
            assert len(upstream.requests) == 13
            metrics = httpx.get(f"{served.url}/metrics", timeout=5).text
            assert 'llmroute_cache_total{result="semantic_hit"}' in metrics
            assert 'llmroute_cache_total{result="semantic_miss"}' in metrics


def test_two_gateways_share_the_semantic_index_in_redis(
    tmp_path: Path, redis_namespace: str
) -> None:
    cache = (
        f"{{url: '{REDIS_URL}', namespace: {redis_namespace}, timeout_s: 2, "
        "semantic: {threshold: 0.95}}"
    )
    with fake_upstream() as upstream:
        registry = _registry(tmp_path, upstream, cache)
        with (
            serve(registry, tmp_path / "a.log") as a,
            serve(registry, tmp_path / "b.log") as b,
            openai.OpenAI(base_url=f"{a.url}/v1", api_key="-", max_retries=0) as ca,
            openai.OpenAI(base_url=f"{b.url}/v1", api_key="-", max_retries=0) as cb,
        ):
            first = ca.chat.completions.create(model="auto", messages=_messages(FRANCE))
            ask = {"model": "auto", "messages": _messages("what is the capital of france")}
            wait_for("gateway a to store its answer", lambda: _stored(a), 10)
            close = cb.chat.completions.with_raw_response.create(**ask)
            assert close.headers["x-llmroute-cache"] == "hit"
            assert "x-llmroute-cache-similarity" in close.headers
            assert close.parse().choices[0].message.content == first.choices[0].message.content
            assert len(upstream.requests) == 1


def _stored(served: Served) -> bool:
    """Whether the gateway has written an answer (a probe request would write its own)."""
    return _stored_count(served) > 0


def _stored_count(served: Served) -> float:
    metrics = httpx.get(f"{served.url}/metrics", timeout=5).text
    for line in metrics.splitlines():
        if line.startswith('llmroute_cache_total{result="stored"}'):
            return float(line.split()[-1])
    return 0.0


def test_two_gateways_share_a_redis_cache(tmp_path: Path, redis_namespace: str) -> None:
    cache = f"{{url: '{REDIS_URL}', namespace: {redis_namespace}, timeout_s: 2}}"
    with fake_upstream() as upstream:
        registry = _registry(tmp_path, upstream, cache)
        with (
            serve(registry, tmp_path / "a.log") as a,
            serve(registry, tmp_path / "b.log") as b,
        ):
            ask = {"model": "auto", "messages": _messages("write a python function, shared")}
            with (
                openai.OpenAI(base_url=f"{a.url}/v1", api_key="-", max_retries=0) as ca,
                openai.OpenAI(base_url=f"{b.url}/v1", api_key="-", max_retries=0) as cb,
            ):
                first = ca.chat.completions.with_raw_response.create(**ask)
                assert first.headers["x-llmroute-cache"] == "miss"
                # b asking before a's answer is in Redis would store b's own answer
                # over it: wait for a's write, then b's first ask must hit
                wait_for("gateway a to store its answer", lambda: _stored(a), 10)
                second = cb.chat.completions.with_raw_response.create(**ask)
                assert second.headers["x-llmroute-cache"] == "hit"
                answer = second.parse().choices[0].message.content
                assert answer == first.parse().choices[0].message.content
            assert len(upstream.requests) == 1


def test_a_redis_that_is_down_only_costs_misses(tmp_path: Path, closed_port: int) -> None:
    cache = f"{{url: 'redis://:hunter2@127.0.0.1:{closed_port}/0', timeout_s: 0.2}}"
    with fake_upstream() as upstream:
        registry = _registry(tmp_path, upstream, cache)
        with serve(registry, tmp_path / "serve.log") as served:
            with openai.OpenAI(base_url=f"{served.url}/v1", api_key="-", max_retries=0) as c:
                for _ in range(3):
                    raw = c.chat.completions.with_raw_response.create(
                        model="auto", messages=_messages("hello there")
                    )
                    assert raw.headers["x-llmroute-cache"] == "miss"
            log = served.log_text()
    assert len(upstream.requests) == 3
    assert "response cache unavailable" in log
    assert "hunter2" not in log
