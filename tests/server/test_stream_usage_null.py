"""A stream's chunks as OpenAI writes them: the gateway asks every upstream for usage
(to meter it), and an OpenAI upstream then writes ``"usage": null`` on each chunk; a
client that did not ask for usage gets chunks without the key, as from OpenAI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: "small?nullusage=1"}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
"""
HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("stream_usage_null")
    env = {"LLMROUTE_TELEMETRY_URL": "off"}
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, env=env) as served:
        yield served


def _chunks(gateway: Served, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10
    ) as answer:
        assert answer.status_code == 200
        lines = [line for line in answer.iter_lines() if line.startswith("data: {")]
    return [json.loads(line[6:]) for line in lines]


def test_chunks_carry_no_usage_key_the_client_did_not_ask_for(gateway: Served) -> None:
    chunks = _chunks(gateway, {"model": "auto", "messages": HI, "stream": True})
    assert len(chunks) > 2 and all("usage" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert "hello there" in text


def test_a_client_that_asked_gets_them_as_the_upstream_wrote_them(gateway: Served) -> None:
    asked = {"include_usage": True}
    chunks = _chunks(
        gateway, {"model": "auto", "messages": HI, "stream": True, "stream_options": asked}
    )
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_the_openai_client_reads_the_stream(gateway: Served) -> None:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0) as client:
        chunks = list(client.chat.completions.create(model="auto", messages=HI, stream=True))
        assert chunks and all(c.usage is None for c in chunks)
        assert all("usage" not in (c.model_extra or {}) for c in chunks)
        assert all("usage" not in c.model_fields_set for c in chunks)
