"""The cascade at dispatch time: try a route's tiers in order, cheapest first, and
serve the first answer its quality gates accept (`llmroute.gates`).

Each tier is one model called through dispatch's retries, balancing and breakers
(`Dispatcher.complete_chain` on a one-model plan): no route fallbacks and no context
fallback inside a tier. A tier that fails (an error, a timeout, an open breaker, a
broken or over-long stream) escalates to the next; so does an answer one of its gates
rejects (gates run in order and stop at the first rejection; a gate that raises or
times out rejects, with the reason logged). The last tier's answer is served ungated.
When the last tier fails after an earlier one answered, the latest escalated answer is
served rather than an error. When no tier answered, the error is the one a failed
fallback chain gives (`AllFallbacksFailed`, 429/502/503/504), or, when every tier refused
the request itself (a 4xx such as a too-long context), the last refusal.

Every tier paid for counts: `Served.usage` (and ``usage`` in the response, or in the
stream's usage chunk) is the sum over the tiers, their gates' own model calls included;
each `TierStep` keeps its tier's share. `Served.cascade` / `Opened.cascade` list the
steps, `attempts` says in words why each tier before the served one was passed over
(``small escalated: heuristic (refusal)``), and `cascade_header` renders the steps for
the ``x-llmroute-cascade`` response header.

Streams: with ``stream: buffer`` each tier but the last is streamed into a buffer (at
most `MAX_BUFFER_BYTES`; past it the tier escalates), assembled into an answer and
gated; an accepted tier's events are then replayed to the client. The last tier is
streamed live. With ``stream: passthrough`` the first tier that opens streams live,
ungated. Buffering costs the client its time to first byte: it waits for the whole
accepted answer (benchmarks/bench_cascade_stream.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmroute.dispatch.dispatcher import Dispatcher, Opened, Served
from llmroute.dispatch.exhaustion import flattened, status_of
from llmroute.dispatch.plan import Plan
from llmroute.dispatch.spend import cancelled_on, cut_after, ending_of, noted_cut
from llmroute.dispatch.usage import Usage
from llmroute.errors import AllFallbacksFailed, AttemptText, ProviderError, outline_of
from llmroute.gates.base import Called, GateVerdict, ModelCall, QualityGate, TierAnswer, total_usage
from llmroute.registry.schema import Cascade, CascadeTier, RoutePolicy
from llmroute.sse import CallNumbers, choice_zero, chunk_of, event_of
from llmroute.untrusted_json import loads

__all__ = [
    "GATE_TIMEOUT_S",
    "MAX_BUFFER_BYTES",
    "TierStep",
    "assemble_stream",
    "cascade_header",
    "complete_cascade",
    "open_cascade",
    "run_gates",
]

log = logging.getLogger("llmroute.dispatch")

MAX_BUFFER_BYTES = 4 * 1024 * 1024  # a buffered tier's stream, before it escalates
GATE_TIMEOUT_S = 60.0  # one gate's check, its model calls included


@dataclass(frozen=True, slots=True)
class TierStep:
    """What one tier did: the `verdicts` of the gates that ran (in order, up to the
    first rejection), whether its answer was `accepted`, how long it took (the call and
    its gates; for a live stream, until its first event), the `error` that made it
    escalate, and the `usage` it cost (its gates' calls included; None while a live
    stream runs, or when a failed call's cost is unknown). `gated` is False for a tier
    served without gates (the last one, or ``passthrough``)."""

    model: str
    verdicts: tuple[GateVerdict, ...] = ()
    accepted: bool = False
    elapsed_ms: float = 0.0
    error: str | None = None
    usage: Usage | None = None
    gated: bool = True

    @property
    def outcome(self) -> str:
        """``accept``, ``escalate`` or ``error``."""
        if self.error is not None:
            return "error"
        return "accept" if self.accepted else "escalate"

    @property
    def rejected_by(self) -> GateVerdict | None:
        return next((v for v in self.verdicts if not v.accept), None)

    def describe(self) -> str | None:
        """The step for `Served.attempts`; None for a tier that was accepted."""
        if self.error is not None:
            said = f"{self.model} failed: "
            return AttemptText(said + self.error, said + outline_of(self.error))
        verdict = self.rejected_by
        if verdict is None:
            return None
        return f"{self.model} escalated: {verdict.gate} ({verdict.reason})"


_CODE_RE = re.compile(r"[A-Za-z_]+")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.:/@+-]")


def cascade_header(steps: Sequence[TierStep]) -> str:
    """The steps as one header value, e.g.
    ``small:escalate(heuristic:refusal),mid:error,large:accept``; a score-based gate
    shows its score (``verifier:p_yes=0.20``). Content never appears in it."""
    return ",".join(_header_part(step) for step in steps)


def _header_part(step: TierStep) -> str:
    model = _UNSAFE_RE.sub("_", step.model)
    verdict = step.rejected_by
    if step.outcome != "escalate" or verdict is None:
        return f"{model}:{step.outcome}"
    found = _CODE_RE.match(verdict.reason)
    code = found.group(0) if found else "rejected"
    if verdict.score is not None:
        code += f"={verdict.score:.2f}"
    return f"{model}:escalate({_UNSAFE_RE.sub('_', verdict.gate)}:{code})"


# -- gates ----------------------------------------------------------------------------------


async def run_gates(
    gates: Iterable[QualityGate],
    request: Mapping[str, Any],
    answer: TierAnswer,
    dispatcher: Dispatcher | None = None,
) -> tuple[GateVerdict, ...]:
    """The verdicts of `gates` on `answer`, in order, stopping at the first rejection.
    With the `dispatcher` the gates call models through, a gate's model call cut by
    `GATE_TIMEOUT_S` is charged its prompt then (`Dispatcher.within`)."""
    verdicts: list[GateVerdict] = []
    for gate in gates:
        verdict = await _checked(gate, request, answer, dispatcher)
        verdicts.append(verdict)
        if not verdict.accept:
            break
    return tuple(verdicts)


async def _checked(
    gate: QualityGate,
    request: Mapping[str, Any],
    answer: TierAnswer,
    dispatcher: Dispatcher | None = None,
) -> GateVerdict:
    """The gate's verdict; a rejection when it raises or takes over `GATE_TIMEOUT_S`. The
    log names the error's type only (an exception's message may quote the answer). A
    timed-out gate's verdict holds what its model calls cost by then, the prompt of the
    one it cut included: charged as it gave up (`Dispatcher.within`); a gate that raised,
    what its calls answered by then cost (charged as they answered)."""
    name = getattr(gate, "name", type(gate).__name__)
    spent: list[Usage] = []
    try:
        if dispatcher is None:
            async with asyncio.timeout(GATE_TIMEOUT_S):
                return await gate.check(request, answer)
        async with dispatcher.within(GATE_TIMEOUT_S, spent):
            return await gate.check(request, answer)
    except TimeoutError:
        log.warning("gate %s on %s timed out after %gs", name, answer.model, GATE_TIMEOUT_S)
        return GateVerdict(False, None, "timeout", name, total_usage(spent))
    except Exception as exc:
        log.warning("gate %s on %s failed: %s", name, answer.model, type(exc).__name__)
        log.debug("gate %s failed", name, exc_info=True)
        return GateVerdict(False, None, f"error ({type(exc).__name__})", name, total_usage(spent))


# -- the run ----------------------------------------------------------------------------


def _tier_policy(policy: RoutePolicy | None) -> RoutePolicy | None:
    if policy is None or (
        not policy.fallback and policy.context_fallback is None and policy.content_fallback is None
    ):
        return policy
    return policy.model_copy(
        update={"fallback": (), "context_fallback": None, "content_fallback": None}
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _error_text(model: str, exc: ProviderError) -> AttemptText:
    if isinstance(exc, AllFallbacksFailed):
        said = exc.attempts
        return AttemptText("; ".join(said), "; ".join(outline_of(a) for a in said))
    return exc.attempt(model)


@dataclass(frozen=True, slots=True)
class _Buffered:
    """A buffered tier's stream."""

    model: str
    deployment: str
    events: list[bytes]


