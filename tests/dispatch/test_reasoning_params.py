"""The reasoning gate's provider parameters: the pure mapping per style, and the
dispatcher applying it per attempted model (a fallback may be another provider)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, fake_anthropic
from fake_upstream import FAIL_500, FakeUpstream, fake_upstream
from plans import plan_for

from llmroute.decision import ReasoningOutcome
from llmroute.dispatch import Dispatcher, Plan
from llmroute.dispatch.client_reasoning import in_dialect
from llmroute.dispatch.reasoning_params import (
    budget_for,
    client_chose,
    effort_for,
    fit_thinking,
    with_reasoning,
)
from llmroute.providers import build_providers
from llmroute.providers._anthropic_convert import to_chat_completion, to_messages_request
from llmroute.registry import parse_registry
from llmroute.registry.openai_efforts import off_effort
from llmroute.registry.schema import Model, Reasoning, RoutePolicy


def _model(**reasoning: Any) -> Model:
    return Model(provider="p", model="m", reasoning=Reasoning(**reasoning))


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}


# -- the mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reasoning", "effort"),
    [
        ({"effort": "high"}, "high"),
        ({"effort": "minimal", "budget_tokens": 30000}, "minimal"),  # effort wins
        ({"budget_tokens": 1024}, "low"),
        ({"budget_tokens": 2048}, "low"),
        ({"budget_tokens": 8000}, "medium"),
        ({"budget_tokens": 8192}, "medium"),
        ({"budget_tokens": 8193}, "high"),
        ({}, "medium"),
    ],
)
def test_openai_effort(reasoning: dict[str, Any], effort: str) -> None:
    assert effort_for(Reasoning(**reasoning)) == effort
    sent = with_reasoning(_body(), _model(**reasoning), "openai", True)
    assert sent["reasoning_effort"] == effort


@pytest.mark.parametrize(
    ("reasoning", "budget"),
    [
        ({"budget_tokens": 5000}, 5000),
        ({"effort": "low"}, 2048),
        ({"effort": "high"}, 24576),
        ({}, 8192),
    ],
)
def test_anthropic_budget(reasoning: dict[str, Any], budget: int) -> None:
    assert budget_for(Reasoning(**reasoning)) == budget
    sent = with_reasoning(_body(), _model(**reasoning), "anthropic", True)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert sent["max_tokens"] == 4096 + budget  # the answer keeps its default room


def test_anthropic_raises_the_clients_max_tokens_and_drops_what_thinking_refuses() -> None:
    body = _body(max_completion_tokens=1000, temperature=0.2, top_k=5, top_p=0.5)
    sent = with_reasoning(body, _model(budget_tokens=3000), "anthropic", True)
    assert sent["max_completion_tokens"] == 4000
    assert "temperature" not in sent and "top_k" not in sent and "top_p" not in sent
    kept = with_reasoning(_body(max_tokens=500, top_p=0.97), _model(), "anthropic", True)
    assert kept["max_tokens"] == 500 + 8192 and kept["top_p"] == 0.97
    payload = to_messages_request("claude", "claude-x", sent)  # the converter forwards it
    assert payload["thinking"] == {"type": "enabled", "budget_tokens": 3000}
    assert payload["max_tokens"] == 4000


LOOP = [
    {"role": "user", "content": "weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "1", "content": "sunny"},
]


def test_anthropic_thinks_again_once_a_tool_loop_has_ended() -> None:
    done = [*LOOP, {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "why?"}]
    sent = with_reasoning(_body(messages=done), _model(), "anthropic", True)
    assert sent["thinking"]["type"] == "enabled"


def _signed_loop(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [LOOP[0], {**LOOP[1], "thinking_blocks": blocks}, LOOP[2]]


def test_anthropic_thinks_in_a_tool_loop_whose_turn_carries_its_thinking_blocks() -> None:
    """The last assistant turn brings its signed blocks back (a client that keeps
    ``thinking_blocks``): Anthropic accepts thinking, so it is turned on; blocks that
    cannot be sent (no signature) do not count."""
    for blocks in (
        [{"type": "thinking", "thinking": "hmm", "signature": "c2ln"}],
        [{"type": "redacted_thinking", "data": "opaque"}],
    ):
        sent = with_reasoning(_body(messages=_signed_loop(blocks)), _model(), "anthropic", True)
        assert sent["thinking"]["type"] == "enabled"
    unsigned = _body(messages=_signed_loop([{"type": "thinking", "thinking": "hmm"}]))
    assert with_reasoning(unsigned, _model(), "anthropic", True) is unsigned
    forced = _body(messages=_signed_loop([{"type": "redacted_thinking", "data": "x"}]))
    forced["tool_choice"] = "required"
    assert with_reasoning(forced, _model(), "anthropic", True) is forced


@pytest.mark.parametrize(
    "extra",
    [
        {"tool_choice": "required"},
        {"tool_choice": {"type": "function", "function": {"name": "f"}}},
        {"messages": [{"role": "tool", "tool_call_id": "1", "content": "42"}]},
        # a tool loop's results with the user's text beside them (Claude Code), or with
        # a Messages tool_result's images, which open a user message after the results
        {"messages": [*LOOP, {"role": "user", "content": "also check Rome"}]},
        {"messages": [*LOOP, {"role": "user", "content": [{"type": "image_url"}]}]},
    ],
)
def test_anthropic_thinking_is_not_forced_where_anthropic_refuses_it(
    extra: dict[str, Any],
) -> None:
    body = _body(**extra)
    assert with_reasoning(body, _model(), "anthropic", True) is body


def _step(i: int, blocks: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One step of a tool loop: the assistant's call (with its blocks, if any) and its
    result."""
    call = {"id": str(i), "type": "function", "function": {"name": "w", "arguments": "{}"}}
    turn: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
    if blocks:
        turn["thinking_blocks"] = blocks
    return [turn, {"role": "tool", "tool_call_id": str(i), "content": "sunny"}]


