"""Adaptive thinking (``thinking: {type: adaptive}`` with ``output_config.effort``): which
Claude models take it, the reasoning gate turning it on, and a client's own choice said
in the serving model's dialect, both ways (docs/reasoning.md, "Adaptive thinking")."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmroute.dispatch.client_reasoning import (
    ClientIntent,
    effort_where_taken,
    in_dialect,
    intent_of,
)
from llmroute.dispatch.reasoning_params import fit_thinking, with_reasoning
from llmroute.registry.claude_thinking import adaptive_id, thinks_adaptively
from llmroute.registry.schema import Model, Reasoning

OPUS_47 = "claude-opus-4-7"
SONNET_45 = "claude-sonnet-4-5-20250929"


def _model(model_id: str = OPUS_47, **reasoning: Any) -> Model:
    return Model(provider="p", model=model_id, reasoning=Reasoning(**reasoning))


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(
    ("model_id", "adaptive"),
    [
        ("claude-opus-4-7", True),
        ("claude-opus-4-6", True),
        ("claude-sonnet-4-6", True),
        ("claude-opus-5", True),
        ("claude-mythos-preview", True),
        ("anthropic.claude-opus-4-6-v1", True),  # Bedrock
        ("anthropic/claude-opus-4.7", True),  # OpenRouter
        ("claude-sonnet-4-5-20250929", False),
        ("claude-haiku-4-5", False),
        ("claude-opus-4-1", False),
        ("claude-opus-4-20250514", False),  # a date is no minor version
        ("claude-3-7-sonnet-latest", False),
        ("claude-x", False),  # no version: the budget form, which every older model takes
    ],
)
def test_auto_reads_the_claude_version_from_the_id(model_id: str, adaptive: bool) -> None:
    assert adaptive_id(model_id) is adaptive


def test_the_registry_says_it_over_the_id() -> None:
    assert not thinks_adaptively(_model(), Reasoning(thinking="budget"))
    assert thinks_adaptively(_model("my-claude"), Reasoning(thinking="adaptive"))


# -- the gate ---------------------------------------------------------------------------


def test_the_gate_turns_on_adaptive_thinking_with_the_models_effort() -> None:
    body = _body(max_tokens=500, temperature=0.3, top_k=5, top_p=0.5)
    sent = with_reasoning(body, _model(effort="xhigh"), "anthropic", True)
    assert sent["thinking"] == {"type": "adaptive"}
    assert sent["output_config"] == {"effort": "xhigh"}
    assert sent["max_tokens"] == 500 + 32768  # room for the thinking, as with a budget
    assert not {"temperature", "top_k", "top_p"} & sent.keys()  # refused beside thinking


@pytest.mark.parametrize(
    ("reasoning", "effort"),
    [
        ({"budget_tokens": 2000}, "low"),
        ({"budget_tokens": 20000}, "high"),
        ({"effort": "minimal"}, "low"),  # Anthropic's lowest
        ({}, None),  # none said: Anthropic's default (high)
    ],
)
def test_the_gates_effort_for_an_adaptive_model(
    reasoning: dict[str, Any], effort: str | None
) -> None:
    sent = with_reasoning(_body(), _model(**reasoning), "anthropic", True)
    assert sent["thinking"] == {"type": "adaptive"} and "budget_tokens" not in sent["thinking"]
    assert sent.get("output_config", {}).get("effort") == effort


def test_the_gate_keeps_the_clients_effort_and_output_format() -> None:
    body = _body(output_config={"effort": "low", "format": {"type": "json_schema"}})
    sent = with_reasoning(body, _model(effort="high"), "anthropic", True)
    assert sent["thinking"] == {"type": "adaptive"}
    assert sent["output_config"] == {"effort": "low", "format": {"type": "json_schema"}}
    assert sent["max_tokens"] == 4096 + 2048  # room for the effort it will think at


def test_an_older_claude_keeps_the_budget_and_off_is_disabled_for_both() -> None:
    sent = with_reasoning(_body(), _model(SONNET_45, effort="high"), "anthropic", True)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 24576}
    declared = _model(SONNET_45, effort="high", thinking="adaptive")  # the registry's word
    assert with_reasoning(_body(), declared, "anthropic", True)["thinking"]["type"] == "adaptive"
    for model_id in (OPUS_47, SONNET_45):
        off = with_reasoning(_body(), _model(model_id, effort="high"), "anthropic", False)
        assert off["thinking"] == {"type": "disabled"}  # Opus 4.7 takes it too


def test_fit_thinking_adds_no_budget_to_adaptive_thinking() -> None:
    body = _body(max_tokens=300, temperature=0.7, top_p=0.9, thinking={"type": "adaptive"})
    kept = copy.deepcopy(body)
    sent = fit_thinking(body, _model())
    assert body == kept
    assert sent["max_tokens"] == 300 and sent["thinking"] == {"type": "adaptive"}
    assert not {"temperature", "top_p"} & sent.keys()
    plain = _body(max_tokens=300, temperature=1, thinking={"type": "adaptive"})
    assert fit_thinking(plain, _model()) is plain


def test_an_openai_model_gets_anthropics_max_as_high() -> None:
    openai = Model(provider="p", model="o3", reasoning=Reasoning(effort="max"))
    assert with_reasoning(_body(), openai, "openai", True)["reasoning_effort"] == "high"


# -- the client's own choice --------------------------------------------------------------


def test_an_adaptive_request_is_read_with_its_effort() -> None:
    body = _body(thinking={"type": "adaptive"}, output_config={"effort": "max"})
    assert intent_of(body) == ClientIntent(True, effort="max")
    litellm = _body(thinking={"type": "adaptive"}, reasoning_effort="low")
    assert intent_of(litellm, prefer="thinking") == ClientIntent(True, effort="low")
    assert intent_of(_body(thinking={"type": "adaptive"})) == ClientIntent(True)


def test_an_adaptive_request_reaches_an_adaptive_model_as_it_came() -> None:
    body = _body(
        max_tokens=1000,
        thinking={"type": "adaptive", "display": "summarized"},
        output_config={"effort": "max"},
    )
    assert in_dialect(body, _model(effort="low"), "anthropic") is body
    budget_only = _model("my-claude", thinking="budget", effort="low")
    assert in_dialect(body, budget_only, "anthropic")["thinking"]["type"] == "enabled"


def test_a_chat_clients_effort_beside_adaptive_becomes_anthropics() -> None:
    body = _body(thinking={"type": "adaptive"}, reasoning_effort="minimal")
    sent = in_dialect(body, _model(), "anthropic")
    assert sent["thinking"] == {"type": "adaptive"}
    assert sent["output_config"] == {"effort": "low"} and "reasoning_effort" not in sent


@pytest.mark.parametrize(
    ("extra", "effort"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 3000}}, "medium"),
        ({"reasoning_effort": "high"}, "high"),
        ({"reasoning": {"effort": "minimal"}}, "low"),
        ({"reasoning": {"max_tokens": 1500}}, "low"),
    ],
)
def test_a_budget_or_an_effort_to_an_adaptive_only_model_is_adaptive(
    extra: dict[str, Any], effort: str
) -> None:
    sent = in_dialect(_body(max_tokens=9000, temperature=0.2, **extra), _model(), "anthropic")
    assert sent["thinking"] == {"type": "adaptive"}
    assert sent["output_config"] == {"effort": effort}
    assert sent["max_tokens"] == 9000  # the client's limit already held its thinking
    assert not {"reasoning_effort", "reasoning", "temperature"} & sent.keys()


def test_an_effort_without_a_limit_gets_room_to_think() -> None:
    sent = in_dialect(_body(reasoning_effort="medium"), _model(), "anthropic")
    assert sent["output_config"] == {"effort": "medium"} and sent["max_tokens"] == 4096 + 8192


@pytest.mark.parametrize(
    ("effort", "budget"), [("low", 2048), ("high", 24576), ("max", 32768), (None, 24576)]
)
def test_adaptive_to_a_budget_only_model_is_enabled_with_a_budget(
    effort: str | None, budget: int
) -> None:
    config = {"effort": effort, "format": {"type": "json_schema"}} if effort else {}
    body = _body(max_tokens=100, thinking={"type": "adaptive"}, output_config=config)
    sent = in_dialect(body, _model(SONNET_45, effort="high"), "anthropic")
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert sent["max_tokens"] == 100 + budget
    # the effort was the thinking's, now said as the budget; the format stays
    assert sent.get("output_config", {}) == ({"format": {"type": "json_schema"}} if effort else {})


@pytest.mark.parametrize(
    ("effort", "sent_effort"), [("max", "high"), ("xhigh", "xhigh"), ("low", "low")]
)
def test_adaptive_to_an_openai_model_is_reasoning_effort(effort: str, sent_effort: str) -> None:
    body = _body(thinking={"type": "adaptive"}, output_config={"effort": effort})
    sent = in_dialect(body, Model(provider="p", model="o3", reasoning=Reasoning()), "openai")
    assert sent["reasoning_effort"] == sent_effort
    assert "thinking" not in sent and "output_config" not in sent


def test_off_stays_off_in_every_dialect() -> None:
    body = _body(thinking={"type": "disabled"}, output_config={"effort": "low"})
    assert in_dialect(body, _model(), "anthropic") is body  # Anthropic takes both
    sent = in_dialect(body, Model(provider="p", model="o3", reasoning=Reasoning()), "openai")
    assert sent["reasoning_effort"] == "low" and "output_config" not in sent


def test_effort_goes_only_where_anthropics_parameters_are_taken() -> None:
    body = _body(output_config={"effort": "high", "format": {"type": "json_schema"}})
    plain = Model(provider="p", model="up")
    assert effort_where_taken(body, plain, "anthropic") is body
    sent = effort_where_taken(body, plain, "openai")
    assert sent["output_config"] == {"format": {"type": "json_schema"}}
    alone = _body(output_config={"effort": "high"})
    assert "output_config" not in effort_where_taken(alone, plain, "openai")
    proxied = Model(provider="p", model="up", reasoning=Reasoning(param="thinking"))
    assert effort_where_taken(alone, proxied, "openai") is alone


@pytest.mark.parametrize(
    ("served", "asked", "sent"),
    [
        ("claude-opus-4-7", "xhigh", "xhigh"),
        ("claude-opus-4-7", "max", "max"),
        ("claude-opus-4-6", "xhigh", "high"),  # xhigh came with Opus 4.7: the nearest lower
        ("claude-sonnet-4-6", "max", "max"),
        ("claude-mythos-preview", "xhigh", "high"),
        ("claude-opus-4-5-20251101", "max", "high"),  # Opus 4.5: low to high only
        ("claude-opus-4-5-20251101", "medium", "medium"),
        ("claude-sonnet-4-5-20250929", "low", None),  # Sonnet 4.5 refuses effort
        ("anthropic.claude-haiku-4-5-20251001-v1:0", "high", None),
        ("claude-opus-4-1-20250805", "high", None),
        ("us.anthropic.claude-opus-4-6-v1", "xhigh", "high"),
        ("claude-proxy-model", "xhigh", "xhigh"),  # no version to read: as asked
    ],
)
def test_an_effort_the_serving_claude_lacks_is_the_nearest_lower_one(
    served: str, asked: str, sent: str | None
) -> None:
    """Anthropic refuses an effort level a model does not have (a 400): the level goes
    down to the nearest the serving model has, and the parameter is left out for one
    that takes none; the rest of ``output_config`` stays."""
    body = _body(output_config={"effort": asked, "format": {"type": "json_schema"}})
    out = effort_where_taken(body, _model(), "anthropic", served)
    assert out["output_config"].get("effort") == sent
    assert out["output_config"]["format"] == {"type": "json_schema"}
    if sent == asked:
        assert out is body


def test_claude_5_gets_no_top_effort_beside_disabled_thinking() -> None:
    """Claude 5 refuses ``xhigh`` and ``max`` with ``thinking: {type: disabled}``."""
    body = _body(thinking={"type": "disabled"}, output_config={"effort": "max"})
    assert effort_where_taken(body, _model(), "anthropic", "claude-opus-5")["output_config"] == {
        "effort": "high"
    }
    assert effort_where_taken(body, _model(), "anthropic", "claude-opus-4-7") is body


def test_a_chat_clients_max_beside_adaptive_reaches_an_openai_model_as_high() -> None:
    """LiteLLM's spelling: ``reasoning_effort`` beside ``thinking: {type: adaptive}`` is
    the adaptive thinking's effort, on Anthropic's scale; ``max`` is no OpenAI effort."""
    openai = Model(provider="p", model="o3", reasoning=Reasoning())
    body = _body(thinking={"type": "adaptive"}, reasoning_effort="max")
    sent = in_dialect(body, openai, "openai")
    assert sent["reasoning_effort"] == "high" and "thinking" not in sent
    alone = _body(reasoning_effort="xhigh")  # OpenAI's own spelling goes as it came
    assert in_dialect(alone, openai, "openai") is alone


def test_auto_reads_the_served_id_over_the_models() -> None:
    """A model whose `model` is an alias, served by a deployment naming Opus 4.7: the
    deployment's id decides, as it is the model Anthropic checks."""
    aliased = _model("house-claude", effort="high")
    assert not thinks_adaptively(aliased, aliased.reasoning)  # type: ignore[arg-type]
    assert thinks_adaptively(aliased, aliased.reasoning, OPUS_47)  # type: ignore[arg-type]
    gated = with_reasoning(_body(), aliased, "anthropic", True, OPUS_47)
    assert gated["thinking"] == {"type": "adaptive"}
    chosen = in_dialect(_body(reasoning_effort="low"), aliased, "anthropic", OPUS_47)
    assert chosen["thinking"] == {"type": "adaptive"}
    assert chosen["output_config"] == {"effort": "low"}
