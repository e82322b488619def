"""Every front refuses a known field of the wrong type before routing or any upstream
call, in its own API's error shape (Anthropic's under ``/v1/messages``, OpenAI's with
``param`` elsewhere), as ``/v1/chat/completions`` does; and what the official SDKs send,
every parameter at a valid value, still goes through.

A real gateway on 127.0.0.1 in front of the fake OpenAI-protocol upstream and the fake
Anthropic API, both counting the requests they get."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest
from fake_anthropic import FakeAnthropic
from fake_upstream import FakeUpstream
from gateway_proc import Served

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  sonnet: {provider: claude, model: claude-x}
routes:
  - {name: chitchat, examples: ["hi there", "how are you?"], target: small}
default: {target: small}
"""

_USER = [{"role": "user", "content": "hi"}]
_MESSAGES = {"model": "sonnet", "max_tokens": 20, "messages": _USER}
_RESPONSES = {"model": "sonnet", "input": "hi"}
_COMPLETIONS = {"model": "small", "prompt": "def f("}
_FUNCTION = {"type": "function", "name": "f", "parameters": {"type": "object"}}

_WRONG: list[tuple[str, dict[str, Any], str, Any]] = [
    ("/v1/messages", _MESSAGES, "temperature", "hot"),
    ("/v1/messages", _MESSAGES, "temperature", 1.5),  # Anthropic's fixed range: 0..1
    ("/v1/messages", _MESSAGES, "top_p", "0.9"),
    ("/v1/messages", _MESSAGES, "top_k", "5"),
    ("/v1/messages", _MESSAGES, "top_k", 2.5),
    ("/v1/messages", _MESSAGES, "stream", "yes"),
    ("/v1/messages", _MESSAGES, "metadata", "m"),
    ("/v1/messages", _MESSAGES, "metadata", {"user_id": 5}),
    ("/v1/messages", _MESSAGES, "service_tier", 1),
    ("/v1/messages", {**_MESSAGES, "model": "small"}, "temperature", "hot"),
    ("/v1/messages/count_tokens", _MESSAGES, "stream", "yes"),
    ("/v1/responses", _RESPONSES, "temperature", "hot"),
    ("/v1/responses", _RESPONSES, "top_p", [0.9]),
    ("/v1/responses", _RESPONSES, "stream", "yes"),
    ("/v1/responses", _RESPONSES, "background", "yes"),
    ("/v1/responses", _RESPONSES, "parallel_tool_calls", "no"),
    ("/v1/responses", _RESPONSES, "include", "reasoning.encrypted_content"),
    ("/v1/responses", _RESPONSES, "metadata", {"a": 1}),
    ("/v1/responses", _RESPONSES, "metadata", {f"k{i}": "v" for i in range(17)}),
    ("/v1/responses", _RESPONSES, "text", "json"),
    ("/v1/responses", _RESPONSES, "reasoning", "high"),
    ("/v1/responses", _RESPONSES, "truncation", 1),
    ("/v1/responses", _RESPONSES, "top_logprobs", "3"),
    ("/v1/responses", _RESPONSES, "max_tool_calls", 2.5),
    ("/v1/responses", _RESPONSES, "user", 5),
    ("/v1/responses", _RESPONSES, "safety_identifier", 5),
    ("/v1/responses", _RESPONSES, "prompt_cache_key", 5),
    ("/v1/responses", _RESPONSES, "service_tier", 5),
    ("/v1/responses", {**_RESPONSES, "model": "small"}, "temperature", "hot"),
    ("/v1/responses/input_tokens", _RESPONSES, "reasoning", "high"),
    ("/v1/completions", _COMPLETIONS, "temperature", "hot"),
    ("/v1/completions", _COMPLETIONS, "top_p", {}),
    ("/v1/completions", _COMPLETIONS, "presence_penalty", "1"),
    ("/v1/completions", _COMPLETIONS, "frequency_penalty", True),
    ("/v1/completions", _COMPLETIONS, "seed", "7"),
    ("/v1/completions", _COMPLETIONS, "logit_bias", [1]),
    ("/v1/completions", _COMPLETIONS, "stop", 5),
    ("/v1/completions", _COMPLETIONS, "stream_options", "usage"),
    ("/v1/completions", _COMPLETIONS, "user", 5),
]


@pytest.mark.parametrize(
    ("path", "seed", "field", "value"),
    _WRONG,
    ids=[f"{path}-{field}={value!r:.12}" for path, _, field, value in _WRONG],
)
def test_a_wrongly_typed_field_is_the_clients_400_before_any_upstream_call(
    gateway: Served,
    upstream: FakeUpstream,
    claude: FakeAnthropic,
    path: str,
    seed: dict[str, Any],
    field: str,
    value: Any,
) -> None:
    before = len(upstream.requests), len(claude.requests)
    response = httpx.post(f"{gateway.url}{path}", json={**seed, field: value}, timeout=20)
    assert response.status_code == 400, response.text
    body = response.json()
    if path.startswith("/v1/messages"):
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        assert f"'{field}" in body["error"]["message"]
    else:
        assert body["error"]["param"] == field
        assert body["error"]["type"] == "invalid_request_error"
    assert (len(upstream.requests), len(claude.requests)) == before


