"""A batch line its key's rate limit turned away (429 ``rate_limit_exceeded`` before it
was routed) is sent again up to `_MOST_TRIES` times; with request lines on
(``--log-requests``) it leaves one line, its final answer's, naming the id its batch's
output gives and how many sends it took, not one per refused send (whose ids nothing
else shows).

A gateway in a thread (`serve_in_thread`), the echo provider behind it, a key whose
``tpm`` the batch's first line uses up; the wait between sends made short (the key's
window would hold it a minute)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from batch_runs import batch_ended
from gateway_proc import serve_in_thread
from rate_windows import clear_of_a_minute_end

from llmroute.server import app as app_module
from llmroute.server import batch_run
from llmroute.server.batch_run import _MOST_TRIES

KEY = "sk-paced-batches-0123"
REGISTRY = """
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small: {provider: echo, model: echo-small}
routes:
  - {name: chat, examples: [hello there], target: small}
default: {target: small}
batches: {concurrency: 1}
auth:
  keys:
    - {name: paced, key_env: LLMROUTE_TEST_PACED_KEY, tpm: 100}
"""


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("LLMROUTE_TEST_PACED_KEY", KEY)
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{tmp_path / 'log.db'}")
    monkeypatch.setattr(batch_run, "_MOST_WAIT_S", 0.01)
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY)
    with serve_in_thread(app_module.create_app(str(registry))) as served:
        yield served


def _line(custom_id: str, content: str) -> dict[str, Any]:
    body = {"model": "auto", "messages": [{"role": "user", "content": content}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def _answers(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    assert file_id is not None
    lines = map(json.loads, client.files.content(file_id).text.splitlines())
    return {line["custom_id"]: line for line in lines}


def test_a_line_the_keys_limit_kept_refusing_is_one_request_line(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The first line (about 120 tokens in, as many out) uses up the key's tpm of 100; the
    second is refused before routing at each of its sends, and written as its last 429.
    Its request line is that one's, with ``tries``; the first line's is its decision's."""
    caplog.set_level(logging.INFO)
    clear_of_a_minute_end(10)
    lines = [_line("long", "hello there " * 60), _line("late", "hello there")]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as client:
        upload = client.files.create(file=("b.jsonl", data), purpose="batch")
        created = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = batch_ended(client, created.id, 30)
        answered = _answers(client, batch.output_file_id)
        refused = _answers(client, batch.error_file_id)
    assert set(answered) == {"long"} and set(refused) == {"late"}
    late = refused["late"]["response"]
    assert late["status_code"] == 429
    assert late["body"]["error"]["code"] == "rate_limit_exceeded"

    logged = [r.__dict__["request"] for r in caplog.records if r.name == "llmroute.requests"]
    refusals = [line for line in logged if line.get("status") == 429]
    assert len(refusals) == 1, refusals  # was one per send: _MOST_TRIES
    (refusal,) = refusals
    assert refusal["request_id"] == late["request_id"]
    assert (refusal["error"], refusal["tries"]) == ("rate_limit_exceeded", _MOST_TRIES)
    first = answered["long"]["response"]["request_id"]
    assert [line.get("decision_id") for line in logged if line.get("status") == 200] == [first]
    assert "tries" not in next(line for line in logged if line.get("status") == 200)
