"""A client's own thinking parameters, said in the dialect of the model that serves the
request (docs/reasoning.md, "The client's choice").

A routed client does not know which model answers, so it says "think hard" the way its
own API does: OpenAI ``reasoning_effort``, Anthropic ``thinking`` (``{type: enabled,
budget_tokens}``, or ``{type: adaptive}`` with ``output_config.effort``, which
``POST /v1/messages`` carries through; chat clients may send ``thinking: {type:
adaptive}`` beside ``reasoning_effort``, as LiteLLM takes it), OpenRouter-style
``reasoning: {effort | max_tokens | enabled}``, or vLLM/Qwen
``chat_template_kwargs.enable_thinking``. For a model with a ``reasoning`` entry, the
request is sent with that model's own parameter instead, holding the same intent:

- an effort becomes a budget by `EFFORT_BUDGET` (minimal 1024 … high 24576, xhigh and
  max 32768) and a budget an effort by the gate's thresholds (≤ 2048 low, ≤ 8192
  medium, more high); an Anthropic model that thinks adaptively gets ``{type:
  adaptive}`` with that effort (``minimal`` → ``low``), one that does not ``{type:
  enabled, budget_tokens}``; an OpenAI-style model gets Anthropic's ``max`` as
  ``high``; a client that said "think" without an amount gets the model's own;
- "off" (``thinking.type: disabled``, ``reasoning_effort: none``, ``enable_thinking:
  false``, ``reasoning.enabled: false``) becomes ``thinking: {type: disabled}``,
  ``enable_thinking: false`` or the lowest ``reasoning_effort`` the model takes
  (`off_effort`: ``none``, ``minimal`` or ``low``);
- Anthropic-style thinking that Anthropic would refuse (a forced tool choice, or the
  turn after a tool result whose assistant turn does not carry its ``thinking_blocks``
  back) is left out rather than sent to a certain 400.

A model declared ``reasoning: false`` does not think: every spelling is removed (the
client asked of the route, not of this model, and such models refuse the parameters).
A model without a ``reasoning`` entry is not known to think: the body goes as it came,
except that Anthropic's ``thinking`` is not sent to a non-Anthropic provider (OpenAI
refuses parameters it does not know). The body is never mutated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from llmroute.dispatch.reasoning_params import (
    ADAPTIVE_EFFORTS,
    EFFORT_BUDGET,
    adaptive_effort,
    effort_for,
    openai_effort,
    reasoning_says,
    style_for,
    thinking_allowed,
    turn_off,
    turn_on,
)
from llmroute.registry.claude_thinking import claude_version, effort_levels, thinks_adaptively
from llmroute.registry.openai_efforts import refuses_none
from llmroute.registry.schema import ANTHROPIC_KINDS, Model, Reasoning

__all__ = [
    "ClientIntent",
    "effort_where_taken",
    "in_dialect",
    "intent_of",
    "without_unsaid_reasoning",
]

_KEYS = ("reasoning_effort", "thinking", "reasoning")


class ClientIntent(NamedTuple):
    """What the client asked for: thinking on or off, and how much if it said."""

    on: bool
    effort: str | None = None
    budget: int | None = None


def _budget(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _effort(effort: Any) -> ClientIntent | None:
    if not isinstance(effort, str):
        return None
    return ClientIntent(False) if effort == "none" else ClientIntent(True, effort=effort)


def _from_effort(body: Mapping[str, Any]) -> ClientIntent | None:
    return _effort(body.get("reasoning_effort"))


def _output_effort(body: Mapping[str, Any]) -> Any:
    config = body.get("output_config")
    return config.get("effort") if isinstance(config, Mapping) else None


def _from_thinking(body: Mapping[str, Any]) -> ClientIntent | None:
    thinking = body.get("thinking")
    if not isinstance(thinking, Mapping):
        return None
    if thinking.get("type") == "disabled":
        return ClientIntent(False)
    if thinking.get("type") == "adaptive":
        effort = _output_effort(body)
        if not isinstance(effort, str):
            effort = body.get("reasoning_effort")  # LiteLLM's spelling beside adaptive
        said = isinstance(effort, str) and effort != "none"
        return ClientIntent(True, effort=effort) if said else ClientIntent(True)
    return ClientIntent(True, budget=_budget(thinking.get("budget_tokens")))


def _from_reasoning(body: Mapping[str, Any]) -> ClientIntent | None:
    """OpenRouter's ``reasoning``: on or off as its ``enabled``, an ``effort`` or a
    ``max_tokens`` say (OpenRouter infers ``enabled`` from the other two); an object
    that says none of them (``{exclude: true}``, ``{summary: auto}``, ``{}``) asks
    nothing of thinking, so the gate decides."""
    reasoning = body.get("reasoning")
    if not reasoning_says(reasoning):
        return None
    if reasoning.get("enabled") is False:
        return ClientIntent(False)
    effort = _effort(reasoning.get("effort"))
    if effort is not None:
        return effort
    return ClientIntent(True, budget=_budget(reasoning.get("max_tokens")))


def _from_template(body: Mapping[str, Any]) -> ClientIntent | None:
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, Mapping) and isinstance(kwargs.get("enable_thinking"), bool):
        return ClientIntent(kwargs["enable_thinking"])
    return None


_Reader = Callable[[Mapping[str, Any]], "ClientIntent | None"]
_READERS: tuple[tuple[str, _Reader], ...] = (
    ("reasoning_effort", _from_effort),
    ("thinking", _from_thinking),
    ("reasoning", _from_reasoning),
    ("enable_thinking", _from_template),
)


def intent_of(body: Mapping[str, Any], prefer: str | None = None) -> ClientIntent | None:
    """The client's thinking intent, read from `prefer`'s parameter first (the target's
    own, when the client set several), else the first one set; None when it set none
    that can be read."""
    for _, read in sorted(_READERS, key=lambda pair: pair[0] != prefer):
        intent = read(body)
        if intent is not None:
            return intent
    return None


def _without_client_keys(body: Mapping[str, Any]) -> dict[str, Any]:
    out = _without_effort({k: v for k, v in body.items() if k not in _KEYS})
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, Mapping) and "enable_thinking" in kwargs:
        rest = {k: v for k, v in kwargs.items() if k != "enable_thinking"}
        if rest:
            out["chat_template_kwargs"] = rest
        else:
            del out["chat_template_kwargs"]
    return out


def in_dialect(
    body: dict[str, Any], model: Model, provider_kind: str, served_id: str | None = None
) -> dict[str, Any]:
    """`body`, whose client set a thinking parameter itself, as `model` (served as
    `served_id`, a deployment's own id, when it has one) on a provider of
    `provider_kind` takes it. Returns `body` itself when nothing changes."""
    reasoning = model.reasoning
    if reasoning is False:
        plain = _without_client_keys(body)
        return body if plain == body else plain
    if reasoning is None:
        return _as_it_came(body, model, provider_kind, served_id)
    style = style_for(reasoning, provider_kind)
    adaptive = style == "thinking" and thinks_adaptively(model, reasoning, served_id)
    intent = intent_of(body, prefer=style)
    if intent is None:
        return body
    if style == "thinking" and intent.on and not thinking_allowed(body, adaptive=adaptive):
        return _without_client_keys(body)
    if _already_said(body, style, adaptive):
        said = _own_only(body, style)
        if style == "reasoning_effort" and _adaptive(body):
            # LiteLLM's spelling of adaptive thinking's effort: Anthropic's scale
            return {**said, "reasoning_effort": openai_effort(intent.effort) or body[style]}
        served = served_id or model.model
        if style == "reasoning_effort" and said[style] == "none" and refuses_none(served):
            # thinking off as gpt-5.1 takes it, on a model the router picked that
            # refuses it (a 400): its lowest, as thinking off said any other way gets
            return turn_off(said, style, served)
        return _with_effort(said, intent)
    plain = _without_client_keys(body)
    if not intent.on:
        return turn_off(plain, style, served_id or model.model)
    wanted = reasoning
    if intent.effort is not None or intent.budget is not None:
        wanted = Reasoning(
            effort=_known_effort(intent.effort), budget_tokens=_budget_or_none(intent)
        )
    if style == "reasoning_effort":
        effort = openai_effort(intent.effort) or effort_for(wanted)
        return {**plain, "reasoning_effort": effort}
    # a client's own limit already holds its thinking (Anthropic's and OpenAI's both
    # count it), so adaptive thinking gets room only when it set none; a budget always
    # needs max_tokens above it
    limited = any(plain.get(key) is not None for key in ("max_tokens", "max_completion_tokens"))
    return turn_on(plain, wanted, style, adaptive=adaptive, room=not limited)


def _adaptive(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") == "adaptive"


def _with_effort(body: dict[str, Any], intent: ClientIntent) -> dict[str, Any]:
    """An adaptive `body` as it came, with the effort the client said elsewhere (a chat
    client's ``reasoning_effort`` beside ``thinking: {type: adaptive}``) as Anthropic's
    ``output_config.effort`` when it set none there."""
    effort = adaptive_effort(intent.effort)
    config = body.get("output_config")
    config = dict(config) if isinstance(config, Mapping) else {}
    if not _adaptive(body) or effort is None or config.get("effort") is not None:
        return body
    return {**body, "output_config": {**config, "effort": effort}}


def without_unsaid_reasoning(body: dict[str, Any], model: Model) -> dict[str, Any]:
    """`body` without an OpenRouter ``reasoning`` that asks nothing of thinking
    (`reasoning_says`), for a model with a ``reasoning`` entry: its parameter is not
    OpenRouter's, as for the client's other spellings (a model without the entry gets
    it as it came). Returns `body` itself when nothing changes."""
    if model.reasoning is None or "reasoning" not in body or reasoning_says(body["reasoning"]):
        return body
    return {k: v for k, v in body.items() if k != "reasoning"}


def effort_where_taken(
    body: dict[str, Any], model: Model, provider_kind: str, served_id: str | None = None
) -> dict[str, Any]:
    """`body` without Anthropic's ``output_config.effort`` unless `model` takes
    Anthropic's parameters (an Anthropic provider, or ``reasoning.param: thinking``):
    ``POST /v1/messages`` carries it, and OpenAI-protocol servers refuse parameters they
    do not know. Where it is taken, an effort the Claude model (served as `served_id`,
    else the model's id) lacks becomes the nearest lower one it has, and is left out for
    one that takes none (a 400 either way). Returns `body` itself when nothing changes."""
    effort = _output_effort(body)
    if effort is None:
        return body
    reasoning = model.reasoning
    own = isinstance(reasoning, Reasoning) and style_for(reasoning, provider_kind) == "thinking"
    if provider_kind not in ANTHROPIC_KINDS and not own:
        return _without_effort(body)
    served = served_id or model.model
    fitted = _effort_taken(effort, served, _thinking_off(body))
    if fitted == effort:
        return body
    if fitted is None:
        return _without_effort(body)
    return {**body, "output_config": {**body["output_config"], "effort": fitted}}


def _thinking_off(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") == "disabled"


_CLAUDE_5 = (5, 0)
_EFFORT_ORDER = {level: rank for rank, level in enumerate(ADAPTIVE_EFFORTS)}


def _effort_taken(effort: Any, served_id: str, thinking_off: bool) -> Any:
    """`effort` as the Claude model `served_id` takes it (None: not at all). Claude 5
    refuses ``xhigh`` and ``max`` beside disabled thinking."""
    levels = effort_levels(served_id)
    if levels is None or not isinstance(effort, str) or effort not in _EFFORT_ORDER:
        return effort
    if thinking_off and (claude_version(served_id) or (0, 0)) >= _CLAUDE_5:
        levels = tuple(level for level in levels if level not in ("xhigh", "max"))
    if effort in levels:
        return effort
    lower = [level for level in levels if _EFFORT_ORDER[level] < _EFFORT_ORDER[effort]]
    return lower[-1] if lower else (levels[0] if levels else None)


def _without_effort(body: dict[str, Any]) -> dict[str, Any]:
    """`body` without ``output_config.effort`` (and without ``output_config`` when that
    was all it held)."""
    config = body.get("output_config")
    if not isinstance(config, Mapping) or "effort" not in config:
        return body
    rest = {k: v for k, v in config.items() if k != "effort"}
    out = {k: v for k, v in body.items() if k != "output_config"}
    if rest:
        out["output_config"] = rest
    return out


def _as_it_came(
    body: dict[str, Any], model: Model, provider_kind: str, served_id: str | None
) -> dict[str, Any]:
    """For a model not known to think: the body unchanged, but Anthropic's ``thinking``
    only to an Anthropic provider, and not where Anthropic would refuse it. The bare
    switch (`_bare_switch`), which Anthropic refuses, is sent as the default
    ``reasoning`` entry turns thinking on (served as `served_id`)."""
    if body.get("thinking") is None:
        return body
    intent = _from_thinking(body)
    refused = (
        intent is not None and intent.on and not thinking_allowed(body, adaptive=_adaptive(body))
    )
    if provider_kind not in ANTHROPIC_KINDS or refused:
        return {k: v for k, v in body.items() if k != "thinking"}
    if not _bare_switch(body["thinking"]):
        return body
    plain = {k: v for k, v in body.items() if k != "thinking"}
    default = Reasoning()
    adaptive = thinks_adaptively(model, default, served_id)
    limited = any(plain.get(key) is not None for key in ("max_tokens", "max_completion_tokens"))
    return turn_on(plain, default, "thinking", adaptive=adaptive, room=not limited)


def _bare_switch(thinking: Any) -> bool:
    """Whether `thinking` is ``{type: enabled}`` without a budget: DeepSeek's, GLM's
    and Doubao's switch, not a form Anthropic takes (``budget_tokens`` is required)."""
    return (
        isinstance(thinking, Mapping)
        and thinking.get("type") == "enabled"
        and thinking.get("budget_tokens") is None
    )


def _own_only(body: dict[str, Any], style: str) -> dict[str, Any]:
    """`body` with the client's other spellings removed, its own (`style`) kept; `body`
    itself when it has no other."""
    keep = _without_client_keys(body)
    if style == "enable_thinking":
        keep["chat_template_kwargs"] = body["chat_template_kwargs"]
    else:
        keep[style] = body[style]
    if style == "thinking" and "output_config" in body:  # its effort is Anthropic's own
        keep["output_config"] = body["output_config"]
    return body if keep == body else keep


def _already_said(body: Mapping[str, Any], style: str, adaptive: bool) -> bool:
    """Whether the client used the target's own parameter, in the form the model takes
    (adaptive or a budget): then it goes as it came. ``{type: enabled}`` without a
    budget (DeepSeek's, GLM's bare switch) is not a form Anthropic takes: the model's
    own budget is sent."""
    if style == "enable_thinking":
        return _from_template(body) is not None
    value = body.get(style)
    if style != "thinking" or not isinstance(value, Mapping):
        return value is not None
    if _bare_switch(value):
        return False
    return value.get("type") in ("disabled", "adaptive" if adaptive else "enabled")


def _known_effort(effort: str | None) -> Any:
    return effort if effort in EFFORT_BUDGET else None


def _budget_or_none(intent: ClientIntent) -> int | None:
    """A budget Anthropic accepts (at least 1024 tokens), from the client's budget or,
    for an effort outside the known ones, the high budget."""
    if intent.budget is not None:
        return max(intent.budget, EFFORT_BUDGET["minimal"])
    if intent.effort is not None and intent.effort not in EFFORT_BUDGET:
        return EFFORT_BUDGET["high"]
    return None
