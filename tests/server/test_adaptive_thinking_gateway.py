"""Adaptive thinking end to end: `llmroute serve` as a subprocess, the official
`anthropic` client (and plain chat requests) in front, a fake Anthropic API behind that
refuses what the real models refuse (Opus 4.7 a ``budget_tokens``, Sonnet 4.5 adaptive
thinking, each with Anthropic's words) and a fake OpenAI-protocol upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
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
  gpt: {provider: fake, model: up-gpt, reasoning: {effort: medium}}
  opus: {provider: claude, model: "claude-opus-4-7?adaptive_only=1", reasoning: {effort: high}}
  sonnet45:
    provider: claude
    model: "claude-sonnet-4-5-20250929?budget_only=1"
    reasoning: {effort: high}
  aliased:  # the deployment names the Claude that serves; the model's id is an alias
    model: house-claude
    reasoning: {effort: high}
    deployments: [{provider: claude, model: "claude-opus-4-7?adaptive_only=1"}]
  plainclaude: {provider: claude, model: "claude-sonnet-4-5-20250929?budget_only=1"}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?", "good morning"]
    target: small
    reasoning_target: opus
default: {target: small, reasoning_target: opus}
reasoning: {scorer: builtin}
"""
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}}
ASK = [{"role": "user", "content": "prove that the square root of 2 is irrational"}]


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as c:
        yield c


def test_a_messages_clients_adaptive_request_reaches_an_adaptive_model_as_it_came(
    client: anthropic.Anthropic, claude: FakeAnthropic
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    answer = client.messages.create(
        model="opus",
        max_tokens=16000,
        thinking={"type": "adaptive", "display": "summarized"},  # type: ignore[typeddict-item]
        messages=ASK,  # type: ignore[arg-type]
        extra_body={
            "output_config": {"effort": "max", "format": {"type": "json_schema", "schema": schema}}
        },
    )
    assert [block.type for block in answer.content] == ["thinking", "text"]
    sent = claude.last.body
    assert sent["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert sent["output_config"] == {"effort": "max"}
    assert sent["max_tokens"] == 16000 and "budget_tokens" not in sent["thinking"]
    assert "json" in str(sent["system"]).lower()  # the format, said as Anthropic is told it


def test_adaptive_to_a_budget_only_claude_becomes_a_budget(
    client: anthropic.Anthropic, claude: FakeAnthropic
) -> None:
    client.messages.create(
        model="sonnet45",
        max_tokens=1000,
        thinking={"type": "adaptive"},
        messages=ASK,  # type: ignore[arg-type]
        extra_body={"output_config": {"effort": "medium"}},
    )
    sent = claude.last.body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert sent["max_tokens"] == 1000 + 8192 and "output_config" not in sent


def test_adaptive_to_an_openai_model_is_its_reasoning_effort(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    client.messages.create(
        model="gpt",
        max_tokens=1000,
        thinking={"type": "adaptive"},
        messages=ASK,  # type: ignore[arg-type]
        extra_body={"output_config": {"effort": "max"}},
    )
    sent = upstream.requests[-1].body
    assert sent["model"] == "up-gpt" and sent["reasoning_effort"] == "high"
    assert "thinking" not in sent and "output_config" not in sent


def test_the_gate_turns_on_adaptive_thinking_on_an_adaptive_only_model(
    gateway: Served, claude: FakeAnthropic
) -> None:
    body = {"model": "auto", "messages": ASK, "max_tokens": 500, "temperature": 0.2}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 200, response.text  # a budget here is Opus 4.7's 400
    sent = claude.last.body
    assert sent["thinking"] == {"type": "adaptive"}
    assert sent["output_config"] == {"effort": "high"}
    assert sent["max_tokens"] == 500 + 24576 and "temperature" not in sent


def test_a_chat_clients_budget_or_effort_to_an_adaptive_only_model(
    gateway: Served, claude: FakeAnthropic
) -> None:
    for extra, effort in (
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "low"),
        ({"reasoning_effort": "high"}, "high"),
        ({"thinking": {"type": "adaptive"}, "reasoning_effort": "medium"}, "medium"),
    ):
        body = {"model": "opus", "messages": ASK, "max_tokens": 9000, **extra}
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=20)
        assert response.status_code == 200, response.text
        sent = claude.last.body
        assert sent["thinking"] == {"type": "adaptive"}, extra
        assert sent["output_config"] == {"effort": effort}, extra


def test_a_messages_tool_loop_keeps_adaptive_thinking_with_its_blocks(
    client: anthropic.Anthropic, claude: FakeAnthropic
) -> None:
    """Adaptive thinking and the thinking blocks together: the loop's next turn reaches
    the adaptive-only model with ``{type: adaptive}`` and its blocks first, unchanged;
    without them, still adaptive (the model may have chosen not to think, so the API
    requires no block under adaptive thinking, as it does under a budget)."""
    tools: Any = [{"name": "read_file", "description": "Read a file", "input_schema": SCHEMA}]
    first = client.messages.create(
        model="opus",
        max_tokens=9000,
        thinking={"type": "adaptive"},
        tools=tools,
        messages=ASK,  # type: ignore[arg-type]
    )
    content = [block.model_dump(exclude_none=True) for block in first.content]
    assert content[0]["type"] == "thinking" and content[0]["signature"]
    call = next(block for block in first.content if block.type == "tool_use")
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "42"}
    for kept in (content, content[1:]):
        history: Any = [
            *ASK,
            {"role": "assistant", "content": kept},
            {"role": "user", "content": [result]},
        ]
        answer = client.messages.create(
            model="opus",
            max_tokens=9000,
            thinking={"type": "adaptive"},
            tools=tools,
            messages=history,
        )
        sent = claude.last.body
        if kept is content:
            assert sent["thinking"] == {"type": "adaptive"}
            assert sent["messages"][1]["content"][0] == content[0]
            assert answer.content[0].type == "thinking"
        else:
            assert sent["thinking"] == {"type": "adaptive"}
            assert sent["messages"][1]["content"][0]["type"] != "thinking"