class _Overflow(Exception):
    pass


class _Run:
    """One request's way down the cascade: its steps so far."""

    def __init__(self, dispatcher: Dispatcher, plan: Plan, body: dict[str, Any]) -> None:
        assert plan.cascade is not None
        self.dispatcher = dispatcher
        self.plan = plan
        self.body = body
        self.cascade: Cascade = plan.cascade
        self.policy = _tier_policy(plan.policy)
        self.steps: list[TierStep] = []
        self.failures: list[ProviderError] = []

    def tier_plan(self, model: str, *, reasoning: bool = True) -> Plan:
        decision = self.plan.decision
        if not reasoning and decision.reasoning is not None:
            decision = dataclasses.replace(decision, reasoning=None)
        return Plan(decision, (model,), self.policy)

    def caller(self, tier_model: str) -> ModelCall:
        """How the tier's gates call models: the tier's own model as the tier was called
        (reasoning parameters included), any other without the reasoning gate's."""

        async def call(model: str, body: dict[str, Any]) -> Called:
            plan = self.tier_plan(model, reasoning=model == tier_model)
            served = await self.dispatcher.complete_chain(plan, body)
            return Called(served.data, served.usage)

        return call

    def total(self) -> Usage | None:
        return total_usage(step.usage for step in self.steps)

    def attempts(self) -> tuple[str, ...]:
        return tuple(d for step in self.steps if (d := step.describe()) is not None)

    async def gate(
        self, tier: CascadeTier, answer: TierAnswer, started: float, usage: Usage | None
    ) -> TierStep:
        specs = self.cascade.gates_of(tier)
        try:
            gates = self.dispatcher.gates.gates(specs, self.caller(tier.model))
        except Exception as exc:  # pragma: no cover - the registry validated the specs
            log.warning("gates of %s could not be built: %s", tier.model, exc)
            verdicts: tuple[GateVerdict, ...] = (GateVerdict(False, None, "error", "build"),)
        else:
            verdicts = await run_gates(gates, self.body, answer, self.dispatcher)
        accepted = all(v.accept for v in verdicts)
        paid = total_usage([usage, *(v.usage for v in verdicts)])
        step = TierStep(tier.model, verdicts, accepted, _ms(started), None, paid)
        self.steps.append(step)
        if not accepted:
            log.info("cascade %s: %s", self.plan.decision.id, step.describe())
        return step

    def ungated(self, model: str, started: float, usage: Usage | None) -> None:
        self.steps.append(TierStep(model, (), True, _ms(started), None, usage, gated=False))

    def failed(
        self, model: str, exc: ProviderError, started: float, usage: Usage | None = None
    ) -> None:
        self.failures.append(exc)
        step = TierStep(model, (), False, _ms(started), _error_text(model, exc), usage)
        self.steps.append(step)
        log.info("cascade %s: %s", self.plan.decision.id, step.describe())

    def cut(self, model: str, exc: BaseException) -> None:
        """The request was cancelled on the tier `model`, or a bug ended it there (`exc`,
        `ending_of`): its attempt path, the tiers passed over and then this one
        (`cut_after`; its chain's entry, naming the provider it called)."""
        how = ending_of(exc)
        if how is not None:
            cut_after(self.attempts(), noted_cut(model, how) or cancelled_on(model, None, how))

    def exhausted(self) -> ProviderError:
        """No tier answered: the last refusal when every tier refused the request itself,
        else `AllFallbacksFailed` with 504 (all timed out), 429 (all rate limited
        upstream), 503 (all unavailable, rate limited among them) or 502; with 429 and
        503, the soonest `retry_after_s` when each tier said one, as a chain's."""
        errors = self.failures
        if errors and not any(e.retryable for e in errors):
            last = errors[-1]
            last.model = self.steps[-1].model
            return last
        decided = flattened(errors)  # each tier's models' failures, by a chain's rule
        status, wait = status_of(decided)
        exhausted = AllFallbacksFailed(list(self.attempts()), status=status, errors=decided)
        exhausted.retry_after_s = wait
        return exhausted

    def served(self, served: Served) -> Served:
        total = self.total() or served.usage
        data = served.data
        reported = data.get("usage")
        data["usage"] = {**(reported if isinstance(reported, dict) else {}), **total.to_dict()}
        return Served(
            served.model, served.deployment, data, total, self.attempts(), tuple(self.steps)
        )

    # -- streams ------------------------------------------------------------------------

    async def buffer(self, tier: CascadeTier) -> _Buffered | None:
        """The tier's stream, buffered and gated (its step appended); None when it
        failed."""
        started = time.perf_counter()
        try:
            plan = self.tier_plan(tier.model)
            inner = await self.dispatcher.open_chain(plan, self.body, silent_hand_over=False)
            events = await _collect(inner.events, MAX_BUFFER_BYTES)
        except ProviderError as exc:
            self.failed(tier.model, exc, started)
            return None
        except _Overflow:
            verdict = GateVerdict(False, None, "buffer_limit", "buffer")
            self.steps.append(TierStep(tier.model, (verdict,), False, _ms(started)))
            log.info("cascade %s: %s", self.plan.decision.id, self.steps[-1].describe())
            return None
        except BaseException as exc:  # cut, or a bug: the way it went, for its log
            self.cut(tier.model, exc)
            raise
        try:
            await self.gate(tier, assemble_stream(events, tier.model), started, inner.usage)
        except BaseException as exc:  # cut, or a bug: the way it went, for its log
            self.cut(tier.model, exc)
            raise
        return _Buffered(inner.model, inner.deployment, events)

    def replay(self, buffered: _Buffered) -> Opened:
        total = self.total()
        opened = Opened(
            buffered.model,
            buffered.deployment,
            _empty(),
            self.attempts(),
            cascade=tuple(self.steps),
        )
        opened.events = _replayed(buffered.events, total, opened)
        opened.unread_end = functools.partial(_counted, opened, total)
        return opened

    async def live(self, tiers: Sequence[CascadeTier], *, then: bool = False) -> Opened:
        """The first of `tiers` whose stream opens, streamed live and ungated. Only the
        last, when nothing comes `then` (a buffered answer), may be handed over silent,
        before its first event (`stream_hold_s`): a failure after that would end the
        stream rather than go on to what follows."""
        for position, tier in enumerate(tiers, 1):
            started = time.perf_counter()
            silent = position == len(tiers) and not then
            try:
                plan = self.tier_plan(tier.model)
                inner = await self.dispatcher.open_chain(plan, self.body, silent_hand_over=silent)
            except ProviderError as exc:
                self.failed(tier.model, exc, started)
                continue
            except BaseException as exc:  # cut, or a bug: the way it went, for its log
                self.cut(tier.model, exc)
                raise
            prior = self.total()
            self.ungated(tier.model, started, None)
            opened = Opened(
                inner.model, inner.deployment, _empty(), self.attempts(), cascade=tuple(self.steps)
            )
            opened.events = _live(inner, prior, opened)
            opened.unread_end = functools.partial(_ended, inner, prior, opened)
            return opened
        raise self.exhausted()


