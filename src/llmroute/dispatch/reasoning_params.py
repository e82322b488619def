"""The reasoning gate's outcome as provider parameters: a pure function of the body, the
pool model, its provider's kind and the gate's verdict (docs/reasoning.md).

- The client's own choice wins: a body that sets ``reasoning_effort``, ``thinking``,
  ``reasoning`` (one that says on or off: `reasoning_says`) or
  ``chat_template_kwargs.enable_thinking`` is sent as it is; so is any
  body for a model without a ``reasoning`` entry (or with ``reasoning: false``), or when
  no gate ran (``needed=None``).
- Needed: OpenAI ``reasoning_effort`` (the model's ``effort``, else derived from
  ``budget_tokens``: ≤ 2048 → low, ≤ 8192 → medium, more → high; neither → medium;
  Anthropic's ``max`` → ``high``, the highest every OpenAI reasoning model takes);
  Anthropic, for a model that thinks adaptively (`thinks_adaptively`), ``thinking:
  {type: adaptive}`` with ``output_config.effort`` (the model's effort, ``minimal`` →
  ``low``, else derived from its budget; neither: none sent, Anthropic's default
  ``high``), otherwise ``thinking: {type: enabled, budget_tokens}`` (the model's budget,
  else derived from ``effort``: minimal 1024, low 2048, medium 8192, high 24576, xhigh
  and max 32768); either way ``max_tokens`` raised by that budget, since thinking counts
  against it; vLLM/Qwen ``chat_template_kwargs.enable_thinking: true``.
- Not needed, with ``turn_off: true``: Anthropic ``thinking: {type: disabled}``, Qwen
  ``enable_thinking: false``, OpenAI ``reasoning_effort``: the lowest the model the id
  names takes (`off_effort`: ``none`` on gpt-5.1 and later, ``minimal`` on gpt-5, else
  ``low``, which every OpenAI reasoning model accepts: o-series models refuse the
  others with a 400).

The body is never mutated: a changed body is a shallow copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeGuard

from llmroute.providers._anthropic_convert import DEFAULT_MAX_TOKENS, thinking_blocks
from llmroute.registry.claude_thinking import EFFORTS, thinks_adaptively
from llmroute.registry.openai_efforts import OFF_EFFORT, off_effort
from llmroute.registry.schema import ANTHROPIC_KINDS, Model, Reasoning

__all__ = [
    "ADAPTIVE_EFFORTS",
    "EFFORT_BUDGET",
    "OFF_EFFORT",
    "adaptive_effort",
    "budget_for",
    "client_chose",
    "effort_for",
    "fit_thinking",
    "openai_effort",
    "reasoning_says",
    "style_for",
    "thinking_allowed",
    "turn_off",
    "turn_on",
    "with_reasoning",
]

Style = Literal["reasoning_effort", "thinking", "enable_thinking"]

EFFORT_BUDGET = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 24576,
    "xhigh": 32768,  # Anthropic reports little gain from budgets above 32k
    "max": 32768,
}
"""Anthropic ``budget_tokens`` for a model that declares only an ``effort``."""
ADAPTIVE_EFFORTS = EFFORTS
"""Anthropic's ``output_config.effort`` values (``xhigh`` from Opus 4.7, ``max`` from
Opus 4.6; ``high`` is its default), lowest first."""
DEFAULT_EFFORT = "medium"  # OpenAI's own default
_SAFE_OPENAI_TOP = "high"  # xhigh exists only on some OpenAI models: the others 400
_CLIENT_KEYS = ("reasoning_effort", "thinking", "reasoning")
_MIN_TOP_P_WITH_THINKING = 0.95


def reasoning_says(reasoning: Any) -> TypeGuard[Mapping[str, Any]]:
    """Whether OpenRouter's ``reasoning`` object asks for thinking on or off: its
    ``enabled``, ``effort`` or ``max_tokens`` (``exclude`` or ``summary`` alone shape
    the answer, and OpenRouter infers ``enabled`` from the other two)."""
    return isinstance(reasoning, Mapping) and any(
        reasoning.get(key) is not None for key in ("enabled", "effort", "max_tokens")
    )


def client_chose(body: Mapping[str, Any]) -> bool:
    """Whether the client set any thinking parameter itself (a ``reasoning`` object
    only when it says on or off: `reasoning_says`)."""
    if any(body.get(key) is not None for key in _CLIENT_KEYS if key != "reasoning"):
        return True
    if reasoning_says(body.get("reasoning")):
        return True
    kwargs = body.get("chat_template_kwargs")
    return isinstance(kwargs, Mapping) and kwargs.get("enable_thinking") is not None


def style_for(reasoning: Reasoning, provider_kind: str) -> Style:
    """The parameter a model takes: Anthropic providers always ``thinking`` (the only
    one the Messages API has); otherwise the model's ``param``, ``auto`` meaning
    ``reasoning_effort``."""
    if provider_kind in ANTHROPIC_KINDS:
        return "thinking"
    if reasoning.param == "auto":
        return "reasoning_effort"
    return reasoning.param


def openai_effort(effort: str | None) -> str | None:
    """`effort` as OpenAI's ``reasoning_effort``: Anthropic's ``max`` becomes ``high``,
    the highest effort every OpenAI reasoning model accepts."""
    return _SAFE_OPENAI_TOP if effort == "max" else effort


def adaptive_effort(effort: str | None) -> str | None:
    """`effort` as Anthropic's ``output_config.effort``: ``minimal`` becomes ``low`` (its
    lowest); one it does not know, None (Anthropic's default then applies)."""
    if effort == "minimal":
        return "low"
    return effort if effort in ADAPTIVE_EFFORTS else None


def effort_for(reasoning: Reasoning) -> str:
    """The OpenAI ``reasoning_effort`` for `reasoning`."""
    if reasoning.effort is not None:
        return openai_effort(reasoning.effort) or reasoning.effort
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
    served_id: str | None = None,
) -> dict[str, Any]:
    """The body to send to `model` (served as `served_id`, a deployment's own id, when
    it has one) on a provider of `provider_kind`, given the gate's `needed` (None: no
    gate ran). Returns `body` itself when nothing changes."""
    reasoning = model.reasoning
    if needed is None or not isinstance(reasoning, Reasoning) or client_chose(body):
        return body
    style = style_for(reasoning, provider_kind)
    if needed:
        adaptive = style == "thinking" and thinks_adaptively(model, reasoning, served_id)
        return turn_on(body, reasoning, style, adaptive=adaptive)
    if reasoning.turn_off:
        return turn_off(body, style, served_id or model.model)
    return body


