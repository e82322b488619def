"""Which Claude models take adaptive thinking, for a model's ``reasoning.thinking:
auto`` (docs/reasoning.md, "Adaptive thinking").

Adaptive thinking (``thinking: {type: adaptive}`` with ``output_config.effort``) came
with Claude Opus 4.6 and Sonnet 4.6, where ``budget_tokens`` is deprecated; Opus 4.7
and later refuse ``{type: enabled, budget_tokens}`` with a 400, and earlier models
(Sonnet 4.5, Haiku 4.5, Opus 4.1 ...) refuse adaptive. So the version in the model id
decides: 4.6 and later (the Claude 5 family included) think adaptively, as does the
unversioned Mythos Preview; an id whose version cannot be read keeps the budget form,
which every earlier model takes. Provider prefixes and suffixes (Bedrock's
``anthropic.claude-opus-4-6-v1``, OpenRouter's ``anthropic/claude-opus-4.7``, a dated
``claude-sonnet-4-5-20250929``) are read through.
"""

from __future__ import annotations

import re

from llmroute.registry.schema import Model, Reasoning

__all__ = [
    "EFFORTS",
    "FIRST_ADAPTIVE",
    "FIRST_ADAPTIVE_ONLY",
    "adaptive_id",
    "claude_version",
    "effort_levels",
    "thinks_adaptively",
]

FIRST_ADAPTIVE = (4, 6)
"""The first Claude version that takes ``thinking: {type: adaptive}``."""
FIRST_ADAPTIVE_ONLY = (4, 7)
"""The first Claude version that refuses ``thinking: {type: enabled, budget_tokens}``."""

# claude-opus-4-7, claude-sonnet-4.6, claude-opus-4-20250514 (a date is no minor version)
_NAMED_FIRST = re.compile(r"claude-[a-z]+-(\d+)(?:[-.](\d{1,2}))?(?!\d)")
# the older order: claude-3-7-sonnet, claude-3-5-haiku-20241022
_VERSION_FIRST = re.compile(r"claude-(\d+)(?:[-.](\d{1,2}))?-[a-z]")
_ALWAYS_ADAPTIVE = ("claude-mythos",)  # its preview has no version in its id


def claude_version(model_id: str) -> tuple[int, int] | None:
    """The Claude version `model_id` names ((4, 7) for ``claude-opus-4-7``), None when it
    names none that can be read."""
    text = model_id.lower()
    found = _VERSION_FIRST.search(text) or _NAMED_FIRST.search(text)
    return None if found is None else (int(found.group(1)), int(found.group(2) or 0))


def adaptive_id(model_id: str) -> bool:
    """Whether the Claude model `model_id` names takes adaptive thinking."""
    if any(name in model_id.lower() for name in _ALWAYS_ADAPTIVE):
        return True
    version = claude_version(model_id)
    return version is not None and version >= FIRST_ADAPTIVE


def thinks_adaptively(model: Model, reasoning: Reasoning, served_id: str | None = None) -> bool:
    """Whether `model` is sent adaptive thinking: its `reasoning.thinking`, ``auto``
    reading the id it is served under (`served_id`: a deployment's own ``model``, which
    may name another Claude than the model's), else the model's id."""
    if reasoning.thinking != "auto":
        return reasoning.thinking == "adaptive"
    return adaptive_id(served_id or model.model)


EFFORTS = ("low", "medium", "high", "xhigh", "max")
"""Anthropic's ``output_config.effort`` values, lowest first (``high`` its default)."""


def effort_levels(model_id: str) -> tuple[str, ...] | None:
    """The ``output_config.effort`` levels the Claude model `model_id` names takes, in
    order; () for one that refuses the parameter; None when its version cannot be read
    (sent as asked). As Anthropic documents them: effort came with Opus 4.5 (low to
    high; Sonnet and Haiku 4.5 and earlier refuse it), ``max`` with the 4.6 models and
    Mythos Preview, ``xhigh`` with Opus 4.7 and the Claude 5 family."""
    text = model_id.lower()
    if "claude-mythos" in text and claude_version(text) is None:
        return ("low", "medium", "high", "max")  # Mythos Preview
    version = claude_version(text)
    if version is None:
        return None
    if version >= FIRST_ADAPTIVE_ONLY:
        return EFFORTS
    if version >= FIRST_ADAPTIVE:
        return ("low", "medium", "high", "max")
    if version == (4, 5) and "opus" in text:
        return ("low", "medium", "high")
    return ()