async def complete_cascade(dispatcher: Dispatcher, plan: Plan, body: dict[str, Any]) -> Served:
    """`Dispatcher.complete` for a plan with a cascade (`body` already outgoing)."""
    run = _Run(dispatcher, plan, body)
    tiers = run.cascade.tiers
    best: Served | None = None
    for i, tier in enumerate(tiers):
        started = time.perf_counter()
        try:
            served = await dispatcher.complete_chain(run.tier_plan(tier.model), body)
        except ProviderError as exc:
            run.failed(tier.model, exc, started)
            continue
        except BaseException as exc:  # cut, or a bug: the way it went, for its log
            run.cut(tier.model, exc)
            raise
        if i == len(tiers) - 1:
            run.ungated(tier.model, started, served.usage)
            return run.served(served)
        answer = TierAnswer.of(served.data, tier.model)
        try:
            step = await run.gate(tier, answer, started, served.usage)
        except BaseException as exc:  # cut, or a bug: the way it went, for its log
            run.cut(tier.model, exc)
            raise
        if step.accepted:
            return run.served(served)
        best = served
    if best is not None:
        return run.served(best)  # the last tier failed: the latest answer beats an error
    raise run.exhausted()


async def open_cascade(dispatcher: Dispatcher, plan: Plan, body: dict[str, Any]) -> Opened:
    """`Dispatcher.open_stream` for a plan with a cascade (`body` already outgoing)."""
    run = _Run(dispatcher, plan, body)
    tiers = run.cascade.tiers
    if run.cascade.stream == "passthrough":
        return await run.live(tiers)
    best: _Buffered | None = None
    for tier in tiers[:-1]:
        buffered = await run.buffer(tier)
        if buffered is None:
            continue
        if run.steps[-1].accepted:
            return run.replay(buffered)
        best = buffered
    try:
        return await run.live(tiers[-1:], then=best is not None)
    except ProviderError:
        if best is None:
            raise
        return run.replay(best)


