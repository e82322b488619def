"""The verifier gate: ask another model (`Gate.model`) whether the answer is right.

The verifier gets `VERIFIER_PROMPT` (the conversation's last `MAX_CHARS` characters and
the answer's first `MAX_CHARS`) at temperature 0 and replies ``yes`` or ``no``. When its
providers are OpenAI-compatible the request asks for ``logprobs`` (``top_logprobs: 5``),
and P(yes) is the probability of "yes" over "yes" and "no" among the first token's
alternatives; a provider that refuses logprobs is asked again without them. Otherwise,
or when neither word is among the alternatives, the reply is read: "yes" is 1.0, "no"
0.0, anything else escalates (``unparseable``). Logprobs no provider sends (a logprob
above 0, NaN or not a number, ``top_logprobs`` not a list) are a malformed answer:
it escalates too (``malformed (<what>)``), logged by what was wrong, never its text.
The request escalates when P(yes) is below the gate's `threshold` (default 0.5).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from llmroute.errors import UpstreamRejected
from llmroute.gates.base import Called, GateVerdict, ModelCall, TierAnswer, completion_text
from llmroute.telemetry.judge import request_text

__all__ = [
    "DEFAULT_THRESHOLD",
    "MAX_CHARS",
    "VERIFIER_PROMPT",
    "MalformedVerdict",
    "VerifierGate",
    "p_yes",
]

log = logging.getLogger("llmroute.gates")

DEFAULT_THRESHOLD = 0.5
MAX_CHARS = 4000
VERIFIER_PROMPT = """\
You are a careful reviewer. Read the conversation and the assistant's answer to its \
last message, then decide whether the answer is correct and actually does what was asked.

[Conversation]
{request}

[Assistant answer]
{answer}

Is the answer correct and complete? Reply with one word: yes or no."""


# a log-probability a rounding error above 0 is 0 (certain); past this it is no
# log-probability
_ROUNDING = 1e-6


class MalformedVerdict(ValueError):
    """The verifier's answer holds logprobs no provider sends: an unusable verdict.
    `kind` says what was wrong (never the answer's text)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _word(token: Any) -> str:
    return str(token).strip().strip(".!\"'").lower()


def _logprob(alt: Mapping[str, Any]) -> float | None:
    """An alternative's log-probability, None when it has none; `MalformedVerdict` when
    it is not one (not a number, NaN, above 0: +inf too). -inf is a probability of 0."""
    value = alt.get("logprob")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedVerdict("logprob not a number")
    if isinstance(value, float) and math.isnan(value):
        raise MalformedVerdict("logprob NaN")
    if value > _ROUNDING:
        raise MalformedVerdict("logprob above 0")
    # an integer of 400 digits has no float: far below any real one, a probability of 0
    return min(float(max(value, -1e308)), 0.0)


def p_yes(data: Mapping[str, Any]) -> float | None:
    """P(yes) from the verifier's reply: from the first token's logprobs when they name
    "yes" or "no", else from its text; None when the reply says neither.
    `MalformedVerdict` when its logprobs are not logprobs (`_logprob`; ``top_logprobs``
    not a list)."""
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    logprobs = choice.get("logprobs") if isinstance(choice, Mapping) else None
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        first = content[0]
        alternatives = first.get("top_logprobs") or [first]
        if not isinstance(alternatives, list):
            raise MalformedVerdict("top_logprobs not a list")
        mass = {"yes": 0.0, "no": 0.0}
        for alt in alternatives:
            if not isinstance(alt, Mapping) or (logprob := _logprob(alt)) is None:
                continue
            word = _word(alt.get("token", ""))
            if word in mass:
                mass[word] += math.exp(logprob)
        if mass["yes"] + mass["no"] > 0:
            return mass["yes"] / (mass["yes"] + mass["no"])
    reply = _word(completion_text(data))
    if reply.startswith("yes"):
        return 1.0
    if reply.startswith("no"):
        return 0.0
    return None


class VerifierGate:
    name = "verifier"

    def __init__(
        self, call: ModelCall, *, model: str, threshold: float | None, logprobs: bool
    ) -> None:
        self.call = call
        self.model = model
        self.threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        self.logprobs = logprobs

    def body(self, request: Mapping[str, Any], answer: TierAnswer) -> dict[str, Any]:
        prompt = VERIFIER_PROMPT.format(
            request=request_text(request, MAX_CHARS), answer=answer.text[:MAX_CHARS]
        )
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": 5,
        }
        if self.logprobs:
            body |= {"logprobs": True, "top_logprobs": 5}
        return body

    async def check(self, request: Mapping[str, Any], answer: TierAnswer) -> GateVerdict:
        body = self.body(request, answer)
        called = await self._ask(body)
        try:
            score = p_yes(called.data)
        except MalformedVerdict as exc:
            # an unusable verdict, as an unparseable reply is: escalate; its kind, never
            # the answer, in the log and the reason
            log.warning(
                "verifier %s sent a malformed answer (%s); escalating", self.model, exc.kind
            )
            return GateVerdict(False, None, f"malformed ({exc.kind})", self.name, called.usage)
        if score is None:
            return GateVerdict(False, None, "unparseable", self.name, called.usage)
        accept = score >= self.threshold
        relation = ">=" if accept else "<"
        reason = f"p_yes {score:.2f}{relation}{self.threshold:.2f}"
        return GateVerdict(accept, score, reason, self.name, called.usage)

    async def _ask(self, body: dict[str, Any]) -> Called:
        try:
            return await self.call(self.model, body)
        except UpstreamRejected as exc:
            if "logprobs" not in body:
                raise
            log.info("verifier %s refused logprobs (%s); asking without", self.model, exc)
            plain = {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}
            return await self.call(self.model, plain)