SIGNED = [{"type": "thinking", "thinking": "hmm", "signature": "c2ln"}]


def test_a_tool_loop_is_one_turn_whose_first_step_carries_the_blocks() -> None:
    """Without interleaved thinking Claude thinks once, as the loop starts: its later
    steps carry no blocks, and thinking stays on (it was left out from the loop's third
    request). A loop whose first step lost its blocks gets none, whatever later steps
    carry, and an earlier turn's blocks do not count for a new loop."""
    ask = {"role": "user", "content": "weather in Paris?"}
    also = {"role": "user", "content": "and in Rome?"}  # beside the results, as Claude Code
    once = [ask, *_step(1, SIGNED), *_step(2), also, *_step(3)]
    sent = with_reasoning(_body(messages=once), _model(), "anthropic", True)
    assert sent["thinking"]["type"] == "enabled"
    answered = {"role": "assistant", "content": "Sunny."}
    for messages in (
        [ask, *_step(1), *_step(2, SIGNED)],
        [ask, *_step(1, SIGNED), answered, also, *_step(2)],
    ):
        body = _body(messages=messages)
        assert with_reasoning(body, _model(), "anthropic", True) is body


@pytest.mark.parametrize(
    "extra",
    [
        {"messages": LOOP},
        {"tool_choice": "required"},
        {"tool_choice": {"type": "function", "function": {"name": "f"}}},
    ],
)
def test_adaptive_thinking_needs_no_blocks_and_takes_a_forced_tool(extra: dict[str, Any]) -> None:
    """Under adaptive thinking the model may choose not to think, so Anthropic requires
    no block in a tool loop, and it supports forced tool use (manual thinking does
    not): thinking stays on."""
    sent = with_reasoning(_body(**extra), _model(thinking="adaptive"), "anthropic", True)
    assert sent["thinking"] == {"type": "adaptive"}


def test_qwen_enable_thinking_merges_template_kwargs() -> None:
    model = _model(param="enable_thinking")
    body = _body(chat_template_kwargs={"custom": 1})
    on = with_reasoning(body, model, "openai", True)
    assert on["chat_template_kwargs"] == {"custom": 1, "enable_thinking": True}
    off = with_reasoning(body, model, "openai", False)
    assert off["chat_template_kwargs"] == {"custom": 1, "enable_thinking": False}
    assert body["chat_template_kwargs"] == {"custom": 1}


def test_thinking_param_on_an_openai_compatible_provider() -> None:
    sent = with_reasoning(_body(), _model(param="thinking", budget_tokens=2000), "openai", True)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2000}


@pytest.mark.parametrize(
    ("kind", "param", "key", "value"),
    [
        ("openai", "auto", "reasoning_effort", "low"),
        ("openai", "reasoning_effort", "reasoning_effort", "low"),
        ("anthropic", "auto", "thinking", {"type": "disabled"}),
        ("openai", "thinking", "thinking", {"type": "disabled"}),
        ("openai", "enable_thinking", "chat_template_kwargs", {"enable_thinking": False}),
    ],
)
def test_off_turns_thinking_off_explicitly(kind: str, param: str, key: str, value: Any) -> None:
    sent = with_reasoning(_body(), _model(param=param, turn_off=True), kind, False)
    assert sent[key] == value