# -- stream helpers -------------------------------------------------------------------------


async def _collect(events: AsyncIterator[bytes], limit: int) -> list[bytes]:
    """Every event of a stream, or `_Overflow` past `limit` bytes; the stream is closed
    either way. An upstream that breaks once its ``[DONE]`` was read sent its whole
    answer (a success for its breaker, a whole stream at the gateway's `relay`): its
    events, the break a warning, not a failed tier."""
    collected: list[bytes] = []
    size = 0
    ended = False  # its ``[DONE]`` was read
    try:
        async for event in events:
            size += len(event)
            if size > limit:
                raise _Overflow
            collected.append(event)
            ended = ended or event.startswith(b"data: [DONE]")
    except ProviderError as exc:
        if not ended:
            raise
        log.warning("buffered stream broke off after its end: %s", exc)
    finally:
        await _aclose(events)
    return collected


async def _aclose(events: AsyncIterator[bytes]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover


async def _replayed(
    events: list[bytes], total: Usage | None, opened: Opened
) -> AsyncIterator[bytes]:
    """The accepted tier's buffered events; the stream's usage is every tier's, paid
    already, however far its reader reads."""
    try:
        for event in events:
            yield event if total is None else _rewrite_usage(event, lambda _: total)
    finally:
        opened.usage = total


async def _counted(opened: Opened, total: Usage | None) -> None:
    """The end of a replay never read: the tiers it paid for are its usage all the same."""
    opened.usage = total


async def _live(inner: Opened, prior: Usage | None, opened: Opened) -> AsyncIterator[bytes]:
    """The last tier's stream; a usage chunk in it counts the earlier tiers too."""

    def plus(tier: Usage | None) -> Usage | None:
        return total_usage([prior, tier])

    opened.unread_end = None  # read now: `inner` is closed below, however this ends
    try:
        async for event in inner.events:
            yield event if prior is None else _rewrite_usage(event, plus)
    finally:
        await _ended(inner, prior, opened)


async def _ended(inner: Opened, prior: Usage | None, opened: Opened) -> None:
    """The last tier closed, read or not, and the stream's usage its and the earlier
    tiers': a reader that left (its client gone) still had them all paid for."""
    try:
        await inner.aclose()
    finally:
        opened.usage = total_usage([prior, inner.usage])


def _rewrite_usage(event: bytes, total: Callable[[Usage | None], Usage | None]) -> bytes:
    """`event` with its usage chunk's usage replaced by `total(its usage)`."""
    chunk = chunk_of(event) if b'"usage"' in event else None
    usage = chunk.get("usage") if chunk is not None else None
    if chunk is None or not isinstance(usage, dict):
        return event
    summed = total(_usage_of(usage))
    if summed is None:
        return event
    chunk["usage"] = {**usage, **summed.to_dict()}
    return event_of(chunk)


def _usage_of(usage: Mapping[str, Any]) -> Usage | None:
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    cost = usage.get("cost_usd")
    return Usage(
        prompt,
        completion,
        float(cost) if isinstance(cost, int | float) else 0.0,
        bool(usage.get("estimated", False)),
    )


class _Assembler:
    """A ``chat.completion`` put together from a stream's chunks: choice 0's, by its
    index (`choice_zero`), as a whole answer's first choice is gated."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.finish: str | None = None
        self.calls: dict[int, dict[str, Any]] = {}
        self.last: dict[str, Any] = {}
        self._numbers = CallNumbers()  # the calls numbered as the fronts number them

    def add(self, chunk: dict[str, Any]) -> None:
        self.last = chunk
        choice = choice_zero(chunk)
        if choice is None:
            return
        if isinstance(choice.get("finish_reason"), str):
            self.finish = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            return
        if isinstance(delta.get("content"), str):
            self.text.append(delta["content"])
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                self._add_call(call)

    def _add_call(self, call: dict[str, Any]) -> None:
        entry = self.calls.setdefault(
            self._numbers.number(call.get("index"), call.get("id")),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if isinstance(call.get("id"), str):
            entry["id"] = call["id"]
        function = call.get("function")
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                if isinstance(function.get(key), str):
                    entry["function"][key] += function[key]

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) or None}
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return {
            "id": self.last.get("id", "chatcmpl-llmroute"),
            "object": "chat.completion",
            "model": self.last.get("model", ""),
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish}],
        }


def assemble_stream(events: Iterable[bytes], model: str) -> TierAnswer:
    """A buffered stream's answer, for the gates."""
    assembler = _Assembler()
    for event in events:
        for line in event.splitlines():
            if not line.startswith(b"data:") or line.rstrip().endswith(b"[DONE]"):
                continue
            try:
                chunk = loads(line[5:])
            except ValueError:
                continue
            if isinstance(chunk, dict):
                assembler.add(chunk)
    return TierAnswer.of(assembler.completion(), model)
