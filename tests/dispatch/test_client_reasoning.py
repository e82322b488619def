"""A client's own thinking parameters said in the serving model's dialect: each client
spelling read, each target style written, and what is never sent."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmroute.dispatch.client_reasoning import ClientIntent, in_dialect, intent_of
from llmroute.registry.schema import Model, Reasoning


def _model(**reasoning: Any) -> Model:
    return Model(provider="p", model="m", reasoning=Reasoning(**reasoning))


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(
    ("extra", "intent"),
    [
        ({"reasoning_effort": "high"}, ClientIntent(True, effort="high")),
        ({"reasoning_effort": "none"}, ClientIntent(False)),
        ({"thinking": {"type": "enabled", "budget_tokens": 5000}}, ClientIntent(True, budget=5000)),
        ({"thinking": {"type": "disabled"}}, ClientIntent(False)),
        ({"reasoning": {"effort": "low"}}, ClientIntent(True, effort="low")),
        ({"reasoning": {"max_tokens": 3000}}, ClientIntent(True, budget=3000)),
        ({"reasoning": {"enabled": False}}, ClientIntent(False)),
        ({"reasoning": {"enabled": True}}, ClientIntent(True)),
        # OpenRouter infers enabled from effort or max_tokens: these ask nothing of it
        ({"reasoning": {"exclude": True}}, None),
        ({"reasoning": {"summary": "auto"}}, None),
        ({"reasoning": {}}, None),
        ({"chat_template_kwargs": {"enable_thinking": True}}, ClientIntent(True)),
        ({"chat_template_kwargs": {"other": 1}}, None),
        ({"reasoning_effort": 3}, None),
    ],
)
def test_each_client_spelling_is_read(extra: dict[str, Any], intent: ClientIntent | None) -> None:
    assert intent_of(_body(**extra)) == intent


def test_the_targets_own_parameter_is_read_first() -> None:
    body = _body(reasoning_effort="high", thinking={"type": "disabled"})
    assert intent_of(body) == ClientIntent(True, effort="high")
    assert intent_of(body, prefer="thinking") == ClientIntent(False)


@pytest.mark.parametrize(
    ("extra", "budget"),
    [
        ({"reasoning_effort": "low"}, 2048),
        ({"reasoning_effort": "high"}, 24576),
        ({"reasoning_effort": "xhigh"}, 32768),
        ({"reasoning_effort": "ultra"}, 24576),  # an effort past the known ones
        ({"reasoning": {"max_tokens": 500}}, 1024),  # Anthropic's minimum
        ({"chat_template_kwargs": {"enable_thinking": True}}, 8192),  # the model's own
    ],
)
def test_an_effort_becomes_an_anthropic_budget(extra: dict[str, Any], budget: int) -> None:
    sent = in_dialect(_body(max_tokens=100, temperature=0.5, **extra), _model(), "anthropic")
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert sent["max_tokens"] == 100 + budget  # thinking counts against max_tokens
    assert "temperature" not in sent  # Anthropic refuses it with thinking
    assert not {"reasoning_effort", "reasoning"} & sent.keys()
    assert "enable_thinking" not in sent.get("chat_template_kwargs", {})


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "low"), (2048, "low"), (8192, "medium"), (20000, "high")]
)
def test_an_anthropic_budget_becomes_an_effort(budget: int, effort: str) -> None:
    body = _body(max_tokens=30000, thinking={"type": "enabled", "budget_tokens": budget})
    sent = in_dialect(body, _model(effort="minimal"), "openai")
    assert sent["reasoning_effort"] == effort and "thinking" not in sent
    assert sent["max_tokens"] == 30000


@pytest.mark.parametrize(
    ("kind", "param", "key", "value"),
    [
        ("openai", "auto", "reasoning_effort", "low"),
        ("anthropic", "auto", "thinking", {"type": "disabled"}),
        ("openai", "enable_thinking", "chat_template_kwargs", {"enable_thinking": False}),
    ],
)
def test_off_is_said_in_each_dialect(kind: str, param: str, key: str, value: Any) -> None:
    for off in ({"thinking": {"type": "disabled"}}, {"reasoning_effort": "none"}):
        if key in off:
            continue
        sent = in_dialect(_body(**off), _model(param=param), kind)
        assert sent[key] == value


def test_effort_to_qwen_keeps_the_other_template_kwargs() -> None:
    body = _body(reasoning_effort="medium", chat_template_kwargs={"custom": 1})
    sent = in_dialect(body, _model(param="enable_thinking"), "openai")
    assert sent["chat_template_kwargs"] == {"custom": 1, "enable_thinking": True}
    assert "reasoning_effort" not in sent


def test_the_targets_own_parameter_goes_as_it_came() -> None:
    for body, kind in [
        (_body(reasoning_effort="minimal"), "openai"),
        (_body(max_tokens=5000, thinking={"type": "enabled", "budget_tokens": 4000}), "anthropic"),
    ]:
        assert in_dialect(body, _model(), kind) is body


@pytest.mark.parametrize(
    "extra",
    [
        {"tool_choice": "required"},
        {"messages": [{"role": "tool", "tool_call_id": "1", "content": "42"}]},
    ],
)
def test_anthropic_thinking_is_left_out_where_anthropic_would_refuse_it(
    extra: dict[str, Any],
) -> None:
    for asked in ({"reasoning_effort": "high"}, {"thinking": {"type": "enabled"}}):
        sent = in_dialect(_body(**asked, **extra), _model(), "anthropic")
        assert "thinking" not in sent and "reasoning_effort" not in sent
        plain = Model(provider="p", model="m")  # not known to think: same rule
        assert "thinking" not in in_dialect(_body(**asked, **extra), plain, "anthropic")


def test_a_model_not_known_to_think_gets_the_body_as_it_came() -> None:
    plain = Model(provider="p", model="m")
    effort = _body(reasoning_effort="high")
    assert in_dialect(effort, plain, "openai") is effort
    thinking = _body(thinking={"type": "enabled", "budget_tokens": 2048})
    assert in_dialect(thinking, plain, "anthropic") is thinking
    # ... except Anthropic's own parameter, which OpenAI-protocol servers refuse
    assert "thinking" not in in_dialect(thinking, plain, "openai")


def test_a_bare_switch_to_a_claude_not_known_to_think_gets_a_budget() -> None:
    """``{type: enabled}`` without a budget (DeepSeek's, GLM's switch) is not a form
    Anthropic takes: a model with no ``reasoning`` entry is sent the default budget (an
    adaptive Claude adaptive thinking), not the switch as it came, a certain 400."""
    bare = _body(thinking={"type": "enabled"})
    budget = in_dialect(bare, Model(provider="p", model="claude-sonnet-4-5"), "anthropic")
    assert budget["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert budget["max_tokens"] > 8192
    adaptive = in_dialect(bare, Model(provider="p", model="claude-opus-4-7"), "anthropic")
    assert adaptive["thinking"] == {"type": "adaptive"}
    assert "thinking" not in in_dialect(bare, Model(provider="p", model="m"), "openai")
    assert bare == _body(thinking={"type": "enabled"})
    # a model with a reasoning entry: on, in its own parameter, as its entry says
    effort = in_dialect(bare, _model(effort="high"), "openai")
    assert effort["reasoning_effort"] == "high" and "thinking" not in effort
    qwen = in_dialect(bare, _model(param="enable_thinking"), "openai")
    assert qwen["chat_template_kwargs"] == {"enable_thinking": True} and "thinking" not in qwen


def test_a_model_declared_not_to_think_gets_no_thinking_parameter() -> None:
    silent = Model(provider="p", model="m", reasoning=False)
    for extra in (
        {"reasoning_effort": "high"},
        {"reasoning": {"effort": "low"}},
        {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        {"chat_template_kwargs": {"enable_thinking": True}},
    ):
        for kind in ("openai", "anthropic"):
            assert in_dialect(_body(**extra), silent, kind) == _body()
    kept = _body(reasoning_effort="none", chat_template_kwargs={"enable_thinking": False, "a": 1})
    assert in_dialect(kept, silent, "openai") == _body(chat_template_kwargs={"a": 1})
    plain = _body()
    assert in_dialect(plain, silent, "openai") is plain


def test_the_callers_body_is_never_mutated() -> None:
    body = _body(
        max_tokens=10,
        temperature=0.3,
        reasoning_effort="high",
        chat_template_kwargs={"enable_thinking": True, "a": 1},
    )
    before = copy.deepcopy(body)
    for kind in ("openai", "anthropic"):
        for param in ("auto", "reasoning_effort", "thinking", "enable_thinking"):
            in_dialect(body, _model(param=param), kind)
    assert body == before


def test_with_several_spellings_the_models_own_goes_and_the_others_do_not() -> None:
    thinking = {"type": "enabled", "budget_tokens": 2048}
    body = _body(max_tokens=5000, reasoning_effort="high", thinking=thinking)
    to_openai = in_dialect(body, _model(), "openai")
    assert to_openai["reasoning_effort"] == "high" and "thinking" not in to_openai
    to_claude = in_dialect(body, _model(), "anthropic")
    assert to_claude["thinking"] == thinking and "reasoning_effort" not in to_claude
    assert to_claude["max_tokens"] == 5000  # the client's own thinking: as it came
