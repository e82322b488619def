"""What every quality gate shares: the answer it checks (`TierAnswer`), its verdict
(`GateVerdict`), the `QualityGate` protocol, and the `ModelCall` seam through which a
gate asks a model something (self-consistency samples, a verifier's question).

A gate's `reason` is a short code (``refusal``, ``truncated``, ``agreement 0.33<0.60``)
that goes to logs, the attempt list and the ``x-llmroute-cascade`` header: it never
quotes the answer or the request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # at run time only inside `total_usage`: dispatch imports the gates
    from llmroute.dispatch.usage import Usage

__all__ = [
    "Called",
    "GateVerdict",
    "ModelCall",
    "QualityGate",
    "TierAnswer",
    "completion_text",
    "total_usage",
]


@dataclass(frozen=True, slots=True)
class TierAnswer:
    """A cascade tier's answer: the ``chat.completion`` (for a buffered stream, one
    assembled from its chunks), its text, its first choice's finish reason and the pool
    model that produced it."""

    data: Mapping[str, Any]
    text: str
    finish_reason: str | None
    model: str

    @property
    def has_tool_calls(self) -> bool:
        message = _first_message(self.data)
        return bool(message is not None and message.get("tool_calls"))

    @classmethod
    def of(cls, data: Mapping[str, Any], model: str) -> TierAnswer:
        choices = data.get("choices")
        finish = None
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            reason = choices[0].get("finish_reason")
            finish = reason if isinstance(reason, str) else None
        return cls(data, completion_text(data), finish, model)


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """Whether `gate` lets the answer through. `score` is the gate's number when it has
    one (majority share, P(yes), the learned score); `reason` a short code, never
    content. `usage` is what the gate itself spent on model calls, when it made any."""

    accept: bool
    score: float | None
    reason: str
    gate: str
    usage: Usage | None = None


class QualityGate(Protocol):
    """Checks a tier's answer to `request` (the chat body sent upstream)."""

    @property
    def name(self) -> str:
        """``heuristic``, ``self_consistency``, ``verifier`` or ``learned``."""
        ...

    async def check(self, request: Mapping[str, Any], answer: TierAnswer) -> GateVerdict: ...


@dataclass(frozen=True, slots=True)
class Called:
    """What a `ModelCall` returns: the completion and its priced usage."""

    data: dict[str, Any]
    usage: Usage


class ModelCall(Protocol):
    """Sends a chat body (never a stream) to one pool model through dispatch's retries
    and breakers, without fallbacks; raises `ProviderError` when it fails."""

    async def __call__(self, model: str, body: dict[str, Any]) -> Called: ...


def _first_message(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    message = choices[0].get("message")
    return message if isinstance(message, Mapping) else None


def completion_text(data: Mapping[str, Any]) -> str:
    """The first choice's content (text parts joined), else its tool calls as JSON; ""
    when it has neither."""
    message = _first_message(data)
    if message is None:
        return ""
    content = message.get("content")
    if isinstance(content, str) and content:
        return content
    if isinstance(content, list):
        text = "".join(
            str(p.get("text", "")) for p in content if isinstance(p, Mapping) and "text" in p
        )
        if text:
            return text
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        return json.dumps([c.get("function", {}) for c in calls if isinstance(c, Mapping)])
    return ""


def total_usage(usages: Iterable[Usage | None]) -> Usage | None:
    """The sum of the usages given (None ones left out); None when there are none."""
    present = [u for u in usages if u is not None]
    if not present:
        return None
    from llmroute.dispatch.usage import Usage

    return Usage(
        sum(u.prompt_tokens for u in present),
        sum(u.completion_tokens for u in present),
        round(sum(u.cost_usd for u in present), 10),
        any(u.estimated for u in present),
    )