@pytest.mark.parametrize(
    ("model_id", "effort"),
    [
        ("gpt-5.1", "none"),  # none: its default, no reasoning at all
        ("gpt-5.1-2025-11-13", "none"),
        ("gpt-5.2", "none"),
        ("GPT-5.2-2025-12-11", "none"),
        ("gpt-5", "minimal"),
        ("gpt-5-mini", "minimal"),
        ("gpt-5-nano-2025-08-07", "minimal"),
        # the variants keep the value every model takes (codex refuses minimal, chat
        # is not the reasoning model), but pro takes only the higher efforts: none sent
        ("gpt-5-codex", "low"),
        ("gpt-5.1-codex", "low"),
        ("gpt-5.1-codex-mini", "low"),
        ("gpt-5-pro", None),
        ("gpt-5.2-pro-2025-12-11", None),
        ("gpt-5.1-chat-latest", "low"),
        # o-series models refuse minimal and none with a 400
        ("o1", "low"),
        ("o3", "low"),
        ("o3-mini-2025-01-31", "low"),
        ("o4-mini", "low"),
        # ids that cannot be read: an Azure deployment's name, a router's path, gpt-oss
        ("my-gpt5-deployment", "low"),
        ("openai/gpt-5.1", "low"),
        # but a pro model behind a router's path refuses low all the same: none sent
        ("openai/gpt-5-pro", None),
        ("azure/gpt-5.2-pro", None),
        ("gpt-oss-120b", "low"),
        ("gpt-50", "low"),
        ("gpt-6", "low"),
    ],
)
def test_off_sends_the_lowest_effort_the_openai_model_takes(
    model_id: str, effort: str | None
) -> None:
    assert off_effort(model_id) == effort
    model = Model(provider="p", model=model_id, reasoning=Reasoning(effort="high"))
    assert with_reasoning(_body(), model, "openai", False).get("reasoning_effort") == effort
    # a deployment's own id is what the call goes to
    other = Model(provider="p", model="m", reasoning=Reasoning(effort="high"))
    sent = with_reasoning(_body(), other, "openai", False, served_id=model_id)
    assert sent.get("reasoning_effort") == effort
    # a client that asked for thinking off (Anthropic's way) is sent the same
    asked = _body(thinking={"type": "disabled"})
    assert in_dialect(asked, model, "openai").get("reasoning_effort") == effort


def test_on_is_unchanged_by_the_models_lowest_effort() -> None:
    model = Model(provider="p", model="gpt-5.1", reasoning=Reasoning(effort="low"))
    assert with_reasoning(_body(), model, "openai", True)["reasoning_effort"] == "low"


def test_off_false_sends_nothing_when_not_needed() -> None:
    body = _body()
    assert with_reasoning(body, _model(turn_off=False), "openai", False) is body
    assert with_reasoning(body, _model(turn_off=False), "anthropic", False) is body


@pytest.mark.parametrize(
    "extra",
    [
        {"reasoning_effort": "high"},
        {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        {"reasoning": {"effort": "low"}},
        {"chat_template_kwargs": {"enable_thinking": False}},
    ],
)
@pytest.mark.parametrize("needed", [True, False])
def test_client_choice_wins(extra: dict[str, Any], needed: bool) -> None:
    body = _body(**extra)
    assert client_chose(body)
    for kind in ("openai", "anthropic"):
        assert with_reasoning(body, _model(), kind, needed) is body


def test_no_gate_or_no_reasoning_config_leaves_the_body() -> None:
    body = _body()
    assert with_reasoning(body, _model(), "openai", None) is body
    plain = Model(provider="p", model="m")
    assert with_reasoning(body, plain, "openai", True) is body
    silent = Model(provider="p", model="m", reasoning=False)
    for needed in (True, False):
        assert with_reasoning(body, silent, "anthropic", needed) is body
    assert not client_chose(_body(chat_template_kwargs={"other": 1}))


def test_the_callers_body_is_never_mutated() -> None:
    body = _body(max_tokens=10, temperature=0.3, chat_template_kwargs={"a": 1})
    before = copy.deepcopy(body)
    for kind in ("openai", "anthropic"):
        for param in ("auto", "reasoning_effort", "thinking", "enable_thinking"):
            for needed in (True, False, None):
                with_reasoning(body, _model(param=param), kind, needed)
    assert body == before


def _thinking(budget: int, **extra: Any) -> dict[str, Any]:
    return _body(thinking={"type": "enabled", "budget_tokens": budget}, **extra)


def test_fit_thinking_drops_what_anthropic_refuses_whoever_set_it() -> None:
    sent = fit_thinking(_thinking(2048, temperature=0.2, top_k=5, top_p=0.5), _model())
    assert "temperature" not in sent and "top_k" not in sent and "top_p" not in sent
    kept = fit_thinking(_thinking(2048, temperature=1, top_p=0.97, max_tokens=9000), _model())
    assert kept["temperature"] == 1 and kept["top_p"] == 0.97 and kept["max_tokens"] == 9000


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ({}, "max_tokens", 4096 + 5000),  # the client's own thinking without max_tokens
        ({"max_tokens": 3000}, "max_tokens", 3000 + 5000),  # at or below the budget
        ({"max_tokens": 6000}, "max_tokens", 6000),  # room for an answer: as it came
        ({"max_completion_tokens": 5000}, "max_completion_tokens", 10000),
    ],
)
def test_fit_thinking_keeps_max_tokens_above_the_budget(
    extra: dict[str, Any], key: str, expected: int
) -> None:
    assert fit_thinking(_thinking(5000, **extra), _model())[key] == expected


