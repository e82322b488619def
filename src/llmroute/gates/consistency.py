"""The self-consistency gate: ask the tier again and see whether it agrees with itself.

The tier's own answer is the first of `samples` answers; the other ``samples - 1`` come
from the same model at a temperature of at least `MIN_TEMPERATURE` — in one request
with ``n`` when its providers take it (OpenAI-compatible ones; missing choices are then
asked for one by one), else in parallel requests. Every answer is reduced with
`llmroute.telemetry.judge.final_answer`; the score is the share of the most common
final answer. The request escalates when that share is below `agreement`
(``agreement 0.33<0.60``), or when the tier's own answer is not the most common one
(``minority``). Samples that fail are left out; when none came back, the gate fails
(and the request escalates).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llmroute.errors import ProviderError
from llmroute.gates.base import GateVerdict, ModelCall, TierAnswer, completion_text, total_usage
from llmroute.telemetry.judge import final_answer

if TYPE_CHECKING:
    from llmroute.dispatch.usage import Usage

__all__ = ["MIN_TEMPERATURE", "SelfConsistencyGate", "sample_body"]

log = logging.getLogger("llmroute.gates")

MIN_TEMPERATURE = 0.7
_DROPPED = ("stream", "stream_options", "n", "logprobs", "top_logprobs")


def sample_body(request: Mapping[str, Any], n: int) -> dict[str, Any]:
    """`request` as a non-streaming body for `n` more samples at a sampling temperature."""
    body = {k: v for k, v in request.items() if k not in _DROPPED}
    temperature = request.get("temperature")
    if not isinstance(temperature, int | float) or temperature < MIN_TEMPERATURE:
        body["temperature"] = MIN_TEMPERATURE
    if n > 1:
        body["n"] = n
    return body


class SelfConsistencyGate:
    name = "self_consistency"

    def __init__(self, call: ModelCall, *, samples: int, agreement: float, use_n: bool) -> None:
        self.call = call
        self.samples = samples
        self.agreement = agreement
        self.use_n = use_n

    async def check(self, request: Mapping[str, Any], answer: TierAnswer) -> GateVerdict:
        texts, usage = await self._sample(request, answer.model, self.samples - 1)
        if not texts:
            raise RuntimeError("no sample came back")
        own = final_answer(answer.text)
        finals = [own, *(final_answer(t) for t in texts)]
        count = Counter(finals).most_common(1)[0][1]
        share = count / len(finals)
        if share < self.agreement:
            reason = f"agreement {share:.2f}<{self.agreement:.2f}"
            return GateVerdict(False, share, reason, self.name, usage)
        if finals.count(own) < count:
            return GateVerdict(False, share, "minority", self.name, usage)
        return GateVerdict(True, share, f"agreement {share:.2f}", self.name, usage)

    async def _sample(
        self, request: Mapping[str, Any], model: str, wanted: int
    ) -> tuple[list[str], Usage | None]:
        texts: list[str] = []
        usages: list[Usage] = []
        if self.use_n and wanted > 1:
            try:
                called = await self.call(model, sample_body(request, wanted))
            except ProviderError as exc:  # ``n`` refused, say: ask one by one
                log.info("self-consistency: %d samples in one request failed: %s", wanted, exc)
            else:
                usages.append(called.usage)
                choices = called.data.get("choices") or []
                for choice in choices[:wanted]:
                    texts.append(completion_text({"choices": [choice]}))
        missing = wanted - len(texts)
        if missing > 0:
            body = sample_body(request, 1)
            results = await asyncio.gather(
                *(self.call(model, dict(body)) for _ in range(missing)), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result
                    continue
                usages.append(result.usage)
                texts.append(completion_text(result.data))
        return texts, total_usage(usages)
