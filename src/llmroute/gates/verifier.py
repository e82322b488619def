"""The verifier gate: ask another model (`Gate.model`) whether the answer is right.

The verifier gets `VERIFIER_PROMPT` (the conversation's last `MAX_CHARS` characters and
the answer's first `MAX_CHARS`) at temperature 0 and replies ``yes`` or ``no``. When its
providers are OpenAI-compatible the request asks for ``logprobs`` (``top_logprobs: 5``),
and P(yes) is the probability of "yes" over "yes" and "no" among the first token's
alternatives; a provider that refuses logprobs is asked again without them. Otherwise,
or when neither word is among the alternatives, the reply is read: "yes" is 1.0, "no"
0.0, anything else escalates (``unparseable``). The request escalates when P(yes) is
below the gate's `threshold` (default 0.5).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from llmroute.errors import UpstreamRejected
from llmroute.gates.base import Called, GateVerdict, ModelCall, TierAnswer, completion_text
from llmroute.telemetry.judge import request_text

__all__ = ["DEFAULT_THRESHOLD", "MAX_CHARS", "VERIFIER_PROMPT", "VerifierGate", "p_yes"]

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


def _word(token: Any) -> str:
    return str(token).strip().strip(".!\"'").lower()


def p_yes(data: Mapping[str, Any]) -> float | None:
    """P(yes) from the verifier's reply: from the first token's logprobs when they name
    "yes" or "no", else from its text; None when the reply says neither."""
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    logprobs = choice.get("logprobs") if isinstance(choice, Mapping) else None
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        first = content[0]
        alternatives = first.get("top_logprobs") or [first]
        mass = {"yes": 0.0, "no": 0.0}
        for alt in alternatives:
            if not isinstance(alt, Mapping) or not isinstance(alt.get("logprob"), int | float):
                continue
            word = _word(alt.get("token", ""))
            if word in mass:
                mass[word] += math.exp(alt["logprob"])
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
        score = p_yes(called.data)
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