def test_fit_thinking_stays_within_the_models_output_limit() -> None:
    capped = Model(provider="p", model="m", max_output_tokens=16000)
    sent = fit_thinking(_thinking(6000, max_tokens=18000), capped)
    assert sent["max_tokens"] == 16000 and sent["thinking"]["budget_tokens"] == 6000
    sent = fit_thinking(_thinking(24576, max_tokens=28672), capped)
    assert sent["max_tokens"] == 16000 and sent["thinking"]["budget_tokens"] == 8000
    small = Model(provider="p", model="m", max_output_tokens=1500)
    sent = fit_thinking(_thinking(2048), small)  # Anthropic's minimum budget still fits
    assert sent["max_tokens"] == 1500 and sent["thinking"]["budget_tokens"] == 1024
    tiny = Model(provider="p", model="m", max_output_tokens=1000)
    sent = fit_thinking(_thinking(2048), tiny)  # it does not: no thinking
    assert "thinking" not in sent and sent["max_tokens"] == 1000


def test_fit_thinking_leaves_other_bodies_alone() -> None:
    for body in (_body(temperature=0.2), _body(thinking={"type": "disabled"}, temperature=0)):
        assert fit_thinking(body, _model()) is body


def test_thinking_blocks_in_responses_are_carried_litellms_way() -> None:
    data = {
        "id": "m1",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "42"},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
    message = to_chat_completion(data)["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "42",
        "reasoning_content": "hmm",
        "thinking_blocks": data["content"][:2],
    }


# -- the dispatcher, per attempted model ------------------------------------------------

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
models:
  broken: {provider: up, model: %(fail)s, reasoning: {effort: high}}
  sonnet: {provider: claude, model: claude-x, reasoning: {budget_tokens: 2048}}
  plain: {provider: up, model: plain}
routes:
  - {name: r, examples: [hello], target: broken, policy: {fallback: [sonnet]}}
