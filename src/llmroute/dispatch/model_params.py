"""The body one pool model is sent, as its registry entry shapes it: `params` (the
route's, then the model's) fill what the request leaves unset; `rename_params` gives
parameters the names the model's API takes (OpenAI's reasoning models take
``max_completion_tokens``, not ``max_tokens``); `drop_params` removes what it refuses
(their ``temperature``). The router picks the model, so the client cannot fit the body
to it: a parameter one model of the pool refuses would otherwise be a 400 for requests
that happen to be routed there.

Pure functions; a body is never mutated (a changed one is a shallow copy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmroute.registry.schema import Model

__all__ = ["for_model", "param_as_asked", "renamed", "with_defaults", "within_output"]


def for_model(
    body: dict[str, Any],
    model: Model,
    route_params: Mapping[str, Any] | None = None,
    *,
    not_renamed_to: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """`body` as `model` gets it. Renaming comes first, for the request and for each set
    of defaults alike, so that a request's ``max_tokens`` still wins over a model's
    ``params: {max_completion_tokens: ..}`` and the other way round. Renames into
    `not_renamed_to` are left out (a raw completion keeps its ``max_tokens``, though
    the model's chat API wants ``max_completion_tokens``)."""
    renames = model.rename_params
    if not_renamed_to and any(new in not_renamed_to for new in renames.values()):
        renames = {old: new for old, new in renames.items() if new not in not_renamed_to}
    sent = renamed(body, renames) if renames else body
    for params in (route_params, model.params):
        if params:
            sent = with_defaults(sent, renamed(params, renames) if renames else params)
    drops = model.drop_params
    if drops and any(key in sent for key in drops):
        sent = {key: value for key, value in sent.items() if key not in drops}
    return sent


def within_output(body: dict[str, Any], model: Model) -> dict[str, Any]:
    """`body` with an answer limit above the model's ``max_output_tokens`` lowered to it:
    the router may pick a model whose cap the client did not know, and its API would
    refuse the request. Returns `body` itself when nothing changes."""
    cap = model.max_output_tokens
    if cap is None:
        return body
    lowered = {
        key: cap
        for key in ("max_tokens", "max_completion_tokens")
        if isinstance(value := body.get(key), int) and not isinstance(value, bool) and value > cap
    }
    return {**body, **lowered} if lowered else body


def renamed(mapping: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """`mapping` with each key of `renames` it holds under its new name; where both
    names are set the new one's value is kept (the client already spoke the model's
    dialect)."""
    out = dict(mapping)
    for old, new in renames.items():
        if old in out:
            value = out.pop(old)
            if out.get(new) is None:
                out[new] = value
    return out


def with_defaults(body: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """`body` with each of `params` it does not set (a shallow copy; never mutated). An
    object the body does set gets the keys it lacks (``chat_template_kwargs``,
    ``extra_body``): what the request says always wins."""
    out = dict(body)
    for key, value in params.items():
        given = out.get(key)
        if given is None:
            out[key] = value
        elif isinstance(given, Mapping) and isinstance(value, Mapping):
            out[key] = {**value, **given}
    return out


def param_as_asked(param: str, asked: Mapping[str, Any], model: Model) -> str:
    """An upstream error's `param` (a field of the body `model` was sent) as the
    request `asked` named it: a field ``rename_params`` renamed is named as the client
    sent it (``max_completion_tokens[...]`` back to ``max_tokens``), unless the client
    sent the new name itself; any other is the same field in both."""
    cut = min((i for i in (param.find("."), param.find("[")) if i >= 0), default=len(param))
    field, rest = param[:cut], param[cut:]
    for old, new in model.rename_params.items():
        if new == field and old in asked and new not in asked:
            return old + rest
    return param
