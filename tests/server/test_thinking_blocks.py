"""Extended thinking across the gateway and back: `llmroute serve` as a subprocess, the
official `anthropic` and `openai` clients in front, the fake Anthropic API behind (which
checks thinking as the real one does: under a budget, a tool loop's first assistant
message must start with its thinking block, each signature must be the one it gave) and the fake
OpenAI-protocol upstream (DeepSeek's ``reasoning_content``, OpenAI's refusal of fields
it does not know)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from fake_anthropic import REDACTED, THOUGHT, FakeAnthropic, sign
from fake_upstream import FakeUpstream
from gateway_proc import Served

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  sonnet: {provider: claude, model: "claude-x?redacted=1"}
  opus: {provider: claude, model: claude-y}
  deep: {provider: fake, model: "up-deep?reasoning=Hmm.&strict=1"}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
aliases:
  "claude-*": sonnet
"""
THINKING = {"type": "enabled", "budget_tokens": 2048}
SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}}
ASK = "read the file setup.py"
SIGNED = {"type": "thinking", "thinking": THOUGHT, "signature": sign(THOUGHT)}
HIDDEN = {"type": "redacted_thinking", "data": REDACTED}


@pytest.fixture(scope="module")
def messages_client(gateway: Served) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def chat_client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_a_messages_tool_loop_thinks_on_every_turn(
    messages_client: anthropic.Anthropic, claude: FakeAnthropic
) -> None:
    """Claude Code's loop: a streamed turn that thinks and calls a tool, then the turn
    with the tool's result, its assistant turn holding the thinking blocks as they came.
    The gateway keeps thinking on and sends the blocks first, signatures unchanged; an
    altered signature reaches the upstream as sent, and its refusal the client."""
    tools: Any = [{"name": "read_file", "description": "Read a file", "input_schema": SCHEMA}]
    opened: list[tuple[int, str]] = []
    deltas: list[tuple[int, str]] = []
    with messages_client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=8000,
        thinking=THINKING,  # type: ignore[arg-type]
        tools=tools,
        messages=[{"role": "user", "content": ASK}],
    ) as stream:
        for event in stream:
            if event.type == "content_block_start":
                opened.append((event.index, event.content_block.type))
            elif event.type == "content_block_delta":
                deltas.append((event.index, event.delta.type))
        final = stream.get_final_message()
    assert opened == [(0, "thinking"), (1, "redacted_thinking"), (2, "text"), (3, "tool_use")]
    assert [d for d in deltas if d[0] == 0] == [
        (0, "thinking_delta"),
        (0, "thinking_delta"),
        (0, "signature_delta"),
    ]
    content = [block.model_dump(exclude_none=True) for block in final.content]
    assert content[:2] == [SIGNED, HIDDEN]
    call = final.content[3]
    assert call.type == "tool_use"
    history: Any = [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "setup()"}],
        },
    ]
    answer = messages_client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=8000,
        thinking=THINKING,  # type: ignore[arg-type]
        tools=tools,
        messages=history,
    )
    sent = claude.requests[-1].body
    assert sent["thinking"] == THINKING
    assert sent["messages"][1]["content"][:2] == [SIGNED, HIDDEN]
    assert sent["messages"][1]["content"][3]["type"] == "tool_use"
    assert [block.type for block in answer.content][:2] == ["thinking", "redacted_thinking"]


