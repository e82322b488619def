"""The reasoning gate end to end: `llmroute serve` as a subprocess in front of a fake
OpenAI-compatible upstream, which records the parameters it received."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve_text

from llmroute import Router

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  mini: {provider: fake, model: up-mini, reasoning: {effort: high, turn_off: true}}
  o3: {provider: fake, model: up-o3, reasoning: {effort: high}}
  plain: {provider: fake, model: up-plain, reasoning: false}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?", "good morning"]
    target: mini
    reasoning_target: o3
default: {target: mini, reasoning_target: o3}
reasoning: {scorer: builtin}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeUpstream]]:
    tmp = tmp_path_factory.mktemp("reasoning-gateway")
    with (
        fake_upstream() as upstream,
        serve_text(REGISTRY % {"url": upstream.url}, tmp) as served,
    ):
        yield served.url, upstream


def _ask(url: str, text: str, **extra: object) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 200, response.text
    return response


def test_a_proof_gets_reasoning_effort_and_the_tier(gateway: tuple[str, FakeUpstream]) -> None:
    url, upstream = gateway
    _ask(url, "prove that the square root of 2 is irrational")
    sent = upstream.requests[-1].body
    assert sent["model"] == "up-o3"
    assert sent["reasoning_effort"] == "high"


def test_hi_gets_the_off_value(gateway: tuple[str, FakeUpstream]) -> None:
    url, upstream = gateway
    _ask(url, "hi")
    sent = upstream.requests[-1].body
    assert sent["model"] == "up-mini"
    assert sent["reasoning_effort"] == "low"


def test_the_clients_own_effort_is_kept(gateway: tuple[str, FakeUpstream]) -> None:
    url, upstream = gateway
    _ask(url, "prove that 1 + 1 = 2", reasoning_effort="medium")
    assert upstream.requests[-1].body["reasoning_effort"] == "medium"


def test_a_pinned_model_keeps_its_model(gateway: tuple[str, FakeUpstream]) -> None:
    url, upstream = gateway
    body = {"model": "mini", "messages": [{"role": "user", "content": "prove that 3 is odd"}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1].body
    assert sent["model"] == "up-mini" and sent["reasoning_effort"] == "high"


def test_a_model_that_does_not_think_gets_no_client_thinking(
    gateway: tuple[str, FakeUpstream],
) -> None:
    url, upstream = gateway
    body = {
        "model": "plain",
        "reasoning_effort": "high",
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": "what is the capital of France?"}],
    }
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1].body
    assert sent["model"] == "up-plain"
    assert "reasoning_effort" not in sent and "thinking" not in sent


def test_streams_get_the_params_too(gateway: tuple[str, FakeUpstream]) -> None:
    url, upstream = gateway
    body = {
        "model": "auto",
        "stream": True,
        "messages": [{"role": "user", "content": "derive the quadratic formula"}],
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=20) as response:
        assert response.status_code == 200
        assert "data: [DONE]" in "".join(response.iter_text())
    assert upstream.requests[-1].body["reasoning_effort"] == "high"


def test_the_sdk_sends_the_same_params(tmp_path: Path) -> None:
    with fake_upstream() as upstream:
        registry = tmp_path / "registry.yaml"
        registry.write_text(REGISTRY % {"url": upstream.url})
        with Router.from_yaml(registry, cache_dir=tmp_path) as router:
            for text, model, effort in (
                ("prove that the square root of 2 is irrational", "up-o3", "high"),
                ("hi", "up-mini", "low"),
            ):
                router.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": text}]
                )
                sent = upstream.requests[-1].body
                assert (sent["model"], sent["reasoning_effort"]) == (model, effort)