default: {target: plain}
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
"""


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeUpstream, FakeAnthropic]]:
    with fake_upstream() as up, fake_anthropic() as anthropic:
        yield up, anthropic


def _plan(chain: tuple[str, ...], gate: ReasoningOutcome | None) -> Plan:
    return plan_for(*chain, reasoning=gate)


def _dispatch(servers: tuple[FakeUpstream, FakeAnthropic], plan: Plan, stream: bool) -> None:
    up, anthropic = servers
    text = REGISTRY % {"url": up.url, "anthropic": anthropic.url, "fail": FAIL_500}
    registry = parse_registry(text).registry

    async def main() -> None:
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            if stream:
                opened = await dispatcher.open_stream(plan, _body(stream=True))
                assert [e async for e in opened.events][-1].startswith(b"data: [DONE]")
            else:
                served = await dispatcher.complete(plan, _body())
                assert served.model == "sonnet"
        finally:
            await dispatcher.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("stream", [False, True])
def test_each_attempt_gets_its_own_providers_params(
    servers: tuple[FakeUpstream, FakeAnthropic], stream: bool
) -> None:
    up, anthropic = servers
    up.requests.clear()
    anthropic.requests.clear()
    _dispatch(servers, _plan(("broken", "sonnet"), ReasoningOutcome(True, "trigger")), stream)
    assert up.requests[-1].body["reasoning_effort"] == "high"
    sent = anthropic.requests[-1].body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["max_tokens"] == 4096 + 2048
    assert "reasoning_effort" not in sent


def test_not_needed_turns_thinking_off_and_no_gate_sends_nothing(
    servers: tuple[FakeUpstream, FakeAnthropic],
) -> None:
    up, anthropic = servers
    up.requests.clear()
    anthropic.requests.clear()
    _dispatch(servers, _plan(("broken", "sonnet"), ReasoningOutcome(False, "short")), False)
    assert up.requests[-1].body["reasoning_effort"] == "low"
    assert anthropic.requests[-1].body["thinking"] == {"type": "disabled"}
    _dispatch(servers, _plan(("broken", "sonnet"), None), False)
    assert "reasoning_effort" not in up.requests[-1].body
    assert "thinking" not in anthropic.requests[-1].body


@pytest.mark.parametrize("gate", [None, ReasoningOutcome(False, "short")])
def test_the_clients_own_choice_reaches_each_attempt_in_its_dialect(
    servers: tuple[FakeUpstream, FakeAnthropic], gate: ReasoningOutcome | None
) -> None:
    up, anthropic = servers
    up.requests.clear()
    anthropic.requests.clear()
    text = REGISTRY % {"url": up.url, "anthropic": anthropic.url, "fail": FAIL_500}
    registry = parse_registry(text).registry

    async def main() -> None:
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            body = _body(reasoning_effort="high", max_tokens=100)
            served = await dispatcher.complete(_plan(("broken", "sonnet"), gate), body)
            assert served.model == "sonnet"
        finally:
            await dispatcher.aclose()

    asyncio.run(main())
    assert up.requests[-1].body["reasoning_effort"] == "high"  # its own dialect: as it came
    sent = anthropic.requests[-1].body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 24576}
    assert sent["max_tokens"] == 100 + 24576


@pytest.mark.parametrize(
    ("gate", "extra"),
    [
        (ReasoningOutcome(True, "trigger"), {}),  # the gate turned thinking on
        (None, {"thinking": {"type": "enabled", "budget_tokens": 5000}}),  # the client did
    ],
)
def test_a_routes_params_do_not_undo_what_thinking_requires(
    servers: tuple[FakeUpstream, FakeAnthropic],
    gate: ReasoningOutcome | None,
    extra: dict[str, Any],
) -> None:
    """A code route's ``params: {temperature: 0.2}`` filled in after thinking was turned
    on was a 400 from Anthropic on every such request (a 400 is not fallen back from)."""
    up, anthropic = servers
    anthropic.requests.clear()
    text = REGISTRY % {"url": up.url, "anthropic": anthropic.url, "fail": FAIL_500}
    registry = parse_registry(text).registry
    policy = RoutePolicy(params={"temperature": 0.2, "top_k": 40})

    async def main() -> None:
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            served = await dispatcher.complete(
                plan_for("sonnet", policy=policy, reasoning=gate), _body(**extra)
            )
            assert served.model == "sonnet"
        finally:
            await dispatcher.aclose()

    asyncio.run(main())
    sent = anthropic.requests[-1].body
    assert sent["thinking"]["type"] == "enabled"
    assert "temperature" not in sent and "top_k" not in sent
    assert sent["max_tokens"] > sent["thinking"]["budget_tokens"]


@pytest.mark.parametrize(
    ("model_id", "sent"),
    [
        # a client's own "none" (thinking off, gpt-5.1's way) on a model the router
        # picked that refuses it: its lowest instead, as for thinking off said otherwise
        ("o3", "low"),
        ("o4-mini-2025-04-16", "low"),
        ("gpt-5-mini", "minimal"),
        ("gpt-5-pro", None),
        ("openai/gpt-5-pro", None),
        # a model that takes it, or an id that cannot be read (the client may know its
        # deployment): as it came
        ("gpt-5.1", "none"),
        ("my-gpt51-deployment", "none"),
        ("openai/gpt-5.1", "none"),
    ],
)
def test_a_clients_none_goes_as_the_model_takes_thinking_off(
    model_id: str, sent: str | None
) -> None:
    model = Model(provider="p", model=model_id, reasoning=Reasoning(effort="high"))
    body = _body(reasoning_effort="none")
    assert in_dialect(body, model, "openai").get("reasoning_effort") == sent
    other = Model(provider="p", model="m", reasoning=Reasoning(effort="high"))
    assert in_dialect(body, other, "openai", model_id).get("reasoning_effort") == sent
    # any other effort the client said goes as it came
    low = _body(reasoning_effort="minimal")
    assert in_dialect(low, model, "openai")["reasoning_effort"] == "minimal"
