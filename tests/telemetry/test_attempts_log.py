"""The decision log's `attempts` keep an upstream's words only as `telemetry.prompts`
keeps the request's: an upstream's error message may quote the request (a validation
error quoting a field, a content filter's finding), so with ``hash``, ``off`` or
``redacted`` the row holds what identifies each failure (model, provider, status, the
gateway's own words) and not the upstream's message. A real fake upstream on 127.0.0.1
whose 429 quotes the prompt; the SDK and `llmroute serve` writing to SQLite and
PostgreSQL."""

from __future__ import annotations

import copy
import json
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve_text, wait_for

from llmroute import Router
from llmroute.dispatch.dispatcher import _after_tries
from llmroute.errors import AllFallbacksFailed, AttemptText, CircuitOpen, ProviderError, outline_of
from llmroute.providers._http import error_from_response
from llmroute.telemetry.record import LoggedDecision, ShadowRecord
from llmroute.telemetry.service import as_kept
from llmroute.telemetry.store import open_store

MARKER = "zq-marker-7781"
PROMPT = f"hello there, my code word is {MARKER}"

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  quoting: {provider: fake, model: "quoting?status=429&quote=1"}
  small: {provider: fake, model: up-small}
routes:
  - {name: chat, examples: ["hello there"], target: quoting, policy: {fallback: [small]}}
  - {name: tiers, examples: ["summarise the report"], target: quoting, cascade: [quoting, small]}
default: {target: small}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {enabled: false}
telemetry:
  url: "%(log)s"
  prompts: %(prompts)s
  flush_seconds: 0.05
"""

# the failure, less the upstream's words; its request id is kept (`_said` unnumbers it)
SAID = "quoting via fake (upstream rate limited (HTTP 429) [upstream request req_fakeN])"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as running:
        yield running


def _rows(url: str, n: int) -> list[LoggedDecision]:
    """The log's first `n` rows, by time, once they are written (bounded wait)."""
    found: list[LoggedDecision] = []

    def enough() -> bool:
        store = open_store(url)
        try:
            found[:] = store.decisions(0.0)
        except Exception:  # the writer has not made the tables yet
            return False
        finally:
            store.close()
        return len(found) >= n

    wait_for(f"{n} decisions in the log", enough, 15)
    return sorted(found, key=lambda d: d.ts)


def _said(rows: list[LoggedDecision]) -> list[tuple[str, ...]]:
    """Each row's attempts, the fake upstream's request ids (a count) as ``req_fakeN``."""
    return [tuple(re.sub(r"req_fake\d+", "req_fakeN", a) for a in row.attempts) for row in rows]


def _sdk_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream, log: str, prompts: str
) -> list[LoggedDecision]:
    """Three SDK calls whose first model's 429 quotes the prompt: one that falls back,
    the same streamed, and a cascade's tier that fails; then one pinned to that model
    alone, which fails (429)."""
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", log)
    registry = tmp_path / "r.yaml"
    registry.write_text(REGISTRY % {"url": upstream.url, "log": log, "prompts": prompts})
    ask = [{"role": "user", "content": PROMPT}]
    with Router.from_yaml(registry) as router:
        create = router.chat.completions.create
        assert create(model="chat", messages=ask).choices[0].message.content
        with create(model="chat", messages=ask, stream=True) as stream:
            assert list(stream)
        assert create(model="tiers", messages=ask).choices[0].message.content
        with pytest.raises(AllFallbacksFailed) as refused:
            create(model="quoting", messages=ask)
    assert refused.value.status == 429  # every model rate limited
    assert MARKER in str(refused.value)  # the caller's own error: it sent the prompt
    return _rows(log, 4)


@pytest.mark.parametrize("prompts", ["off", "hash", "redacted", "full"])
def test_the_sdk_logs_an_upstreams_words_only_as_prompts_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream, prompts: str
) -> None:
    rows = _sdk_rows(tmp_path, monkeypatch, upstream, f"sqlite:///{tmp_path / 'log.db'}", prompts)
    said = _said(rows)
    assert [len(a) for a in said] == [1, 1, 1, 1]
    if prompts == "full":
        assert all(MARKER in a[0] for a in said)
        assert said[0][0].startswith(SAID.partition(" [")[0] + ": Invalid value for 'content'")
        return
    assert said == [(SAID,), (SAID,), (f"quoting failed: {SAID}",), (SAID,)]
    assert all(MARKER not in (row.prompt or "") for row in rows if prompts != "redacted")


def test_postgres_logs_no_upstream_words_with_prompts_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream, postgres_url: str
) -> None:
    rows = _sdk_rows(tmp_path, monkeypatch, upstream, postgres_url, "hash")
    assert _said(rows) == [
        (SAID,),
        (SAID,),
        (f"quoting failed: {SAID}",),
        (SAID,),
    ]
    assert all(row.prompt is None for row in rows)


