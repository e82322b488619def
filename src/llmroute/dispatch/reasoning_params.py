"""The reasoning gate's outcome as provider parameters: a pure function of the body, the
pool model, its provider's kind and the gate's verdict (docs/reasoning.md).

- The client's own choice wins: a body that sets ``reasoning_effort``, ``thinking``,
  ``reasoning`` or ``chat_template_kwargs.enable_thinking`` is sent as it is; so is any
  body for a model without a ``reasoning`` entry (or with ``reasoning: false``), or when
  no gate ran (``needed=None``).
- Needed: OpenAI ``reasoning_effort`` (the model's ``effort``, else derived from
  ``budget_tokens``: ≤ 2048 → low, ≤ 8192 → medium, more → high; neither → medium);
  Anthropic ``thinking: {type: enabled, budget_tokens}`` (the model's budget, else
  derived from ``effort``: minimal 1024, low 2048, medium 8192, high 24576) with
  ``max_tokens`` raised by the budget, since thinking counts against it; vLLM/Qwen
  ``chat_template_kwargs.enable_thinking: true``.
- Not needed, with ``turn_off: true``: Anthropic ``thinking: {type: disabled}``, Qwen
  ``enable_thinking: false``, OpenAI ``reasoning_effort: low`` (the lowest value every
  OpenAI reasoning model accepts: ``minimal`` exists only on the gpt-5 family and o-series
  models refuse it with a 400).

The body is never mutated: a changed body is a shallow copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from llmroute.providers._anthropic_convert import DEFAULT_MAX_TOKENS
from llmroute.registry.schema import Model, Reasoning

__all__ = [
    "EFFORT_BUDGET",
    "OFF_EFFORT",
    "budget_for",
    "client_chose",
    "effort_for",
    "fit_thinking",
    "style_for",
    "thinking_allowed",
    "turn_off",
    "turn_on",
    "with_reasoning",
]

Style = Literal["reasoning_effort", "thinking", "enable_thinking"]

EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
"""Anthropic ``budget_tokens`` for a model that declares only an ``effort``."""
OFF_EFFORT = "low"
DEFAULT_EFFORT = "medium"  # OpenAI's own default
_CLIENT_KEYS = ("reasoning_effort", "thinking", "reasoning")
# Anthropic refuses these together with extended thinking (a 400), so they are dropped
# when the gate turns thinking on; the client did not ask for thinking.
_NOT_WITH_THINKING = ("temperature", "top_k")
_MIN_TOP_P_WITH_THINKING = 0.95


def client_chose(body: Mapping[str, Any]) -> bool:
    """Whether the client set any thinking parameter itself."""
    if any(body.get(key) is not None for key in _CLIENT_KEYS):
        return True
    kwargs = body.get("chat_template_kwargs")
    return isinstance(kwargs, Mapping) and kwargs.get("enable_thinking") is not None


def style_for(reasoning: Reasoning, provider_kind: str) -> Style:
    """The parameter a model takes: Anthropic providers always ``thinking`` (the only
    one the Messages API has); otherwise the model's ``param``, ``auto`` meaning
    ``reasoning_effort``."""
    if provider_kind == "anthropic":
        return "thinking"
    if reasoning.param == "auto":
        return "reasoning_effort"
    return reasoning.param


def effort_for(reasoning: Reasoning) -> str:
    if reasoning.effort is not None:
        return reasoning.effort
    budget = reasoning.budget_tokens
    if budget is None:
        return DEFAULT_EFFORT
    if budget <= EFFORT_BUDGET["low"]:
        return "low"
    return "medium" if budget <= EFFORT_BUDGET["medium"] else "high"


def budget_for(reasoning: Reasoning) -> int:
    if reasoning.budget_tokens is not None:
        return reasoning.budget_tokens
    return EFFORT_BUDGET[reasoning.effort or DEFAULT_EFFORT]


def with_reasoning(
    body: dict[str, Any],
    model: Model,
    provider_kind: Literal["openai", "anthropic"] | str,
    needed: bool | None,
) -> dict[str, Any]:
    """The body to send to `model` on a provider of `provider_kind`, given the gate's
    `needed` (None: no gate ran). Returns `body` itself when nothing changes."""
    reasoning = model.reasoning
    if needed is None or not isinstance(reasoning, Reasoning) or client_chose(body):
        return body
    style = style_for(reasoning, provider_kind)
    if needed:
        return turn_on(body, reasoning, style)
    if reasoning.turn_off:
        return turn_off(body, style)
    return body


def turn_on(body: dict[str, Any], reasoning: Reasoning, style: Style) -> dict[str, Any]:
    if style == "reasoning_effort":
        return {**body, "reasoning_effort": effort_for(reasoning)}
    if style == "enable_thinking":
        return _template_kwargs(body, True)
    if not thinking_allowed(body):
        return body
    budget = budget_for(reasoning)
    out = {k: v for k, v in body.items() if k not in _NOT_WITH_THINKING}
    top_p = out.get("top_p")
    if isinstance(top_p, int | float) and top_p < _MIN_TOP_P_WITH_THINKING:
        del out["top_p"]
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    key = "max_completion_tokens" if out.get("max_completion_tokens") is not None else "max_tokens"
    answer = out.get(key)
    room = answer if isinstance(answer, int) and not isinstance(answer, bool) else None
    out[key] = (room or DEFAULT_MAX_TOKENS) + budget
    return out


def fit_thinking(body: dict[str, Any], model: Model) -> dict[str, Any]:
    """`body` as it is finally sent (after the route's and model's `params` filled what
    it left unset), made acceptable to Anthropic when it enables extended thinking,
    whoever asked for it: no ``temperature`` other than 1, no ``top_k``, no ``top_p``
    below 0.95; ``max_tokens`` above ``budget_tokens`` (unset: the default 4096 plus the
    budget; at or below it: raised by the budget, since thinking counts against it); and
    within the model's ``max_output_tokens``, the budget shrunk to half of it when it
    would not fit (thinking left out when not even Anthropic's minimum 1024 fits).
    Returns `body` itself when nothing changes."""
    thinking = body.get("thinking")
    if not isinstance(thinking, Mapping) or thinking.get("type") != "enabled":
        return body
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        return body
    out = {k: v for k, v in body.items() if k != "top_k"}
    if out.get("temperature") not in (None, 1):
        del out["temperature"]
    top_p = out.get("top_p")
    if isinstance(top_p, int | float) and top_p < _MIN_TOP_P_WITH_THINKING:
        del out["top_p"]
    key = "max_completion_tokens" if out.get("max_completion_tokens") is not None else "max_tokens"
    answer = out.get(key)
    if not isinstance(answer, int) or isinstance(answer, bool):
        answer = DEFAULT_MAX_TOKENS + budget
    elif answer <= budget:
        answer += budget
    cap = model.max_output_tokens
    if cap is not None and answer > cap:
        answer = cap
        if budget >= answer:
            budget = max(answer // 2, EFFORT_BUDGET["minimal"])
        if budget >= answer:
            del out["thinking"]
            out[key] = answer
            return out
    out[key] = answer
    if budget != thinking["budget_tokens"]:
        out["thinking"] = {**thinking, "budget_tokens": budget}
    return body if out == body else out


def thinking_allowed(body: Mapping[str, Any]) -> bool:
    """Anthropic refuses extended thinking with a forced tool choice, and in the middle of
    a tool loop (the last assistant turn would need the thinking blocks the OpenAI format
    cannot carry back)."""
    choice = body.get("tool_choice")
    if choice == "required" or isinstance(choice, Mapping):
        return False
    messages = body.get("messages")
    if not isinstance(messages, list):
        return True
    # the last assistant turn: when it called tools, the loop is in progress whatever
    # follows its results (a user text beside them, as Claude Code sends, or the images
    # a Messages tool_result held, which open a user message after the tool messages)
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            return not message.get("tool_calls")
        if isinstance(message, Mapping) and message.get("role") == "tool":
            return False
    return True


def turn_off(body: dict[str, Any], style: Style) -> dict[str, Any]:
    if style == "reasoning_effort":
        return {**body, "reasoning_effort": OFF_EFFORT}
    if style == "enable_thinking":
        return _template_kwargs(body, False)
    return {**body, "thinking": {"type": "disabled"}}


def _template_kwargs(body: dict[str, Any], enable: bool) -> dict[str, Any]:
    existing = body.get("chat_template_kwargs")
    merged = dict(existing) if isinstance(existing, Mapping) else {}
    merged["enable_thinking"] = enable
    return {**body, "chat_template_kwargs": merged}
