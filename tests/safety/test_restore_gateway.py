"""A profile's ``restore: true`` end to end: `llmroute serve` in front of a fake
OpenAI-compatible upstream (a real HTTP server that echoes the last user message), the
official openai and anthropic clients, the response cache and the decision log
(SQLite). The upstream sees placeholders; the client gets its own values back; the cache
and the log keep the provider's text."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve_text

from llmroute import Router
from llmroute.registry import parse_registry

pytestmark = pytest.mark.slow

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
routes:
  - name: letters
    examples: ["write a letter to my landlord", "draft an email to my boss"]
    target: small
  - name: raw
    examples: ["what is the capital of France", "how tall is Everest"]
    target: small
    policy: {safety: plain}
  - name: calls
    examples: ["call the plumber tomorrow", "phone my dentist"]
    target: small
    policy: {safety: masking}
default: {target: small}
safety:
  pii: {entities: [EMAIL, PHONE]}
  profiles:
    restoring: {injection: block, pii: redact, restore: true}
    plain: {injection: block, pii: redact}
    masking: {pii: {EMAIL: redact, "*": allow}, restore: true, answer_pii: {PHONE: redact}}
  profile: restoring
cache: {ttl_s: 60}
telemetry: {url: "sqlite:///%(db)s", prompts: full, responses: full}
"""
JANE = "jane.doe@example.com"
BOB = "bob.smith@example.org"


@dataclass
class Gateway:
    url: str
    upstream: FakeUpstream
    db: Path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("restore-gateway")
    db = tmp / "log.db"
    with fake_upstream() as upstream:
        text = REGISTRY % {"url": upstream.url, "db": db}
        env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"}  # conftest turns it off
        with serve_text(text, tmp, env=env) as served:
            yield Gateway(served.url, upstream, db)


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_the_upstream_sees_placeholders_and_the_client_its_values(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    ask = f"draft an email to my boss at {JANE} about Friday"
    reply = client.chat.completions.create(model="letters", messages=_user(ask))
    assert reply.choices[0].message.content == f"echo: {ask}"
    sent = gateway.upstream.requests[-1].body["messages"][-1]["content"]
    assert JANE not in sent and "<EMAIL_1>" in sent
    stream = client.chat.completions.create(
        model="letters", messages=_user(f"write a letter to {JANE} today"), stream=True
    )
    with stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.rstrip() == f"echo: write a letter to {JANE} today"


def test_a_cached_answer_is_restored_with_each_requests_own_values(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    """Both requests redact to the same body, so the second is a cache hit: it must get
    Bob's address back, not Jane's."""
    template = "write a letter to my landlord at {} about the heating"
    first = client.chat.completions.with_raw_response.create(
        model="letters", messages=_user(template.format(JANE))
    )
    second = client.chat.completions.with_raw_response.create(
        model="letters", messages=_user(template.format(BOB))
    )
    assert first.headers["x-llmroute-cache"] == "miss"
    assert second.headers["x-llmroute-cache"] == "hit"
    assert second.parse().choices[0].message.content == "echo: " + template.format(BOB)
    assert first.parse().choices[0].message.content == "echo: " + template.format(JANE)


def test_a_profile_without_restore_answers_in_placeholders(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="raw", messages=_user(f"what is the capital of France, asks {JANE}")
    )
    assert reply.choices[0].message.content == (
        "echo: what is the capital of France, asks <EMAIL_1>"
    )


def test_pii_the_model_writes_is_redacted_and_the_clients_own_restored(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    """The phone number is allowed out, so the (echoing) model writes it in its answer,
    where `answer_pii` redacts it; the e-mail address was redacted on the way out and
    comes back. Streamed, the answer is the same."""
    ask = f"call the plumber at +1 415 555 0100 and mail {JANE}"
    want = f"echo: call the plumber at <PHONE> and mail {JANE}"
    reply = client.chat.completions.create(model="calls", messages=_user(ask))
    assert reply.choices[0].message.content == want
    sent = gateway.upstream.requests[-1].body["messages"][-1]["content"]
    assert "+1 415 555 0100" in sent and JANE not in sent
    stream = client.chat.completions.create(model="calls", messages=_user(ask), stream=True)
    with stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.rstrip() == want
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert 'llmroute_answer_pii_total{type="PHONE"} 2.0' in metrics


def test_the_messages_front_restores_too(gateway: Gateway) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as c:
        message = c.messages.create(
            model="letters",
            max_tokens=100,
            messages=[{"role": "user", "content": f"draft an email to {BOB} now"}],
        )
    assert message.content[0].type == "text"
    assert message.content[0].text == f"echo: draft an email to {BOB} now"


def test_the_responses_front_restores_too(client: openai.OpenAI) -> None:
    response = client.responses.create(model="letters", input=f"write a letter to {BOB}")
    assert response.output_text == f"echo: write a letter to {BOB}"


def test_the_other_fronts_stream_the_redacted_answer_whole(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    """The held-back text reaches the Messages and Responses streams with the finish."""
    ask = f"call the plumber at +1 415 555 0100 and mail {JANE}"
    want = f"echo: call the plumber at <PHONE> and mail {JANE}"
    c = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    with (
        c,
        c.messages.stream(
            model="calls", max_tokens=100, messages=[{"role": "user", "content": ask}]
        ) as stream,
    ):
        text = "".join(stream.text_stream)
    assert text.rstrip() == want
    events = client.responses.create(model="calls", input=ask, stream=True)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas).rstrip() == want


def test_the_decision_log_keeps_the_providers_text(gateway: Gateway) -> None:
    deadline = time.monotonic() + 15
    rows: list[tuple[str | None]] = []
    while time.monotonic() < deadline:
        if gateway.db.exists():
            try:
                with contextlib.closing(sqlite3.connect(gateway.db)) as db:
                    rows = db.execute("SELECT response FROM decisions").fetchall()
            except sqlite3.OperationalError:  # the log's table is not made yet
                rows = []
            if len(rows) >= 4:
                break
        time.sleep(0.2)
    texts = [r[0] for r in rows if r[0]]
    assert texts and any("<EMAIL_1>" in t for t in texts)
    assert not any(JANE in t or BOB in t for t in texts)


def test_the_sdk_redacts_and_restores_the_same_way() -> None:
    with fake_upstream() as upstream:
        text = REGISTRY.replace("cache: {ttl_s: 60}\n", "") % {"url": upstream.url, "db": "x"}
        registry = parse_registry(text.replace('url: "sqlite:///x"', "enabled: false"))
        with Router(registry) as router:
            ask = f"draft an email to my boss at {JANE}"
            reply = router.chat.completions.create(model="letters", messages=_user(ask))
            assert reply.choices[0].message.content == f"echo: {ask}"
            chunks = router.chat.completions.create(
                model="letters", messages=_user(ask), stream=True
            )
            streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert streamed.rstrip() == f"echo: {ask}"
            call = f"call the plumber at +1 415 555 0100 and mail {JANE}"
            want = f"echo: call the plumber at <PHONE> and mail {JANE}"
            reply = router.chat.completions.create(model="calls", messages=_user(call))
            assert reply.choices[0].message.content == want
            chunks = router.chat.completions.create(
                model="calls", messages=_user(call), stream=True
            )
            streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert streamed.rstrip() == want
        assert all(JANE not in str(r.body) for r in upstream.requests)