def turn_on(
    body: dict[str, Any],
    reasoning: Reasoning,
    style: Style,
    *,
    adaptive: bool = False,
    room: bool = True,
) -> dict[str, Any]:
    """`body` with thinking turned on as `reasoning` says, in `style`; Anthropic's
    ``thinking`` adaptive when `adaptive`. `room`: the answer limit is raised by the
    thinking budget (the request's limit was meant for the answer alone); without it an
    adaptive request's limit is left as it is."""
    if style == "reasoning_effort":
        return {**body, "reasoning_effort": effort_for(reasoning)}
    if style == "enable_thinking":
        return _template_kwargs(body, True)
    if not thinking_allowed(body, adaptive=adaptive):
        return body
    out = _sampling_for_thinking(body)
    if adaptive:
        effort = adaptive_effort(reasoning.effort)
        if effort is None and reasoning.budget_tokens is not None:
            effort = effort_for(reasoning)
        out["thinking"] = {"type": "adaptive"}
        config = out.get("output_config")
        config = dict(config) if isinstance(config, Mapping) else {}
        if config.get("effort") is not None:  # the client's own wins
            effort = config["effort"]
        elif effort is not None:
            out["output_config"] = {**config, "effort": effort}
        # the room adaptive thinking may take: its effort's budget (Anthropic's default high)
        budget = EFFORT_BUDGET.get(str(effort), EFFORT_BUDGET["high"])
        if not room:
            return out
    else:
        budget = budget_for(reasoning)
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    key = "max_completion_tokens" if out.get("max_completion_tokens") is not None else "max_tokens"
    answer = out.get(key)
    limit = answer if isinstance(answer, int) and not isinstance(answer, bool) else None
    out[key] = (limit or DEFAULT_MAX_TOKENS) + budget
    return out


