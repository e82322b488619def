"""A batch line every model refused with a 429 of its own rate (``upstream_rate_limited``),
or found unavailable (a 503 with ``Retry-After``), is sent again later within the batch's
window, as OpenAI's batches retry internally: honouring ``Retry-After``, at most
`_MOST_UPSTREAM_TRIES` sends, then written as the error line it was. `llmroute serve`
as a subprocess, the official `openai` client's batches in front of it, the fake
OpenAI-protocol upstream that 429s (or 503s) the first N calls behind it. Dispatch's
own retries are off, so each send is one upstream call."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from batch_runs import batch_ended
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

from llmroute.server.batch_run import _MOST_UPSTREAM_TRIES

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
  small: {provider: fake, model: up-small}
  busy: {provider: fake, model: "up-busy?status=429&times=2&retry_after=0"}
  swamped: {provider: fake, model: "up-swamped?status=429&times=1000&retry_after=0"}
  picky: {provider: fake, model: "up-picky?status=400"}
  down: {provider: fake, model: "up-down?status=503&times=1&retry_after=0"}
  out: {provider: fake, model: "up-out?status=503&times=1000&retry_after=0"}
  broken: {provider: fake, model: "up-broken?status=503&times=1"}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
dispatch:
  retries: {attempts: 0}
  breaker: {failures: 1000, min_requests: 1000}
batches: {}
"""


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[openai.OpenAI]:
    tmp = tmp_path_factory.mktemp("batch_retries")
    text = REGISTRY % {"url": upstream.url}
    with (
        serve_text(text, tmp, env={"LLMROUTE_TELEMETRY_URL": "off"}) as served,
        _client(served) as c,
    ):
        yield c


def _client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)


def _batch(client: openai.OpenAI, models: list[str]) -> dict[str, dict[str, Any]]:
    """Each of `models` asked once in one chat batch; the answer lines by custom_id, once
    the batch completed."""
    lines = [
        {
            "custom_id": model,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": "hello"}]},
        }
        for model in models
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    upload = client.files.create(file=("b.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = batch_ended(client, batch.id, 60)
    assert batch.status == "completed", batch
    found: dict[str, dict[str, Any]] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id is not None:
            for raw in client.files.content(file_id).text.splitlines():
                line = json.loads(raw)
                found[line["custom_id"]] = line["response"]
    return found


def test_a_line_the_upstreams_rate_limited_is_sent_again_and_answered(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """The first two calls 429: the line was written as that 429; it is answered on its
    third send. A 400 is the client's: sent once."""
    answers = _batch(client, ["busy", "picky"])
    assert answers["busy"]["status_code"] == 200, answers["busy"]
    assert answers["busy"]["body"]["choices"][0]["message"]["content"] == "echo: hello"
    assert len(upstream.calls_to("up-busy?status=429&times=2&retry_after=0")) == 3
    assert answers["picky"]["status_code"] == 400
    assert len(upstream.calls_to("up-picky?status=400")) == 1


def test_a_line_the_upstreams_keep_refusing_is_sent_a_bounded_number_of_times(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    answers = _batch(client, ["swamped", "out"])
    error = answers["swamped"]
    assert error["status_code"] == 429
    assert error["body"]["error"]["code"] == "upstream_rate_limited"
    called = upstream.calls_to("up-swamped?status=429&times=1000&retry_after=0")
    assert len(called) == _MOST_UPSTREAM_TRIES
    assert answers["out"]["status_code"] == 503
    called = upstream.calls_to("up-out?status=503&times=1000&retry_after=0")
    assert len(called) == _MOST_UPSTREAM_TRIES


def test_a_line_every_model_answered_503_with_retry_after_is_sent_again(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """Every model of the chain unavailable, saying when to come back (an upstream's 503
    with ``Retry-After``; open breakers are answered so too): the line was written as
    that 503 at once, though the outage was over a second later; it is answered on its
    second send. A 503 without ``Retry-After`` is a failure like a 500 (the client's
    502): written at once."""
    answers = _batch(client, ["down", "broken"])
    assert answers["down"]["status_code"] == 200, answers["down"]
    assert answers["down"]["body"]["choices"][0]["message"]["content"] == "echo: hello"
    assert len(upstream.calls_to("up-down?status=503&times=1&retry_after=0")) == 2
    assert answers["broken"]["status_code"] == 502, answers["broken"]
    assert len(upstream.calls_to("up-broken?status=503&times=1")) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_a_line_waiting_to_be_sent_again_goes_on_under_a_reloaded_registry(
    tmp_path: Path, upstream: FakeUpstream, status: int
) -> None:
    """A reload while a line waits out an upstream's 429 (or 503) and its 30 s
    ``Retry-After``: the wait ends and the line is sent under the new registry, as the
    lines not yet sent are, well before the 30 s (the batch's deadline here is 20 s: the
    reload neither waits for the sleeping line nor keeps the old registry for it). It
    slept on and was sent again on the old one (which still refuses: written as that
    error), though a reload that moves a failing model elsewhere is what an operator
    does about it."""
    limited = f"up-limited{status}?status={status}&times=1000&retry_after=30"
    text = REGISTRY.replace(
        "small: {provider", f'limited: {{provider: fake, model: "{limited}"}}\n  small: {{provider'
    )
    text %= {"url": upstream.url}
    registry = tmp_path / "registry.yaml"
    with (
        serve_text(text, tmp_path, env={"LLMROUTE_TELEMETRY_URL": "off"}) as served,
        _client(served) as client,
    ):
        line = {
            "custom_id": "limited",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "limited", "messages": [{"role": "user", "content": "hello"}]},
        }
        upload = client.files.create(file=("b.jsonl", json.dumps(line).encode()), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 20
        while not upstream.calls_to(limited):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        registry.write_text(text.replace(f'"{limited}"', "up-moved"))
        served.proc.send_signal(signal.SIGHUP)
        batch = batch_ended(client, batch.id, 20)
        assert batch.status == "completed", batch
        assert batch.output_file_id is not None, batch
        (raw,) = client.files.content(batch.output_file_id).text.splitlines()
    answer = json.loads(raw)["response"]
    assert answer["status_code"] == 200, answer
    assert answer["body"]["model"] == "up-moved"
    assert len(upstream.calls_to(limited)) == 1  # not sent again on the old registry