@pytest.mark.parametrize(
    ("front", "create", "param", "code"),
    [
        ("responses", {**_RESPONSES, "temperature": "hot"}, "temperature", "invalid_type"),
        (
            "responses",
            {**_RESPONSES, "max_output_tokens": 0},
            "max_output_tokens",
            "integer_below_min_value",
        ),
        ("completions", {**_COMPLETIONS, "seed": "7"}, "seed", "invalid_type"),
        ("completions", {**_COMPLETIONS, "n": 0}, "n", "integer_below_min_value"),
        # OpenAI's bounds, the chat endpoint's too: checked before the body is converted
        (
            "responses",
            {**_RESPONSES, "tools": [_FUNCTION] * 129},
            "tools",
            "array_above_max_length",
        ),
        (
            "completions",
            {**_COMPLETIONS, "logit_bias": {str(token): 1 for token in range(1025)}},
            "logit_bias",
            "object_above_max_properties",
        ),
    ],
)
def test_the_openai_fronts_say_openais_code(
    gateway: Served, front: str, create: dict[str, Any], param: str, code: str
) -> None:
    """As OpenAI's 400s do (and the chat endpoint's), for clients that branch on it."""
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            getattr(client, front).create(**create)
        error = caught.value.body
        assert isinstance(error, dict) and (error["param"], error["code"]) == (param, code)


def test_null_is_a_field_left_out(gateway: Served, claude: FakeAnthropic) -> None:
    nulls = {"temperature": None, "top_k": None, "stream": None, "metadata": None}
    response = httpx.post(f"{gateway.url}/v1/messages", json={**_MESSAGES, **nulls}, timeout=20)
    assert response.status_code == 200, response.text
    assert not {"temperature", "top_k", "metadata"} & claude.last.body.keys()


def test_top_k_reaches_an_anthropic_model_and_no_other(
    gateway: Served, upstream: FakeUpstream, claude: FakeAnthropic
) -> None:
    """A Messages client's ``top_k`` is Anthropic's: it was dropped on the way to Claude,
    and an OpenAI-protocol server refuses a field it does not know."""
    for model in ("sonnet", "small"):
        body = {**_MESSAGES, "model": model, "top_k": 5, "inference_geo": "us"}
        response = httpx.post(f"{gateway.url}/v1/messages", json=body, timeout=20)
        assert response.status_code == 200, response.text
    # and its data residency (inference_geo) to Anthropic's own API, where it was dropped
    assert claude.last.body["top_k"] == 5 and claude.last.body["inference_geo"] == "us"
    sent = upstream.requests[-1].body.keys()
    assert not {"top_k", "inference_geo", "anthropic_only"} & sent


_SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}


def test_what_the_anthropic_sdk_sends_goes_through(gateway: Served, claude: FakeAnthropic) -> None:
    """Every parameter of ``messages.create`` at a valid value, the sampling ones
    (no longer in the SDK's signature) as older clients send them, and those the Messages
    API takes reach Claude; ``container`` is left out, refused by design
    (docs/gateway.md)."""
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as client:
        message = client.messages.create(
            model="sonnet",
            max_tokens=2048,
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            system=[{"type": "text", "text": "brief", "cache_control": {"type": "ephemeral"}}],
            cache_control={"type": "ephemeral"},
            diagnostics={"previous_message_id": "msg_0"},
            inference_geo="us",
            metadata={"user_id": "u-1"},
            output_config={"effort": "low", "format": {"type": "json_schema", "schema": _SCHEMA}},
            service_tier="auto",
            speed="standard",
            stop_sequences=["STOP"],
            thinking={"type": "disabled"},  # thinking on: Anthropic refuses top_k
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
            tools=[{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
            user_profile_id="up-1",
            workspace_id="ws-1",
            extra_body={"temperature": 1, "top_p": 0.99, "top_k": 5, "stream": False},
        )
    assert message.type == "message"
    sent = claude.last.body
    assert sent["metadata"] == {"user_id": "u-1"} and sent["stop_sequences"] == ["STOP"]
    assert (sent["temperature"], sent["top_k"]) == (1, 5)


def test_what_the_openai_sdk_sends_goes_through(gateway: Served, upstream: FakeUpstream) -> None:
    """Every parameter of ``responses.create`` and ``completions.create`` at a valid
    value, but those refused by design where no responses are kept
    (``previous_response_id``, ``conversation``, ``background``) and hosted tools."""
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as client:
        response = client.responses.create(
            model="small",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
            instructions="brief",
            include=["reasoning.encrypted_content"],
            max_output_tokens=50,
            max_tool_calls=3,
            metadata={"k": "v"},
            parallel_tool_calls=False,
            prompt_cache_key="pk",
            prompt_cache_retention="24h",
            reasoning={"effort": "low", "summary": "auto"},
            safety_identifier="s-1",
            service_tier="auto",
            store=False,
            stream=False,
            temperature=0.5,
            text={"format": {"type": "json_schema", "name": "o", "schema": _SCHEMA}},
            tool_choice="auto",
            tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            top_logprobs=2,
            top_p=0.9,
            truncation="disabled",
            user="u-1",
        )
        assert response.status == "completed"
        completion = client.completions.create(
            model="small",
            prompt="def f(",
            best_of=1,
            echo=False,
            frequency_penalty=0.1,
            logit_bias={"50256": -100},
            max_tokens=8,
            n=1,
            presence_penalty=0.1,
            seed=7,
            stop=["\n\n"],
            suffix=None,
            temperature=0.2,
            top_p=0.9,
            user="u-1",
        )
    assert completion.choices[0].text
    assert upstream.requests[-1].body["seed"] == 7