def _sampling_for_thinking(body: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `body` without the sampling Anthropic refuses beside thinking, enabled
    or adaptive (a 400): ``temperature`` other than 1, ``top_k``, ``top_p`` below 0.95."""
    out = {k: v for k, v in body.items() if k != "top_k"}
    if out.get("temperature") not in (None, 1):
        del out["temperature"]
    top_p = out.get("top_p")
    if isinstance(top_p, int | float) and top_p < _MIN_TOP_P_WITH_THINKING:
        del out["top_p"]
    return out


def fit_thinking(body: dict[str, Any], model: Model) -> dict[str, Any]:
    """`body` as it is finally sent (after the route's and model's `params` filled what
    it left unset), made acceptable to Anthropic when it enables extended thinking,
    whoever asked for it: no ``temperature`` other than 1, no ``top_k``, no ``top_p``
    below 0.95; ``max_tokens`` above ``budget_tokens`` (unset: the default 4096 plus the
    budget; at or below it: raised by the budget, since thinking counts against it); and
    within the model's ``max_output_tokens``, the budget shrunk to half of it when it
    would not fit (thinking left out when not even Anthropic's minimum 1024 fits).
    Adaptive thinking has no budget: only its sampling is made acceptable. Returns
    `body` itself when nothing changes."""
    thinking = body.get("thinking")
    if not isinstance(thinking, Mapping):
        return body
    if thinking.get("type") == "adaptive":
        out = _sampling_for_thinking(body)
        return body if out == body else out
    if thinking.get("type") != "enabled":
        return body
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        return body
    out = _sampling_for_thinking(body)
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


def thinking_allowed(body: Mapping[str, Any], *, adaptive: bool = False) -> bool:
    """Whether Anthropic takes thinking with `body`. Manual thinking (a budget) it
    refuses with a forced tool choice, and in a tool loop unless the loop's first
    assistant message starts with its thinking blocks (a loop is one assistant turn: the
    model thinks as it starts, and without interleaved thinking not again after a tool
    result): allowed when that message carries them back (``thinking_blocks``, signed),
    as a client that keeps them does. `adaptive` thinking takes both: the model may
    have chosen not to think, so no block is required, and forced tool use is
    supported."""
    if adaptive:
        return True
    choice = body.get("tool_choice")
    if choice == "required" or isinstance(choice, Mapping):
        return False
    messages = body.get("messages")
    if not isinstance(messages, list):
        return True
    # the loop runs back to the last answer without tool calls: tool results, the user
    # text a client puts beside them (Claude Code does), and the images a Messages
    # tool_result held (which open a user message after the tool messages) all belong to it
    looping = False
    first: Mapping[str, Any] | None = None
    for message in reversed(messages):
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if role == "tool":
            looping = True
        elif role == "assistant":
            if not message.get("tool_calls"):
                first = first or message
                break
            looping, first = True, message
    if not looping:
        return True
    return first is not None and bool(thinking_blocks(first.get("thinking_blocks")))


def turn_off(body: dict[str, Any], style: Style, model_id: str | None = None) -> dict[str, Any]:
    """`body` with thinking turned off in `style`; ``reasoning_effort`` the lowest the
    model `model_id` names takes (`off_effort`; without an id, the one every model
    takes)."""
    if style == "reasoning_effort":
        effort = OFF_EFFORT if model_id is None else off_effort(model_id)
        if effort is None:  # a pro model: its default is the least it does
            return {k: v for k, v in body.items() if k != "reasoning_effort"}
        return {**body, "reasoning_effort": effort}
    if style == "enable_thinking":
        return _template_kwargs(body, False)
    return {**body, "thinking": {"type": "disabled"}}


def _template_kwargs(body: dict[str, Any], enable: bool) -> dict[str, Any]:
    existing = body.get("chat_template_kwargs")
    merged = dict(existing) if isinstance(existing, Mapping) else {}
    merged["enable_thinking"] = enable
    return {**body, "chat_template_kwargs": merged}