def test_an_effort_the_serving_model_refuses_is_left_out(
    client: anthropic.Anthropic, claude: FakeAnthropic
) -> None:
    """Sonnet 4.5 refuses ``output_config.effort`` (a 400, every turn): a client's
    effort, say Claude Code's, reaches it without."""
    answer = client.messages.create(
        model="sonnet45",
        max_tokens=1000,
        output_config={"effort": "medium"},
        messages=[{"role": "user", "content": "hi there!"}],
    )
    sent = claude.last.body
    assert "effort" not in sent.get("output_config", {})
    assert answer.stop_reason


def test_auto_reads_the_id_of_the_deployment_that_serves(
    gateway: Served, claude: FakeAnthropic
) -> None:
    body = {"model": "aliased", "messages": ASK, "max_tokens": 9000, "reasoning_effort": "low"}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 200, response.text  # a budget here is Opus 4.7's 400
    sent = claude.last.body
    assert sent["model"] == "claude-opus-4-7?adaptive_only=1"
    assert sent["thinking"] == {"type": "adaptive"}
    assert sent["output_config"] == {"effort": "low"}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"thinking": {"type": "adaptive", "display": "loud"}}, "thinking.display"),
        ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
    ],
)
def test_a_malformed_thinking_or_effort_is_a_400_naming_the_field(
    client: anthropic.Anthropic, extra: dict[str, object], field: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(
            model="small",
            max_tokens=1000,
            messages=ASK,  # type: ignore[arg-type]
            extra_body=extra,
        )
    assert field in bad.value.message


def test_a_chat_clients_unreadable_thinking_is_a_400_naming_it(gateway: Served) -> None:
    body = {"model": "opus", "messages": ASK, "thinking": {"type": "on"}}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "thinking"


@pytest.mark.parametrize(
    "thinking",
    [
        {"type": "enabled", "budget_tokens": 500},
        {"type": "enabled", "budget_tokens": "2048"},
        {"type": "enabled", "budget_tokens": 2048.5},
    ],
)
@pytest.mark.parametrize("model", ["sonnet45", "gpt"])
def test_a_chat_clients_budget_anthropic_refuses_is_a_400_whatever_the_route(
    gateway: Served, claude: FakeAnthropic, thinking: dict[str, Any], model: str
) -> None:
    """As ``POST /v1/messages`` answers it: a budget model was sent the budget as it
    came, and Anthropic's 400 came back; an OpenAI-style model took it as an effort."""
    sent = len(claude.requests)
    body = {"model": model, "messages": ASK, "thinking": thinking}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "thinking.budget_tokens"
    assert "at least 1024" in error["message"]
    assert len(claude.requests) == sent


@pytest.mark.parametrize("reasoning", [{"exclude": True}, {"summary": "auto"}, {}])
@pytest.mark.parametrize(
    ("text", "off", "on"),
    [
        ("hi there!", {"type": "disabled"}, None),
        (ASK[0]["content"], None, {"type": "enabled", "budget_tokens": 24576}),
    ],
)
def test_an_openrouter_reasoning_that_asks_nothing_leaves_thinking_to_the_gate(
    gateway: Served,
    claude: FakeAnthropic,
    upstream: FakeUpstream,
    reasoning: dict[str, Any],
    text: str,
    off: dict[str, Any] | None,
    on: dict[str, Any] | None,
) -> None:
    """OpenRouter infers ``enabled`` from ``effort`` or ``max_tokens``: an ``exclude``
    (or a ``summary``) alone shapes the answer and asks nothing of thinking. It turned
    thinking on for every request, whatever the gate said; and it is not the model's
    parameter, so it is not sent on."""
    body = {"model": "sonnet45", "messages": [{"role": "user", "content": text}]}
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json={**body, "reasoning": reasoning}, timeout=20
    )
    assert response.status_code == 200, response.text
    sent = claude.last.body
    assert sent["thinking"] == (off or on)
    assert "reasoning" not in sent
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={**body, "model": "gpt", "reasoning": reasoning},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    said = upstream.requests[-1].body
    assert said["reasoning_effort"] == ("low" if off else "medium")
    assert "reasoning" not in said


def test_a_bare_thinking_switch_gets_the_models_budget(
    gateway: Served, claude: FakeAnthropic
) -> None:
    """``{type: enabled}`` without a budget (DeepSeek's, GLM's, Doubao's switch): a 400
    for a while, and before that sent to Claude as it came, which refuses it. A budget
    model is sent its own budget (reasoning effort high: 24576), any model answers."""
    body = {"model": "sonnet45", "messages": ASK, "thinking": {"type": "enabled"}}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 200, response.text
    assert claude.last.body["thinking"] == {"type": "enabled", "budget_tokens": 24576}
    body["model"] = "gpt"
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 200, response.text


def test_a_bare_thinking_switch_to_a_claude_without_a_reasoning_entry_gets_a_budget(
    gateway: Served, claude: FakeAnthropic
) -> None:
    """A Claude model with no ``reasoning`` entry is sent the client's thinking as it
    came; the bare switch is not a form Anthropic takes (``budget_tokens: Field
    required``), so it goes with the default budget, medium's 8192."""
    body = {"model": "plainclaude", "messages": ASK, "thinking": {"type": "enabled"}}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 200, response.text
    assert claude.last.body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert claude.last.body["max_tokens"] > 8192