@pytest.mark.parametrize(
    ("model", "alter"),
    [("claude-sonnet-4-5", True), ("opus", False)],
    ids=["altered-by-the-client", "signed-by-another-model"],
)
def test_thinking_blocks_anthropic_refuses_are_sent_once_more_without(
    messages_client: anthropic.Anthropic, claude: FakeAnthropic, model: str, alter: bool
) -> None:
    """Blocks another model signed (routing moved the conversation) or that the client
    altered: the upstream gets them as they came and refuses them; the turn is then
    sent without them (and without thinking, which a tool loop would need them for),
    rather than the conversation failing on every later turn."""
    block = {**SIGNED, "signature": sign("something else")} if alter else SIGNED
    history: Any = [
        {"role": "user", "content": ASK},
        {
            "role": "assistant",
            "content": [block, {"type": "tool_use", "id": "t1", "name": "read_file", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]},
    ]
    before = len(claude.requests)
    answer = messages_client.messages.create(
        model=model,
        max_tokens=8000,
        thinking=THINKING,  # type: ignore[arg-type]
        tools=[{"name": "read_file", "input_schema": SCHEMA}],
        messages=history,
    )
    refused, retried = (r.body for r in claude.requests[before:])
    assert refused["messages"][1]["content"][0] == block and refused["thinking"] == THINKING
    assert [b["type"] for b in retried["messages"][1]["content"]] == ["tool_use"]
    assert "thinking" not in retried
    assert "thinking" not in [b.type for b in answer.content] and answer.stop_reason


def test_a_multi_step_tool_loop_keeps_thinking_from_its_first_step(
    messages_client: anthropic.Anthropic, claude: FakeAnthropic
) -> None:
    """Claude without interleaved thinking thinks once, as its turn starts: the loop's
    second call comes without blocks. The third request still thinks (the upstream
    checks the loop's first assistant message, as Anthropic does), where before the
    gateway looked at the last one and turned thinking off."""
    tools: Any = [{"name": "read_file", "description": "Read a file", "input_schema": SCHEMA}]

    def step(i: int, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        call = {"type": "tool_use", "id": f"t{i}", "name": "read_file", "input": {}}
        result = {"type": "tool_result", "tool_use_id": f"t{i}", "content": "x"}
        return [
            {"role": "assistant", "content": [*blocks, call]},
            {"role": "user", "content": [result]},
        ]

    history: Any = [{"role": "user", "content": ASK}, *step(1, [SIGNED]), *step(2, [])]
    answer = messages_client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=8000,
        thinking=THINKING,  # type: ignore[arg-type]
        tools=tools,
        messages=history,
    )
    sent = claude.requests[-1].body
    assert sent["thinking"] == THINKING
    assert sent["messages"][1]["content"][0]["type"] == "thinking"
    assert answer.content[0].type == "thinking"


def test_a_tool_loop_the_gateway_answers_without_thinking_sends_no_blocks(
    messages_client: anthropic.Anthropic, claude: FakeAnthropic
) -> None:
    """Manual thinking with a forced tool choice reaches Anthropic without thinking
    (which it refuses there); the loop's blocks, which Anthropic refuses in the final
    assistant turn without thinking, are left out of that turn too (before: a 400)."""
    call = {"type": "tool_use", "id": "t1", "name": "read_file", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "x"}
    history: Any = [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": [SIGNED, call]},
        {"role": "user", "content": [result]},
    ]
    answer = messages_client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=8000,
        thinking=THINKING,  # type: ignore[arg-type]
        tools=[{"name": "read_file", "input_schema": SCHEMA}],
        tool_choice={"type": "any"},
        messages=history,
    )
    sent = claude.requests[-1].body
    assert "thinking" not in sent and sent["tool_choice"] == {"type": "any"}
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use"]
    assert answer.stop_reason


def test_adaptive_thinking_stays_on_with_a_forced_tool(
    chat_client: openai.OpenAI, claude: FakeAnthropic
) -> None:
    """Anthropic documents forced tool use as supported under adaptive thinking (not
    under a budget): a chat client's adaptive thinking with a forced tool reaches the
    upstream."""
    before = len(claude.requests)
    answer = chat_client.chat.completions.create(
        model="opus",
        messages=[{"role": "user", "content": ASK}],
        tools=_chat_tools(),
        tool_choice={"type": "function", "function": {"name": "read_file"}},
        extra_body={"thinking": {"type": "adaptive"}},
    )
    sent = claude.requests[before].body
    assert sent["thinking"] == {"type": "adaptive"}
    assert sent["tool_choice"] == {"type": "tool", "name": "read_file"}
    assert answer.choices[0].message.tool_calls


def _chat_tools() -> Any:
    return [{"type": "function", "function": {"name": "read_file", "parameters": SCHEMA}}]