def test_the_gateway_logs_no_upstream_words_with_prompts_hashed(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """The client's error JSON keeps the upstream's words (the client sent the prompt);
    the log's row does not."""
    log = f"sqlite:///{tmp_path / 'log.db'}"
    text = REGISTRY % {"url": upstream.url, "log": log, "prompts": "hash"}
    with serve_text(text, tmp_path, env={"LLMROUTE_TELEMETRY_URL": log}) as served:
        ask = {"messages": [{"role": "user", "content": PROMPT}]}
        fell_back = httpx.post(
            f"{served.url}/v1/chat/completions", json={"model": "chat", **ask}, timeout=10
        )
        assert fell_back.status_code == 200
        assert fell_back.headers["x-llmroute-attempts"] == "1"
        failed = httpx.post(
            f"{served.url}/v1/chat/completions", json={"model": "quoting", **ask}, timeout=10
        )
        assert failed.status_code == 429
        assert MARKER in failed.json()["error"]["attempts"][0]
        rows = _rows(log, 2)
    assert _said(rows) == [(SAID,), (SAID,)]
    assert all(MARKER not in repr(row) for row in rows)


def _failed(status: int, **error: Any) -> ProviderError:
    """The error of an upstream's `status` whose message quotes the prompt."""
    body = {"error": {"message": f"the input {PROMPT!r} was refused", **error}}
    return error_from_response("fake", status, {"x-request-id": "req_1"}, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("status", "error", "outline"),
    [
        (400, {"code": "invalid_value", "param": "messages[0].content"},
         "upstream returned HTTP 400, code invalid_value, param messages[0].content"),
        (400, {"code": "content_filter"},
         "the upstream's content filter refused the request, code content_filter"),
        (400, {"code": "context_length_exceeded"},
         "the request is longer than the model's context window, code context_length_exceeded"),
        (429, {}, "upstream rate limited (HTTP 429)"),
        (400, {"param": f"the {MARKER}"}, "upstream returned HTTP 400"),  # not a field's path
        (500, {"code": "server_busy"}, "upstream returned HTTP 500, code server_busy"),
        (404, {}, "upstream returned HTTP 404 (the provider has no such model or path)"),
        (402, {"code": "json:[1]"},
         "upstream returned HTTP 402 (the gateway's account with the provider is out of credits)"),
    ],
)  # fmt: skip
def test_an_outline_keeps_the_gateways_words_and_codes_not_the_upstreams(
    status: int, error: dict[str, Any], outline: str
) -> None:
    failed = _failed(status, **error)
    assert MARKER in failed.message or status in (404, 500)  # not shown: said by the status
    outline += " [upstream request req_1]"  # what the provider's support asks for
    assert failed.outline() == outline
    said = failed.attempt("m")
    assert said == f"m via fake ({failed.message})" and said.outline == f"m via fake ({outline})"
    assert outline_of(said) == said.outline and outline_of("m (cancelled)") == "m (cancelled)"


def test_an_outline_of_failures_said_together_leaves_each_ones_words_out() -> None:
    """An open breaker after the request's own try says that try's failure first; every
    model failed lists each; an exception's text after the gateway's words is left out
    (llama.cpp's own error, a stream's error event)."""
    stopped = CircuitOpen("other", "circuit open after recent failures; not called")
    _after_tries(stopped, _failed(429))
    assert MARKER in stopped.message
    assert stopped.outline() == (
        "fake: upstream rate limited (HTTP 429) [upstream request req_1]; then circuit open "
        "after recent failures; not called"
    )
    every = AllFallbacksFailed([_failed(429).attempt("a"), stopped.attempt("b")], status=503)
    assert MARKER in str(every) and MARKER not in every.outline()
    local = ProviderError("llama", f"llama.cpp failed (ValueError): {PROMPT}")
    assert local.outline() == "llama.cpp failed (ValueError)"
    assert ProviderError("fake", "no answer within 5s").outline() == "no answer within 5s"


def test_an_attempt_keeps_its_outline_when_copied() -> None:
    said = _failed(429).attempt("m")
    for copied in (copy.copy(said), copy.deepcopy(said), pickle.loads(pickle.dumps(said))):
        assert isinstance(copied, AttemptText) and copied == said and copied.outline == said.outline
    assert json.dumps([said]) == json.dumps([str(said)])


@pytest.mark.parametrize("prompts", ["off", "hash", "redacted", "full"])
def test_a_shadows_reference_attempts_are_kept_as_the_decision_rows(prompts: str) -> None:
    said = _failed(429).attempt("ref")
    record = ShadowRecord(
        decision_id="d1",
        ts=1.0,
        route="r",
        routed_model="small",
        reference_model="ref",
        routed_answer="a",
        reference_answer="b",
        extra={"reference_attempts": [said]},
    )
    kept = as_kept(record, "full", 40, prompts)  # type: ignore[arg-type]
    assert kept.extra["reference_attempts"] == [said if prompts == "full" else said.outline]
