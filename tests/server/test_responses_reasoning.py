"""A model's thinking across ``POST /v1/responses`` and back: `llmroute serve` as a
subprocess with responses kept in memory, the official `openai` client's
``client.responses`` in front, the fake Anthropic API behind (which refuses a tool
loop's turn that does not open with the thinking block it signed) and the fake
OpenAI-protocol upstream (DeepSeek's ``reasoning_content``, OpenAI's refusal of fields
it does not know)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

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
  sonnet: {provider: claude, model: "claude-x?redacted=1", reasoning: {budget_tokens: 2048}}
  deep: {provider: fake, model: "up-deep?reasoning=Hmm.&strict=1"}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
stored_responses: {}
"""
ASK = "read the file setup.py"
SIGNED = {"type": "thinking", "thinking": THOUGHT, "signature": sign(THOUGHT)}
HIDDEN = {"type": "redacted_thinking", "data": REDACTED}
TOOLS: Any = [
    {
        "type": "function",
        "name": "read_file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
]
THINK: Any = {"effort": "medium"}


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def _sent_turn(claude: FakeAnthropic) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The last request the fake Anthropic API got: its thinking setting, and the
    content of its last assistant turn."""
    body = claude.requests[-1].body
    turns = [m for m in body["messages"] if m["role"] == "assistant"]
    return body.get("thinking") or {}, turns[-1]["content"]


def _call(response: Any) -> Any:
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls, response.output
    return calls[0]


def test_a_stateless_tool_loop_keeps_thinking_on_every_turn(
    client: openai.OpenAI, claude: FakeAnthropic
) -> None:
    """An agent's loop with ``store: false``: the answer's reasoning item (the thinking
    as ``reasoning_text``, the signed blocks in ``encrypted_content``) goes back in
    ``input`` with the function call and its output; the next turn reaches Anthropic
    with thinking on and its assistant turn opening with the blocks as signed."""
    history: list[Any] = [{"role": "user", "content": ASK}]
    for _ in range(2):
        response = client.responses.create(
            model="sonnet",
            input=history,
            tools=TOOLS,
            reasoning=THINK,
            include=["reasoning.encrypted_content"],
            store=False,
        )
        reasoning = response.output[0]
        assert reasoning.type == "reasoning", response.output
        assert [c.text for c in reasoning.content or ()] == [THOUGHT]
        assert reasoning.encrypted_content and THOUGHT not in reasoning.encrypted_content
        call = _call(response)
        history += [item.model_dump(exclude_none=True) for item in response.output]
        history.append({"type": "function_call_output", "call_id": call.call_id, "output": "x"})
    thinking, turn = _sent_turn(claude)
    assert thinking.get("type") == "enabled"
    assert turn[:2] == [SIGNED, HIDDEN]
    assert turn[-1]["type"] == "tool_use"


@pytest.mark.parametrize("by", ["previous_response_id", "conversation"])
def test_kept_state_keeps_thinking(client: openai.OpenAI, claude: FakeAnthropic, by: str) -> None:
    """Server-side state: ``previous_response_id``, or a conversation, brings the kept
    reasoning item back into the next turn, as the stateless loop's input does."""
    conversation = client.conversations.create().id if by == "conversation" else None
    state: Any = {"conversation": conversation} if conversation else {}
    first = client.responses.create(
        model="sonnet", input=ASK, tools=TOOLS, reasoning=THINK, **state
    )
    assert first.output[0].type == "reasoning"
    if not conversation:
        state = {"previous_response_id": first.id}
    second = client.responses.create(
        model="sonnet",
        input=[{"type": "function_call_output", "call_id": _call(first).call_id, "output": "x"}],
        tools=TOOLS,
        reasoning=THINK,
        **state,
    )
    thinking, turn = _sent_turn(claude)
    assert thinking.get("type") == "enabled"
    assert turn[:2] == [SIGNED, HIDDEN]
    assert second.output[0].type == "reasoning"


def test_a_stream_gives_reasoning_events_the_sdk_types(
    client: openai.OpenAI, claude: FakeAnthropic
) -> None:
    """The reasoning item streams before the message and the function call, its text as
    ``response.reasoning_text.delta`` events (typed by the SDK, not unknown), its
    signed blocks joined from their pieces into the done item's ``encrypted_content``,
    which carries the next turn."""
    events: list[Any] = []
    with client.responses.stream(
        model="sonnet", input=ASK, tools=TOOLS, reasoning=THINK, store=False
    ) as stream:
        events.extend(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:7] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [
        e for e in events if isinstance(e, openai.types.responses.ResponseReasoningTextDeltaEvent)
    ]
    assert "".join(d.delta for d in deltas) == THOUGHT
    done = [e for e in events if e.type == "response.output_item.done"]
    assert [(e.output_index, e.item.type) for e in done] == [
        (0, "reasoning"),
        (1, "message"),
        (2, "function_call"),
    ]
    assert final.output[0] == done[0].item
    history: list[Any] = [
        {"role": "user", "content": ASK},
        *(item.model_dump(exclude_none=True) for item in final.output),
        {"type": "function_call_output", "call_id": _call(final).call_id, "output": "x"},
    ]
    client.responses.create(
        model="sonnet", input=history, tools=TOOLS, reasoning=THINK, store=False
    )
    thinking, turn = _sent_turn(claude)
    assert thinking.get("type") == "enabled"
    assert turn[:2] == [SIGNED, HIDDEN]


def test_deepseek_reasoning_is_an_item_without_blocks_and_never_sent_back(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """An OpenAI-style model's ``reasoning_content``: a reasoning item with the text and
    no ``encrypted_content``; given back it is dropped (the strict upstream would refuse
    a field it does not know), as are OpenAI's own encrypted reasoning and junk."""
    first = client.responses.create(model="deep", input="hi", store=False)
    reasoning = first.output[0]
    assert reasoning.type == "reasoning"
    assert [c.text for c in reasoning.content or ()] == ["Hmm."]
    assert reasoning.encrypted_content is None
    assert first.output_text
    foreign = base64.b64encode(b"not ours").decode()
    history: list[Any] = [
        {"role": "user", "content": "hi"},
        *(item.model_dump(exclude_none=True) for item in first.output),
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB" + foreign},
        {
            "type": "reasoning",
            "id": "rs_2",
            "summary": [],
            "encrypted_content": "llmroute.thinking.v1.!",
        },
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and now?"},
    ]
    second = client.responses.create(model="deep", input=history, store=False)
    assert second.status == "completed"
    sent = upstream.requests[-1].body["messages"]
    assert all(set(m) <= {"role", "content"} for m in sent), sent


def test_a_summary_asked_for_says_the_thinking_as_the_items_summary(
    client: openai.OpenAI,
) -> None:
    """``reasoning.summary`` (Codex asks ``auto``): the thinking is the item's summary,
    streamed with the SDK's typed summary events, whole or streamed alike; its blocks
    still carry the next turn."""
    ask: Any = {"effort": "medium", "summary": "auto"}
    events: list[Any] = []
    with client.responses.stream(
        model="sonnet", input=ASK, tools=TOOLS, reasoning=ask, store=False
    ) as stream:
        events.extend(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[2:8] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
    ]
    types = openai.types.responses
    deltas = [e for e in events if isinstance(e, types.ResponseReasoningSummaryTextDeltaEvent)]
    assert "".join(d.delta for d in deltas) == THOUGHT
    item = final.output[0]
    assert item.type == "reasoning" and not item.content
    assert [s.text for s in item.summary] == [THOUGHT] and item.encrypted_content
    whole = client.responses.create(model="deep", input="hi", reasoning=ask, store=False)
    said = whole.output[0]
    assert [s.text for s in said.summary] == ["Hmm."] and not said.content