def test_a_chat_tool_loop_carries_thinking_blocks_both_ways(
    chat_client: openai.OpenAI, claude: FakeAnthropic
) -> None:
    """LiteLLM's shape: ``reasoning_content`` and ``thinking_blocks`` on the assistant
    message, read from the answer's extra fields and sent back on the next turn."""
    first = chat_client.chat.completions.create(
        model="sonnet",
        max_tokens=8000,
        tools=_chat_tools(),
        messages=[{"role": "user", "content": ASK}],
        extra_body={"thinking": THINKING},
    )
    message = first.choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == THOUGHT
    assert extra["thinking_blocks"] == [SIGNED, HIDDEN]
    assert message.tool_calls
    call = message.tool_calls[0]
    history: Any = [
        {"role": "user", "content": ASK},
        {
            "role": "assistant",
            "content": message.content,
            "tool_calls": [call.model_dump()],
            "thinking_blocks": extra["thinking_blocks"],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "setup()"},
    ]
    chat_client.chat.completions.create(
        model="sonnet",
        max_tokens=8000,
        tools=_chat_tools(),
        messages=history,
        extra_body={"thinking": THINKING},
    )
    sent = claude.requests[-1].body
    assert sent["thinking"] == THINKING
    assert sent["messages"][1]["content"][:2] == [SIGNED, HIDDEN]


def test_a_chat_stream_says_thinking_in_pieces_a_client_can_join(
    chat_client: openai.OpenAI,
) -> None:
    """``delta.reasoning_content`` for the text, ``delta.thinking_blocks`` pieces with
    the same text, then the signature that ends the block; a redacted block whole; each
    piece with its block's index."""
    stream = chat_client.chat.completions.create(
        model="sonnet",
        max_tokens=8000,
        messages=[{"role": "user", "content": ASK}],
        stream=True,
        extra_body={"thinking": THINKING},
    )
    reasoning = ""
    blocks: list[dict[str, Any]] = []
    indexes: list[int] = []
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        extra = (delta.model_extra or {}) if delta is not None else {}
        reasoning += extra.get("reasoning_content") or ""
        for piece in extra.get("thinking_blocks") or ():
            indexes.append(piece.pop("index"))
            if piece["type"] == "redacted_thinking":
                blocks.append(piece)
                continue
            if not blocks or "signature" in blocks[-1] or blocks[-1]["type"] != "thinking":
                blocks.append({"type": "thinking", "thinking": ""})
            blocks[-1]["thinking"] += piece["thinking"]
            if piece.get("signature"):
                blocks[-1]["signature"] = piece["signature"]
    assert reasoning == THOUGHT
    assert blocks == [SIGNED, HIDDEN]
    assert indexes[-1] == 1 and set(indexes[:-1]) == {0}


def test_an_openai_compatible_upstreams_reasoning_passes_through_and_is_not_sent_back(
    chat_client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """DeepSeek's ``reasoning_content`` reaches chat clients, whole and streamed; sent
    back (with Anthropic's blocks from an earlier turn) it is left out, as the fake's
    strict OpenAI refuses fields it does not know, and DeepSeek its own reasoning."""
    ask: Any = [{"role": "user", "content": "why is the sky blue?"}]
    whole = chat_client.chat.completions.create(model="deep", messages=ask)
    assert (whole.choices[0].message.model_extra or {})["reasoning_content"] == "Hmm."
    stream = chat_client.chat.completions.create(model="deep", messages=ask, stream=True)
    pieces = [
        (chunk.choices[0].delta.model_extra or {}).get("reasoning_content")
        for chunk in stream
        if chunk.choices
    ]
    assert "Hmm." in pieces
    history: Any = [
        *ask,
        {
            "role": "assistant",
            "content": "Rayleigh scattering.",
            "reasoning_content": "Hmm.",
            "thinking_blocks": [SIGNED],
        },
        {"role": "user", "content": "and sunsets?"},
    ]
    again = chat_client.chat.completions.create(model="deep", messages=history)
    assert again.choices[0].message.content
    sent = upstream.requests[-1].body["messages"][1]
    assert sent == {"role": "assistant", "content": "Rayleigh scattering."}
