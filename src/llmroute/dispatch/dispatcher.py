"""`Dispatcher`: a planned request → the first model of its chain that answers.

Dispatch is a stack of small stages, outermost first (STYLE.md, recommendation 4):

1. fallback (`_fall_back`): the route's chain, in order; a request longer than a
   model's context window skips to a larger-context model, one holding images or
   tools skips the models that declare ``vision: false`` or ``tools: false``, and one
   asking what a model's API cannot give (`BeyondModel`: Anthropic and ``n`` > 1) skips
   that model;
2. retry (`_retry`): the same model again after a jittered backoff, honouring
   ``Retry-After``, on retryable failures only (no response, 5xx, 408, 409, 429);
3. balance and breaker (`DeploymentPool.call`): a deployment of the model whose circuit
   breaker lets the call through;
4. transport (`_complete_on`, `_open_on`): the provider call under its time limit.

Non-streaming requests may fall back at any point; streams only before their first
event that says something (`stream_start`; after that the client has bytes). A failure
that is the request's own fault (another 4xx) raises `UpstreamRejected` at once, untried
elsewhere; one that is the deployment's setup (401/402/403/404: `ProviderMisconfigured`) goes
on to the next deployment or model.

A plan with a cascade (`Plan.cascade`) runs its tiers instead of the chain
(`llmroute.dispatch.cascade`), each tier through stages 2-4 for its one model.

An optional `DispatchObserver` (metrics, traces) is told of every upstream call
(`Attempt`), every retry and every fallback; without one, dispatch pays nothing for it.
Inside `llmroute.dispatch.spend.tracked`, every call also notes what it sent and what it
got, so that a request its caller abandons is charged what it had cost
(`Dispatcher.charge_abandoned`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from llmroute.deadline import NEVER, Deadline
from llmroute.dispatch.affinity import prefix_key
from llmroute.dispatch.anthropic_only import anthropic_only_where_taken
from llmroute.dispatch.budgets import Payer, WorstCase, model_account, payer, worst_case
from llmroute.dispatch.client_reasoning import (
    effort_where_taken,
    in_dialect,
    without_unsaid_reasoning,
)
from llmroute.dispatch.deployments import (
    SLOT_RENEW_S,
    Deployment,
    Deployments,
    Slot,
    TryFailed,
    give_back,
    leased,
    relayed,
    renew,
    settled,
    settling,
    slot_lease,
    stream_ended,
    try_failure,
    waited_out,
)
from llmroute.dispatch.exhaustion import counted, status_of
from llmroute.dispatch.model_params import for_model, within_output
from llmroute.dispatch.output_caps import refused_cap
from llmroute.dispatch.plan import Plan, may_answer_raw, without_cascade
from llmroute.dispatch.reasoning_params import client_chose, fit_thinking, with_reasoning
from llmroute.dispatch.rerank import priced_rerank
from llmroute.dispatch.retry import backoff_delay
from llmroute.dispatch.spend import (
    Spend,
    answered,
    cancelled_on,
    current,
    cut_after,
    ending_of,
    sending,
    tracked,
)
from llmroute.dispatch.stream_start import (
    failed_unopened,
    first_within,
    read_preamble,
    says_nothing,
    unopened,
)
from llmroute.dispatch.text_completions import CHAT_ONLY, chat_answer, chat_event, text_body
from llmroute.dispatch.usage import (
    StreamUsage,
    Usage,
    asking_usage,
    estimated_prompt_tokens,
    priced,
    priced_embedding,
)
from llmroute.errors import (
    GATEWAY,
    AllFallbacksFailed,
    AttemptText,
    BeyondModel,
    CircuitOpen,
    ContentRefused,
    ContextWindowExceeded,
    KeyBudgetReached,
    LimitReached,
    ProviderError,
    ProviderMisconfigured,
    ProviderTimeout,
    UnsupportedRequest,
    UpstreamRejected,
)
from llmroute.gates.base import total_usage
from llmroute.money import usd
from llmroute.providers.base import (
    ChatProvider,
    EmbeddingProvider,
    RerankProvider,
    TextProvider,
    Timeouts,
)
from llmroute.proxy_fields import without_proxy_fields
from llmroute.registry.schema import Model, Price, Registry, RoutePolicy
from llmroute.request import holds_images
from llmroute.sse import drain_after_end
from llmroute.state.breakers import open_breakers
from llmroute.state.limits import (
    CLOSE_S,
    HOLD_LEASE_S,
    RateLimits,
    RedisLimits,
    UsdHold,
    open_limits,
)
from llmroute.state.stores import has_limits

if TYPE_CHECKING:
    from llmroute.dispatch.cascade import TierStep
    from llmroute.gates.build import GateFactory

__all__ = [
    "Attempt",
    "DispatchObserver",
    "Dispatcher",
    "Observers",
    "Opened",
    "Served",
    "attempt_outcome",
]

log = logging.getLogger("llmroute.dispatch")

# the GenAI conventions' operation of a call sent raw to a model continuing text (its
# ``/completions``), as its request span names it
_TEXT = "text_completion"

T = TypeVar("T")
Answer = dict[str, Any]  # the JSON answer of an API passed through (embeddings, rerank)
Sleep = Callable[[float], Awaitable[None]]
_PER = {"hour": "hourly", "day": "daily", "month": "monthly"}
SETTLE_S = 5.0  # the longest a closing dispatcher waits for those and the slots given back


@dataclass(frozen=True, slots=True)
class Served:
    """A completed request: the pool model and deployment (provider) that answered, the
    ``chat.completion`` (its ``model`` the upstream name, its ``usage`` priced), and the
    failures before it. `usage` is what the request cost: the answer's, plus any answer
    an upstream's content filter withheld before it (paid for all the same)."""

    model: str
    deployment: str
    data: dict[str, Any]
    usage: Usage
    attempts: tuple[str, ...] = ()
    cascade: tuple[TierStep, ...] = ()  # the cascade's tiers, when the route has one


@dataclass(slots=True)
class Opened:
    """A stream that has produced its first event, or that has been silent past
    ``dispatch.stream_hold_s`` and is handed over waiting for it. `events` yields every
    event, the first included; a failure after that raises `ProviderError` from it.
    `usage` is set once the stream has ended.

    A reader that stops early (its client left) calls `aclose`: what the stream holds
    (the upstream connection, an in-flight slot, a budget hold) is given back and its
    usage charged then, not whenever the garbage collector finds the stream. One
    dropped unread and unclosed gives back, once collected, only what needs no await
    (its `least_in_flight` count, a half-open breaker's probe: `InFlight`)."""

    model: str
    deployment: str
    events: AsyncIterator[bytes]
    attempts: tuple[str, ...] = ()
    usage: Usage | None = field(default=None)
    cascade: tuple[TierStep, ...] = ()
    # ends the stream while `events` has not been read: closing a generator never
    # started runs none of its cleanup. The generator clears it as it starts.
    unread_end: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    async def aclose(self) -> None:
        """End the stream wherever its reader left it, read or not. Safe to repeat."""
        end, self.unread_end = self.unread_end, None
        try:
            await _close(self.events)
        finally:
            if end is not None:
                await end()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One upstream call, as told to a `DispatchObserver` once it has ended (and the
    deployment's breaker has counted it).

    `operation` is ``chat``, ``text_completion`` (a completion sent raw to a model
    continuing text), ``embeddings`` or ``rerank``; `model` the pool model; `retry` 0
    for the first try of the model, n for its nth retry; `outcome` one of ``ok``, ``error`` (a
    failure that may pass: no response, 5xx, 429), ``timeout``, ``rejected`` (the
    request's own fault) or ``cancelled`` (`attempt_outcome`); `error` the exception.
    `start_ns` is the wall clock (`time.time_ns`) when the call began and `elapsed_s` its
    length: until the answer, or for a stream until its first event; for a failed call,
    until its failure. A stream handed over silent (``dispatch.stream_hold_s``) is told
    when its first event comes, not at the hand-over: ``ok`` timed to that event, or,
    when its read fails first (its first-token limit, an error status after the hold),
    that failure timed to it, with no ``on_stream_end`` after (it never opened), as for
    a call failing within the hold.
    """

    operation: str
    model: str
    deployment: Deployment
    provider_kind: str  # the registry's provider kind: openai, anthropic, llamacpp
    base_url: str
    retry: int
    outcome: str
    error: BaseException | None
    start_ns: int
    elapsed_s: float
    stream: bool = False

    @property
    def provider(self) -> str:
        return self.deployment.provider_name

    @property
    def upstream(self) -> str:
        return self.deployment.upstream


def attempt_outcome(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, ProviderTimeout):
        return "timeout"
    if isinstance(error, ProviderError):
        return "error" if error.retryable else "rejected"
    if isinstance(error, Exception):
        return "error"
    return "cancelled"


class _Resume(NamedTuple):
    """Where a stream handed over silent failed before its first event, for its model to
    go on as it would have within the hold: the model, its try (`retry`), the
    deployments that failed so in that try (each skipped, as a try calls each once),
    and what the try raises if no other deployment answers (`try_failure`: the last
    failure, a 503, a 429, no response, unless a timeout waiting for the answer came
    before it: that timeout, so that a second ends the try). No deployments and no failure: a
    refusal the model is sent the request again after (`Dispatcher._resent`), on any
    of its deployments, the one that refused included.

    The deployments passed are those of the try that opened the stream that failed
    (`_Opening.passed`: passed over in it, or failing so within the hold), and its
    own: else a deployment failing within the hold would be called again after the
    hand-over, and two failing so in turn would be for ever, without a breaker."""

    model: str
    retry: int
    deployments: tuple[Deployment, ...]
    failure: ProviderError | None

    def passed(self, retry: int) -> tuple[tuple[Deployment, ...], ProviderError] | None:
        """The deployments the model's try `retry` passes over, and why: those that
        failed, on the try they failed in."""
        if retry != self.retry or not self.deployments or self.failure is None:
            return None
        return self.deployments, self.failure


@dataclass(slots=True)
class _Opening:
    """What the call that opens a stream leaves the stream, filled by `_fall_back` as it
    goes down the chain: the answering deployment's in-flight slot (held to the end,
    given back if none answers), that call as told to the observer, its holds in hard
    budgets (settled when the stream ends), which try of its model it was, the
    deployments that try passed over, having failed in it, and what it raises if no
    other answers (`passed`, as `DeploymentPool.call` leaves them), the chain as it
    was gone down (`order`, rearranged by the refusals on the way), and the failures
    of the models passed over before the one that answered (`failed`: what their `attempts` say)."""

    slots: list[Slot] = field(default_factory=list)
    told: list[Attempt] = field(default_factory=list)
    holds: list[UsdHold] = field(default_factory=list)
    tries: list[int] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    passed: TryFailed = field(default_factory=TryFailed)
    failed: list[ProviderError] = field(default_factory=list)

    @property
    def retry(self) -> int:
        """Which try of its model opened the stream (0: the first)."""
        return self.tries[-1] if self.tries else 0

    def try_so_far(self) -> tuple[tuple[Deployment, ...], ProviderError | None]:
        """The deployments the try that opened the stream passed over for failing, and
        what that try raises if no other answers (`TryFailed`), as they are now."""
        return tuple(self.passed.deployments), self.passed.failure


class _Relay(NamedTuple):
    """An opened stream as `Dispatcher._relayed` takes it over: its first event (None
    when it was handed over before one came) and the rest, the deployment that opened
    it, its in-flight slots, and its call as told to the observer (none without one;
    one handed over before its first event is told when that event comes, so it is
    looked up as the stream ends), the worst case it holds in hard budgets (its
    model's, its client key's), which try of its model it was (0: the first), the
    chain as dispatch went down it (rearranged for a context window or a content
    filter: the models tried before it, then those after it), the deployments its try
    passed over and what that try raises if no other answers (`_Opening.try_so_far`),
    and the failures of the models before it (`_Opening.failed`)."""

    stream: tuple[bytes | None, AsyncIterator[bytes]]
    deployment: Deployment
    slots: list[Slot]
    told: list[Attempt]
    held: tuple[UsdHold, ...]
    retry: int = 0
    order: tuple[str, ...] = ()
    passed: tuple[tuple[Deployment, ...], ProviderError | None] = ((), None)
    failed: tuple[ProviderError, ...] = ()


class DispatchObserver(Protocol):
    """Told what dispatch does, on the request path: keep each call cheap. An exception
    raised here is logged and swallowed; it never fails the request."""

    def on_attempt(self, attempt: Attempt) -> None:
        """An upstream call ended."""
        ...

    def on_retry(self, model: str, delay_s: float) -> None:
        """`model` failed and is tried again after `delay_s` seconds."""
        ...

    def on_fallback(self, route: str, model: str, next_model: str) -> None:
        """`model` failed for a request of `route`; `next_model` is tried next."""
        ...

    # Optional: ``attempt_starting(operation, deployment)``, told just before each upstream
    # call (`on_attempt` follows when it ends), for an observer that must act while the
    # call runs (tracing: the call carries its own span's context); ``on_stream_end(attempt,
    # outcome, error)``, told when the stream that `attempt` (told ``ok``: it opened)
    # opened ends: ``ok`` whole (its error None, or the upstream's break once its
    # ``[DONE]`` was read: a success all the same; so is one its reader left then), else
    # `attempt_outcome` of what ended it (``error`` broken, ``cancelled`` left by its
    # client); ``on_state_error(feature)``,
    # told when a Redis call of the shared ``limits`` or ``breakers`` failed (dispatch
    # went on without).


class Observers:
    """Several observers as one, told in order."""

    def __init__(self, *observers: DispatchObserver) -> None:
        self.observers = observers

    @classmethod
    def of(cls, *observers: DispatchObserver | None) -> DispatchObserver | None:
        """The observers given (None ones left out) as one: None when there are none, the
        observer itself when there is one."""
        present = [o for o in observers if o is not None]
        if not present:
            return None
        return present[0] if len(present) == 1 else cls(*present)

    def on_attempt(self, attempt: Attempt) -> None:
        for observer in self.observers:
            _tell(observer.on_attempt, attempt)

    def attempt_starting(self, operation: str, deployment: Deployment) -> None:
        for observer in self.observers:
            method = getattr(observer, "attempt_starting", None)
            if method is not None:
                _tell(method, operation, deployment)

    def on_retry(self, model: str, delay_s: float) -> None:
        for observer in self.observers:
            _tell(observer.on_retry, model, delay_s)

    def on_fallback(self, route: str, model: str, next_model: str) -> None:
        for observer in self.observers:
            _tell(observer.on_fallback, route, model, next_model)

    def on_limited(self, model: str, limit: str) -> None:
        for observer in self.observers:
            _tell_limited(observer, model, limit)

    def on_state_error(self, feature: str) -> None:
        for observer in self.observers:
            _tell_state_error(observer, feature)

    def on_stream_end(self, attempt: Attempt, outcome: str, error: BaseException | None) -> None:
        for observer in self.observers:
            method = getattr(observer, "on_stream_end", None)
            if method is not None:
                _tell(method, attempt, outcome, error)


def _tell_stream_end(
    observer: DispatchObserver,
    attempt: Attempt,
    error: BaseException | None,
    after_end: BaseException | None = None,
) -> None:
    """``on_stream_end(attempt, outcome, error)``, for observers that have it: a whole
    stream's (``ok``) error is None, or its break once its ``[DONE]`` was read
    (`after_end`)."""
    method = getattr(observer, "on_stream_end", None)
    if method is None:
        return
    if error is None:
        _tell(method, attempt, "ok", after_end)
    else:
        _tell(method, attempt, attempt_outcome(error), error)


def _ended(
    observer: DispatchObserver | None,
    deployment: Deployment,
    events: AsyncIterator[bytes],
    told: list[Attempt],
    error: BaseException | None,
    after_end: BaseException | None = None,
) -> None:
    """A stream has ended (`error` None: whole; `after_end`, the upstream's break once its
    ``[DONE]`` was read, if any): its breaker hears how, and the observer the end of the
    call that opened it. Not a stream handed over silent whose first event never came
    (`unopened`): its call ended, and was told, when its read did."""
    if unopened(events):
        return
    stream_ended(deployment, error)
    if observer is not None and told:
        _tell_stream_end(observer, told[-1], error, after_end)


def _check_end(deployment: Deployment, whole: bool) -> None:
    """Raise `ProviderError` for a stream that ended with no ``[DONE]`` (`whole` False): a
    provider that broke its protocol (each ends its stream so, the OpenAI-compatible one
    after every choice's finish reason), its answer not known whole: a broken stream."""
    if not whole:
        raise ProviderError(deployment.provider_name, "the stream ended before its [DONE]")


def _tell_limited(observer: DispatchObserver, model: str, limit: str) -> None:
    """``on_limited(model, limit)``, for observers that have it (it came after the
    protocol's first three methods): `model` was skipped at its ``rpm`` limit or over
    its ``budget``."""
    method = getattr(observer, "on_limited", None)
    if method is not None:
        _tell(method, model, limit)


def _tell_state_error(observer: DispatchObserver | None, feature: str) -> None:
    """``on_state_error(feature)``, for observers that have it: a Redis call of the
    shared ``limits`` or ``breakers`` failed (dispatch went on without it)."""
    method = getattr(observer, "on_state_error", None)
    if method is not None:
        _tell(method, feature)


def _tell(method: Callable[..., None], *args: Any) -> None:
    try:
        method(*args)
    except Exception:
        log.exception("dispatch observer %r failed", method)


class Dispatcher:
    """Sends planned requests to the registry's models through `providers`, which it
    owns (`aclose` closes them). `rng`, `clock` and `sleep` are seams for tests.
    `observer` (metrics, traces) is told of every upstream call, retry and fallback.
    `gates` builds a cascade's quality gates (give it the router's encoder and the
    registry's directory for learned gates)."""

    def __init__(
        self,
        registry: Registry,
        providers: Mapping[str, ChatProvider],
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        observer: DispatchObserver | None = None,
        gates: GateFactory | None = None,
        replacing: Dispatcher | None = None,
    ) -> None:
        """`replacing`: the dispatcher of the registry this one replaces (a reload),
        whose breakers go on where nothing about them changed (`Deployments`)."""
        self._registry = registry
        self._providers = providers
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.observer = observer
        self._gates = gates
        # holds made or given back for callers that left, for `aclose` to wait for
        self._pending: set[asyncio.Future[Any]] = set()
        self._hold_lease_s = HOLD_LEASE_S  # a seam for tests
        self._refused_usage: set[str] = set()  # models that refused stream_options
        # the answer caps deployments' refusals named ((provider, upstream id) -> tokens)
        self._output_caps: dict[tuple[str, str], int] = {}
        self._capped_models: dict[tuple[str, int], Model] = {}  # (model, cap) -> within it
        self._limits = _limits(registry, self._state_failed("limits"))
        try:
            self._shared_breakers = open_breakers(
                registry.dispatch.breaker, self._state_failed("breakers")
            )
            self.deployments: Deployments = Deployments(
                registry,
                providers,
                rng=self._rng,
                clock=clock,
                limits=self._limits,
                shared=self._shared_breakers,
                earlier=replacing.deployments.by_deployment if replacing is not None else None,
            )
        except BaseException:
            # no heir of a retired version's give-backs: nothing would make them
            if isinstance(self._limits, RedisLimits):
                self._limits.disown()
            raise

    def _state_failed(self, feature: str) -> Callable[[], None]:
        """What a Redis-backed `feature` (``limits``, ``breakers``) calls on each
        failure: the observer's ``on_state_error``, looked up then (it may be set later)."""

        def failed() -> None:
            _tell_state_error(self.observer, feature)

        return failed

    @property
    def limits(self) -> RateLimits | None:
        """Where rpm limits and budgets are counted (None when the registry sets none)."""
        return self._limits

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def gates(self) -> GateFactory:
        """Builds cascade gates; without one given, a factory with no encoder (learned
        gates then fail, and their tier escalates)."""
        if self._gates is None:
            from llmroute.gates.build import GateFactory

            self._gates = GateFactory(self._registry)
        return self._gates

    async def complete(self, plan: Plan, body: dict[str, Any]) -> Served:
        body = plan.outgoing(body)  # refuses a blocked request; applies redaction
        plan = _as_chain(plan, self._registry)
        if plan.cascade is not None:
            from llmroute.dispatch.cascade import complete_cascade

            return await complete_cascade(self, plan, body)
        return await self.complete_chain(plan, body)

    async def complete_chain(self, plan: Plan, body: dict[str, Any]) -> Served:
        """`complete` along the plan's chain, for a body already made `Plan.outgoing`."""

        tried: set[str] = set()
        withheld: list[Usage] = []  # answers the content filter withheld: paid for

        async def on(name: str, deployment: Deployment, timeouts: Timeouts) -> dict[str, Any]:
            tried.add(name)
            sent = self._for_model(plan, name, deployment, body)
            text = self._sends_text(plan, name)
            try:
                with sending(name, sent):
                    data = await _complete_either(deployment, sent, timeouts, text=text)
            except UpstreamRejected as exc:
                if not self._learned_cap(name, deployment, sent, exc):
                    raise
                sent = self._for_model(plan, name, deployment, body)
                with sending(name, sent):
                    data = await _complete_either(deployment, sent, timeouts, text=text)
            if _filtered(data) and self._may_refuge(plan, tried):
                usage = priced(data, body, self._registry.models[name].price)
                await self._charge_answer(name, usage, deployment)  # billed all the same
                withheld.append(usage)
                raise ContentRefused(
                    deployment.provider_name,
                    "the upstream's content filter withheld the answer (finish_reason "
                    "content_filter)",
                    status=400,
                    code="content_filter",
                )
            return data

        holds: list[UsdHold] = []  # the answering call's hard-budget hold, settled by its cost
        try:
            data, name, deployment, attempts = await self._fall_back(
                plan, body, on, stream=False, holds=holds
            )
            data["model"] = deployment.answer_model
            price = self._registry.models[name].price
            held, holds[:] = tuple(holds), []
            try:
                usage = priced(data, body, price)
            except Exception:
                # a bug once the model answered (its usage unread): its prompt charged,
                # counted and marked estimated, as a cut call's, and the request's
                # (`spend`: its 500's row and the key)
                await self._charge_answer(name, _estimated(priced, body, price), deployment, held)
                raise
            await self._charge_answer(name, usage, deployment, held)
        finally:
            await self._take_back(holds)
        # the request's cost: the answers withheld too, as a stream's that fell back
        # before its first words
        paid = total_usage([*withheld, usage]) or usage
        return Served(name, deployment.provider_name, data, paid, attempts)

    async def open_stream(self, plan: Plan, body: dict[str, Any]) -> Opened:
        body = plan.outgoing(body)
        plan = _as_chain(plan, self._registry)
        if plan.cascade is not None:
            from llmroute.dispatch.cascade import open_cascade

            return await open_cascade(self, plan, body)
        return await self.open_chain(plan, body)

    async def open_chain(
        self, plan: Plan, body: dict[str, Any], *, silent_hand_over: bool = True
    ) -> Opened:
        """`open_stream` along the plan's chain, for a body already made outgoing.
        `silent_hand_over` False: a stream is not handed over before its first event
        (a cascade's tier that another tier or a buffered answer may still replace)."""

        def outgoing(name: str, deployment: Deployment) -> dict[str, Any]:
            refused = name in self._refused_usage
            sent = self._for_model(plan, name, deployment, _no_usage(body) if refused else asked)
            last[0] = sent
            return sent

        async def on(
            name: str, deployment: Deployment, timeouts: Timeouts
        ) -> tuple[bytes | None, Any]:
            text = self._sends_text(plan, name)
            sent = outgoing(name, deployment)
            with sending(name, sent):
                try:
                    return await _open_on(
                        deployment, sent, timeouts, hold_s, text=text, silent=silent_hand_over
                    )
                except UpstreamRejected as exc:
                    if not self._resent(name, deployment, sent, exc):
                        raise
            sent = outgoing(name, deployment)
            with sending(name, sent):
                return await _open_on(
                    deployment, sent, timeouts, hold_s, text=text, silent=silent_hand_over
                )

        def resent(name: str, deployment: Deployment, exc: ProviderError) -> bool:
            # the body of the call that opened the stream relayed: calls go one at a time
            return isinstance(exc, UpstreamRejected) and self._resent(
                name, deployment, last[0], exc
            )

        asked = asking_usage(body)
        last: list[dict[str, Any]] = [asked]  # the body `on` sent last
        hold_s = self._registry.dispatch.stream_hold_s

        opening = _Opening()
        try:
            (first, rest), name, deployment, attempts = await self._fall_back(
                plan, body, on, stream=True, holds=opening.holds, opening=opening
            )
        except BaseException:
            await give_back(opening.slots)
            raise
        opened = Opened(name, deployment.provider_name, _empty(), attempts)
        relay = _Relay(
            (first, rest),
            deployment,
            opening.slots,
            opening.told,
            tuple(opening.holds),
            opening.retry,
            tuple(opening.order),
            opening.try_so_far(),
            tuple(opening.failed),
        )
        opened.events = self._relayed(plan, body, on, resent, opened, relay)
        opened.unread_end = functools.partial(self._never_read, name, body, opened, relay)
        return opened

    async def _never_read(
        self, name: str, body: dict[str, Any], opened: Opened, relay: _Relay
    ) -> None:
        """The end of a stream closed before its reader read it (a client gone as its
        headers went out): as `_relayed` ends one its reader left."""
        (first, rest), deployment, slots, told, held, *_ = relay
        meter = StreamUsage(body, self._registry.models[name].price)
        if first is not None:
            meter.observe(first)
        charge = functools.partial(self._charge_answer, name, deployment=deployment, held=held)
        ended = GeneratorExit()
        try:
            await _settled(meter, opened, charge, rest, slots)
        finally:
            _ended(self.observer, deployment, rest, told, ended)

    async def _relayed(
        self,
        plan: Plan,
        body: dict[str, Any],
        on: Callable[[str, Deployment, Timeouts], Awaitable[tuple[bytes | None, Any]]],
        resent: Callable[[str, Deployment, ProviderError], bool],
        opened: Opened,
        relay: _Relay,
    ) -> AsyncIterator[bytes]:
        """`opened`'s events, metered (`_metered`). A stream that fails before its first
        words, after its start went out (`stream_hold_s`: a reasoning model thinking for
        long, then giving up), goes on as the same failure within the hold would
        (`_goes_on`), down the chain as dispatch was going down it: the client has seen
        at most the opening role chunk, so the next answer (its own opening left out
        when one went out already) reads as the answer. `opened` then names the model
        that answered, and its attempts the one that failed; the usage is both streams'.
        One handed over silent that fails before its first event (the client has seen
        nothing of it) with a failure another deployment may not have (a 503, a 429, no
        response) goes to the model's other deployments, then its retries, and one
        refused for what the model is sent again without (`resent`: `on` sends it so),
        to the model again; neither is listed as a failure. `resent`: whether a refusal
        of the stream's call is one `on` sends the model the request again after."""
        opened.unread_end = None  # read now: what follows ends it, however it ends
        name, skip_opening = opened.model, False
        began = False  # whether an event went out: the opening of the answer
        stream, deployment, slots, told, held, retry, gone, passed, failed_before = relay
        errors = list(failed_before)  # the failures `opened.attempts` lists, in order
        order = list(gone) if name in gone else [name]  # the chain as gone down so far
        spent: list[Usage | None] = []
        resume: _Resume | None = None  # how the last failure went on, when on its model
        try:
            while True:
                meter = StreamUsage(body, self._registry.models[name].price)
                charge = functools.partial(
                    self._charge_answer, name, deployment=deployment, held=held
                )
                renew_holds = functools.partial(self._renew, held) if held else None
                events = _metered(*stream, meter, opened, charge, slots, renew_holds)
                relayed(slots)  # its end tells the breaker below, however it comes
                said = whole = False
                ended: BaseException | None = None
                after_end: ProviderError | None = None  # a break once [DONE] was read
                try:
                    async for event in events:
                        if not said and says_nothing(event):
                            if skip_opening:
                                continue
                        else:
                            said = True
                        began = True
                        whole = whole or event.startswith(b"data: [DONE]")
                        yield event
                    _check_end(deployment, whole)
                    return
                except ProviderError as exc:
                    ended = None if whole else exc  # after [DONE]: a whole answer, a success
                    after_end = exc if whole else None
                    step = None
                    if not said:
                        step = self._goes_on(
                            plan, order, (name, exc), (stream[1], deployment, retry, passed), resent
                        )
                    if step is None:
                        raise
                    later, resume = step
                    failure = (name, exc)
                except BaseException as exc:
                    # its reader left (or a bug) once its [DONE] was read: a whole answer
                    ended = None if whole else exc
                    raise
                finally:
                    try:
                        await _close(events)  # charged, its slot given back, whatever came
                    finally:
                        _ended(self.observer, deployment, stream[1], told, ended, after_end)
                spent.append(opened.usage)
                opened.usage = None  # the next stream's, once it has ended
                self._going_on(plan, failure, later, resume)
                opening = _Opening(order=order)  # `order` goes on as the chain is gone down
                # the models up to the one that failed (not it when it went on): tried,
                # so that no refusal on the way puts one of them next again
                kept = order.index(failure[0]) + (1 if resume is None else 0)
                try:
                    stream, name, deployment, attempts = await self._stream_after(
                        dataclasses.replace(plan, chain=later),
                        body,
                        on,
                        failure[1],
                        opening,
                        tried=tuple(order[:kept]),
                        resume=resume,
                    )
                except ProviderError as exc:
                    ended = _ended_after(opened, None if resume else failure, exc, errors)
                    if ended is exc:
                        raise
                    raise ended from None
                slots, told, held = opening.slots, opening.told, tuple(opening.holds)
                retry, passed = opening.retry, opening.try_so_far()
                opened.model, opened.deployment = name, deployment.provider_name
                failed = () if resume else (_describe(failure),)  # else among `attempts`
                opened.attempts = (*opened.attempts, *failed, *attempts)
                errors.extend((*(() if resume else (failure[1],)), *opening.failed))
                skip_opening = began
        finally:
            if spent:
                opened.usage = total_usage([*spent, opened.usage])

    def _going_on(
        self,
        plan: Plan,
        failure: tuple[str, ProviderError],
        later: tuple[str, ...],
        resume: _Resume | None,
    ) -> None:
        """Say that a stream going on (`_goes_on`) failed: the log, and the observer
        when the request falls back; nothing for a refusal its model is sent again
        after (`_resent` says it)."""
        if resume is None:
            log.warning("stream from %s failed before its first words: %s", *failure)
            if self.observer is not None:
                _tell(self.observer.on_fallback, plan.decision.route, failure[0], later[0])
        elif resume.failure is not None:
            log.warning("stream from %s failed before its first event: %s", *failure)

    def _goes_on(
        self,
        plan: Plan,
        order: list[str],
        failure: tuple[str, ProviderError],
        at: tuple[
            AsyncIterator[bytes],
            Deployment,
            int,
            tuple[tuple[Deployment, ...], ProviderError | None],
        ],
        resent: Callable[[str, Deployment, ProviderError], bool],
    ) -> tuple[tuple[str, ...], _Resume | None] | None:
        """Where a stream that failed before its first words goes on, as the same failure
        within the hold would (None: it ends): the models to try (`order` the chain as
        gone down; the failed model's events, deployment, try, and the deployments that
        try passed over with what it raises if no other answers, in `at`), and how its
        own model goes on when it is the first of them.
        A failure another deployment may not have, before the first event (`_again`):
        the model's other deployments and tries; any other that may pass: the models
        after it. A refusal the model is sent
        the request again after (`resent`: an answer limit above its cap,
        ``stream_options``), before the first event: the model again, any deployment.
        One another model may not make (a context window too small, a content filter):
        the model `_hand_on` puts next. A second timeout waiting for the answer in the
        try (the first within the hold or after it) ends the try, as in
        `DeploymentPool.call`: the try's failure so far (`at`) is carried on."""
        name, exc = failure
        events, deployment, retry, (passed, earlier) = at
        position = order.index(name) + 1
        if exc.retryable:
            called = (*passed, deployment)
            untried = any(
                all(d is not c for c in called) for d in self.deployments.pool(name).deployments
            )
            twice = waited_out(earlier) and waited_out(exc)
            if _again(events, exc, untried and not twice):
                raised = try_failure(earlier, exc)
                return (name, *order[position:]), _Resume(name, retry, called, raised)
            return (tuple(order[position:]), None) if position < len(order) else None
        if unopened(events) and resent(name, deployment, exc):
            return (name, *order[position:]), _Resume(name, retry, (), None)
        if isinstance(exc, ContextWindowExceeded | ContentRefused | BeyondModel):
            chain = list(order)
            if self._hand_on(exc, name, chain, position, plan, position) and chain[position:]:
                return tuple(chain[position:]), None
        return None

    async def _stream_after(
        self,
        plan: Plan,
        body: dict[str, Any],
        on: Callable[[str, Deployment, Timeouts], Awaitable[tuple[bytes | None, Any]]],
        failed: ProviderError,
        opening: _Opening,
        *,
        tried: tuple[str, ...] = (),
        resume: _Resume | None = None,
    ) -> tuple[tuple[bytes | None, Any], str, Deployment, tuple[str, ...]]:
        """The stream of the first model of `plan` (the models after one whose stream
        `failed` before its first words, `tried` the models before them; with `resume`,
        that model first, going on from where it failed) that opens one; its slot given
        back if none."""
        try:
            return await self._fall_back(
                plan,
                body,
                on,
                stream=True,
                holds=opening.holds,
                opening=opening,
                resume=resume,
                tried=tried,
            )
        except UnsupportedRequest:
            # no later model takes the request (a completion's suffix): the client
            # hears why the stream failed, not why the others were skipped
            await give_back(opening.slots)
            raise failed from None
        except BaseException:
            await give_back(opening.slots)
            raise

    async def embed(self, name: str, body: dict[str, Any]) -> Served:
        """``POST /embeddings`` on the embedding model `name` (a pool model of kind
        ``embedding``; its `params` fill what the request leaves unset, ``dimensions``
        for one); its ``model`` is set back to `name`. Retried, not fallen back.
        Priced like a completion and charged to the model's budget, which is checked
        first. `Served` names the deployment that answered, as a chat's does."""

        async def call(deployment: Deployment, sent: dict[str, Any], timeouts: Timeouts) -> Answer:
            provider = deployment.provider
            if not isinstance(provider, EmbeddingProvider):
                raise UpstreamRejected(deployment.provider_name, "serves no embeddings")
            return await provider.embed(deployment.upstream, sent, timeouts=timeouts)

        return await self._unrouted(name, body, call, priced_embedding, "embeddings")

    async def rerank(self, name: str, body: dict[str, Any]) -> Served:
        """``POST /rerank`` on the rerank model `name` (a pool model of kind ``rerank``),
        as `embed` does: its `params` and renames applied (Voyage's ``top_k`` for
        ``top_n``), retried, not fallen back, priced (`priced_rerank`) and charged."""

        async def call(deployment: Deployment, sent: dict[str, Any], timeouts: Timeouts) -> Answer:
            provider = deployment.provider
            if not isinstance(provider, RerankProvider):
                raise UpstreamRejected(deployment.provider_name, "serves no reranking")
            return await provider.rerank(deployment.upstream, sent, timeouts=timeouts)

        return await self._unrouted(name, body, call, priced_rerank, "rerank")

    async def _unrouted(
        self,
        name: str,
        body: dict[str, Any],
        call: Callable[[Deployment, dict[str, Any], Timeouts], Awaitable[Answer]],
        price: Callable[[Answer, Mapping[str, Any], Price], Usage],
        operation: str,
    ) -> Served:
        """A named model's answer to `body` (an API whose answers do not mix across
        models: no fallback), with its usage; the model's budget checked and charged.
        A call cut by a cancellation stays in the request's `spend`, priced by `price`
        (`charge_abandoned`): the upstream had its input."""
        model = self._registry.models[name]
        sent = for_model(body, model)

        async def on(deployment: Deployment, timeouts: Timeouts) -> Answer:
            # outside the time limit: a call that ran out of time failed, it was not cut
            with sending(name, sent, price):
                try:
                    async with asyncio.timeout(timeouts.total_s):
                        return await call(deployment, sent, timeouts)
                except TimeoutError:
                    # the upstream's timeout, as chat's (`_complete_on`): a bare
                    # TimeoutError, when this bound fired before the provider's, was a 500
                    raise ProviderTimeout(
                        deployment.provider_name, f"no answer within {timeouts.total_s:g}s"
                    ) from None

        held: list[UsdHold] = []
        try:
            held = await self._check_budget(name, sent)
            data, deployment = await self._retry(name, None, on, operation=operation)
        except BaseException as exc:
            await self._take_back(held)
            if isinstance(exc, ProviderError):
                exc.model = name
            raise
        try:
            data["model"] = name
            usage = price(data, body, model.price)
        except Exception:
            # a bug once the upstream answered (its usage unread): the call was made,
            # charged its input, counted and marked estimated, as a cut call's
            # (`charge_abandoned`), and counted as the request's (`spend`) for the key
            await self._charge_answer(name, _estimated(price, sent, model.price), deployment, held)
            raise
        # counted as the request's too: one cancelled while this is charged is charged it
        await self._charge_answer(name, usage, deployment, held)
        return Served(name, deployment.provider_name, data, usage)

    async def aclose(self, by: Deadline = NEVER) -> None:
        """Close the providers and the shared state's connections, once the give-backs of
        callers that left are done (bounded, and done by `by` at the latest): closing
        the connections under them left their slots and holds taken for their leases."""
        loop = asyncio.get_running_loop()
        left = settling(loop, self._limits) | {t for t in self._pending if t.get_loop() is loop}
        if left:
            wait_s = by.bounded(SETTLE_S)
            _, late = await asyncio.wait(left, timeout=wait_s)
            if late:
                # no time of its own left: the shutdown's earlier waits took it
                waited = f"after {round(wait_s, 2):g} s" if wait_s > 0 else "at the deadline"
                log.warning(
                    "closing with %d give-back(s) or charge(s) of callers that left still "
                    "waiting on the limits' store %s: their slots and holds lapse with their "
                    "leases, and the charges are not counted",
                    len(late),
                    waited,
                )
        for provider in self._providers.values():
            await provider.aclose()
        if self._limits is not None:
            await self._limits.aclose(by.bounded(CLOSE_S))
        if self._shared_breakers is not None:
            for link in self.deployments.links.values():
                await link.aclose(by)
            await self._shared_breakers.aclose()

    def _for_model(
        self, plan: Plan, name: str, deployment: Deployment, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The body as this model gets it (per attempt: the fallbacks may be other
        models and providers): its thinking parameters for its provider (the client's own
        choice in the model's dialect, else the reasoning gate's verdict), then for what
        the request leaves unset the route's `params`, then the model's, with the model's
        renamed and dropped parameters (`model_params.for_model`). A completion to a
        model continuing raw text is made a completions body again (`text_body`), with
        no thinking parameters. Fields for the gateway (tags, a ``metadata`` OpenAI
        would refuse: `proxy_fields`) go to no model."""
        body = without_proxy_fields(body)
        model = self._registry.models[name]
        learned = self._output_caps.get((deployment.provider_name, deployment.upstream))
        if learned is not None and (
            model.max_output_tokens is None or learned < model.max_output_tokens
        ):
            model = self._within_learned(name, model, learned)
        params = plan.policy.params if plan.policy is not None else None
        if plan.text is not None and model.text_completions:
            safety = plan.decision.safety
            completion = text_body(
                body,
                plan.text,
                shape=functools.partial(
                    for_model, model=model, route_params=params, not_renamed_to=CHAT_ONLY
                ),
                fim_template=model.fim_template,
                # an answer's PII mask and restore edit its text, not its logprobs' tokens
                logprobs=safety is None or (not safety.restore and safety.answer_mask is None),
            )
            return within_output(completion, model)
        kind = self._registry.providers[deployment.provider_name].kind
        if client_chose(body):
            sent = in_dialect(body, model, kind, deployment.upstream)
        elif plan.decision.reasoning is None:
            sent = body
        else:
            needed = plan.decision.reasoning.needed
            sent = with_reasoning(body, model, kind, needed, deployment.upstream)
        sent = without_unsaid_reasoning(sent, model)
        sent = effort_where_taken(sent, model, kind, deployment.upstream)
        sent = anthropic_only_where_taken(sent, kind)
        return within_output(fit_thinking(for_model(sent, model, params), model), model)

    def _within_learned(self, name: str, model: Model, cap: int) -> Model:
        """`model` with `cap` as its ``max_output_tokens``, made once per model and cap
        rather than copied on every request."""
        capped = self._capped_models.get((name, cap))
        if capped is None:
            capped = model.model_copy(update={"max_output_tokens": cap})
            self._capped_models[(name, cap)] = capped
        return capped

    def _resent(
        self, name: str, deployment: Deployment, sent: dict[str, Any], exc: UpstreamRejected
    ) -> bool:
        """Whether the stream request `sent`, refused with `exc`, goes to the model once
        more, changed for good: an answer limit above the model's cap (within it, as
        every later call: `_learned_cap`), or ``stream_options`` refused by a server
        (an older Azure API version), whoever added them (the gateway, a front, the
        client): its streams go without them from now on, their costs estimated (and a
        usage chunk made for whoever asked)."""
        if self._learned_cap(name, deployment, sent, exc):
            return True
        if "stream_options" not in sent or "stream_options" not in exc.message:
            return False
        if name not in self._refused_usage:
            self._refused_usage.add(name)
            log.warning(
                "model %r refused stream_options (its streams' costs are estimated): "
                "give it drop_params: [stream_options]",
                name,
            )
        return True

    def _learned_cap(
        self, name: str, deployment: Deployment, sent: dict[str, Any], exc: UpstreamRejected
    ) -> bool:
        """Whether `exc` refused `sent` for an answer limit above the model's cap, which
        is then remembered for the deployment (its later calls are sent within it), and
        said once in the log: the request may be sent again, within it (also when a
        request sent at the same time taught the cap first)."""
        cap = refused_cap(exc.message, sent)
        if cap is None:
            return False
        key = (deployment.provider_name, deployment.upstream)
        known = self._output_caps.get(key)
        if known is not None and known <= cap:
            return True
        self._output_caps[key] = cap
        log.warning(
            "model %r (%s on %s) answers at most %d tokens: its requests are sent within "
            "that from now on; give it max_output_tokens: %d",
            name,
            deployment.upstream,
            deployment.provider_name,
            cap,
            cap,
        )
        return True

    def _sends_text(self, plan: Plan, name: str) -> bool:
        """Whether `name` gets the request as a completion (`_for_model` made it one)."""
        return plan.text is not None and self._registry.models[name].text_completions

    # -- stage 1: fallback ----------------------------------------------------------------

    async def _fall_back(
        self,
        plan: Plan,
        body: dict[str, Any],
        on: Callable[[str, Deployment, Timeouts], Awaitable[T]],
        *,
        stream: bool,
        holds: list[UsdHold],
        opening: _Opening | None = None,
        resume: _Resume | None = None,
        tried: tuple[str, ...] = (),
    ) -> tuple[T, str, Deployment, tuple[str, ...]]:
        """Try the plan's chain in order until a model answers. The answering call's
        holds in hard budgets go to `holds` (the caller settles them with the answer's
        cost); the holds of models that failed are taken back. `resume`: the chain's
        first model goes on from a failure of its stream after the hand-over. `opening`
        (a stream's) gets what the answering call holds, which try it was, and the chain
        as it was gone down (`order`), rearranged by the refusals on the way
        (`_hand_on`), for a stream to go on down after it was handed over; `tried`: the
        models gone down before the plan's (a stream going on), which no refusal puts
        next again (`order` begins with them)."""
        chain = [*tried, *plan.chain]
        failures: list[tuple[str, ProviderError]] = []
        needed: list[int] = []  # the request's estimated tokens, counted on first need
        images: list[bool] = []  # whether it holds images, looked at on first need
        prefix: list[str | None] = []  # its prompt prefix's name, on first need
        called: list[Deployment] = []  # the model's deployment called last, for a cut

        def calling(name: str, deployment: Deployment, timeouts: Timeouts) -> Awaitable[T]:
            called[:] = (deployment,)
            return on(name, deployment, timeouts)

        position = len(tried)
        while position < len(chain):
            name = chain[position]
            position += 1
            called.clear()
            if failures and self.observer is not None:
                _tell(self.observer.on_fallback, plan.decision.route, failures[-1][0], name)
            try:
                self._check_supported(name, body, images, plan)
                self._check_fits(name, body, needed)
                held = await self._check_budget(name, body, plan)
                try:
                    result, deployment = await self._retry(
                        name,
                        plan.policy,
                        functools.partial(calling, name),
                        operation=_TEXT if self._sends_text(plan, name) else "chat",
                        stream=stream,
                        tokens=self._held_tokens(name, body, needed),
                        slots=None if opening is None else opening.slots,
                        key=self._sticky_key(name, body, prefix),
                        told=None if opening is None else opening.told,
                        tries=None if opening is None else opening.tries,
                        passed=None if opening is None else opening.passed,
                        resume=resume if position == len(tried) + 1 else None,
                    )
                except BaseException:
                    await self._take_back(held)
                    raise
                holds.extend(held)
            except UnsupportedRequest as exc:
                failures.append((name, exc))
            except (ContextWindowExceeded, ContentRefused, BeyondModel) as exc:
                failures.append((name, exc))
                if not self._hand_on(exc, name, chain, position, plan, len(failures)):
                    exc.model = name
                    exc.passed_over = _tried(failures[:-1], name, exc)
                    raise
            except ProviderError as exc:
                if not exc.retryable:
                    exc.model = name
                    exc.passed_over = _tried(failures, name, exc)
                    raise
                failures.append((name, exc))
            except BaseException as exc:  # cut, or a bug: the way it went, for its log
                _cut(failures, name, called, exc)
                raise
            else:
                _went_down(opening, chain, failures)
                return result, name, deployment, tuple(_describe(f) for f in failures)
        raise _exhausted(failures)

    async def _check_budget(
        self, name: str, body: dict[str, Any], plan: Plan | None = None
    ) -> list[UsdHold]:
        """Raise `LimitReached` when the model has spent its budget for this period, or,
        for a hard budget, when the call's worst case (`body` as the model gets it:
        `plan` given, `_for_model` on each deployment, the costliest counted) does not
        fit in what is left; `KeyBudgetReached` when it does not fit in the paying client
        key's hard budget. Else the holds made (none for soft budgets), made whole even
        when the caller is cancelled meanwhile (then given back once made)."""
        if self._limits is None:
            return []
        await self._check_soft(name)
        budget = self._registry.models[name].budget
        who = payer()
        if (budget is None or not budget.hard) and who is None:
            return []
        worst = self._worst_case(name, body, plan)
        making = self._holds(name, worst, who, self._lease_for(name, plan))
        if not self._limits.remote:
            return await making
        task = asyncio.ensure_future(making)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._give_back_when_made)
            raise

    def _give_back_when_made(self, task: asyncio.Future[list[UsdHold]]) -> None:
        """The holds a cancelled caller's `_check_budget` made after it left, taken back."""
        if task.cancelled() or task.exception() is not None or not task.result():
            return
        taking = asyncio.ensure_future(self._take_back(list(task.result())))
        self._pending.add(taking)
        taking.add_done_callback(self._pending.discard)

    def _lease_for(self, name: str, plan: Plan | None) -> float:
        """How long a call's holds are leased: past every try of the model the call may
        make (a stream renews them as it goes), never less than `HOLD_LEASE_S`."""
        policy = plan.policy if plan is not None else None
        retries = self._registry.dispatch.retries.attempts
        if policy is not None and policy.retries is not None:
            retries = policy.retries
        deployments = self.deployments.pool(name).deployments
        longest = max(slot_lease(self._timeouts(policy, name, d)) for d in deployments)
        return max(self._hold_lease_s, (retries + 1) * longest)

    async def _holds(
        self, name: str, worst: WorstCase, who: Payer | None, lease_s: float
    ) -> list[UsdHold]:
        """Hold `worst` in the model's hard budget and the paying key's, leased for
        `lease_s`; raise when one has no room (the other's hold taken back)."""
        assert self._limits is not None
        budget = self._registry.models[name].budget
        holds: list[UsdHold] = []
        if budget is not None and budget.hard:
            account = model_account(name)
            period, cap = budget.period, budget.usd
            hold, spent = await self._limits.hold_usd(account, period, worst.usd, cap, lease_s)
            if hold is None:
                self._limited(name, "budget")
                raise LimitReached(
                    "llmroute",
                    f"its {_PER[budget.period]} hard budget "
                    f"{_room(spent, budget.usd)}, and this call may cost {worst.describe()}; "
                    "not called",
                )
            holds.append(hold)
        if who is None:
            return holds
        period, cap = who.budget.period, who.budget.usd
        hold, spent = await self._limits.hold_usd(who.account, period, worst.usd, cap, lease_s)
        if hold is None:
            await self._take_back(holds)
            self._limited(name, KeyBudgetReached.limit)
            raise KeyBudgetReached(
                "llmroute",
                f"key {who.name!r}'s {_PER[period]} hard budget {_room(spent, cap)}, and "
                f"this call may cost {worst.describe()}; not called",
                status=429,
                code="insufficient_quota",
            )
        return [*holds, hold]

    async def _check_soft(self, name: str) -> None:
        """Raise `LimitReached` when the model's soft budget is spent for this period."""
        budget = self._registry.models[name].budget
        if budget is None or budget.hard or self._limits is None:
            return
        spent = await self._limits.spent(model_account(name), budget.period)
        if spent >= budget.usd:
            self._limited(name, "budget")
            raise LimitReached(
                "llmroute",
                f"over its {_PER[budget.period]} budget ({usd(spent)} of {usd(budget.usd)}); "
                "not called",
            )

    def _limited(self, name: str, limit: str) -> None:
        if self.observer is not None:
            _tell_limited(self.observer, name, limit)

    def _worst_case(self, name: str, body: dict[str, Any], plan: Plan | None) -> WorstCase:
        """The costliest worst case over the model's deployments (their providers bound
        answers differently: Anthropic's default, llama.cpp's own)."""
        model = self._registry.models[name]
        worst: WorstCase | None = None
        seen: set[str] = set()
        for deployment in self.deployments.pool(name).deployments:
            if deployment.provider_name in seen:
                continue
            seen.add(deployment.provider_name)
            sent = body if plan is None else self._for_model(plan, name, deployment, body)
            case = worst_case(sent, model, self._registry.providers[deployment.provider_name])
            if worst is None or case.usd > worst.usd:
                worst = case
        assert worst is not None  # every model has a deployment
        return worst

    async def _settle(self, holds: Sequence[UsdHold], usd: float) -> None:
        """Replace each of a call's holds by what the call cost (0: it failed), in the
        period it went into: all of them, to the end, even when the caller is cancelled
        meanwhile (an ASGI server may cancel every await of a stream's clean-up)."""
        limits = self._limits
        if limits is None or not holds:
            return

        async def each() -> None:
            for hold in holds:
                await limits.settle_usd(hold, usd)

        await settled(each(), limits, remote=limits.remote)

    async def _renew(self, holds: Sequence[UsdHold]) -> None:
        """Renew the leases of a stream's holds, as it goes on answering: each for as long
        as it was taken (`_lease_for`: past the call's longest wait), not the shortest
        lease, which a stream silent longer than that would outlive."""
        if self._limits is not None:
            for hold in holds:
                await self._limits.renew_usd(hold)

    async def _take_back(self, holds: list[UsdHold]) -> None:
        """Take back the holds of calls that did not answer."""
        taken, holds[:] = list(holds), []
        await self._settle(taken, 0.0)

    async def charge_abandoned(self, spend: Spend) -> Usage | None:
        """What a request whose caller gave up had cost (None: nothing): the answers it
        got, already charged, and the prompts of its calls that were cut, counted and
        marked estimated, charged now to the budgets of the models they were sent to (a
        hosted API may bill a prompt it received). Returned for the client key's
        budget and tpm, and the decision log. Errs high when a call was cut before its
        prompt was read."""
        cut = []
        for key, (name, sent) in list(spend.unanswered.items()):
            usage = self._unanswered_usage(spend, key, name, sent)
            await self._charge(name, usage)
            cut.append(usage)
            spend.cut.append((name, usage))  # the metrics count it under `name`
        return total_usage([*spend.answered, *cut])

    def _unanswered_usage(self, spend: Spend, key: int, name: str, sent: dict[str, Any]) -> Usage:
        """What the call `key` of `spend`, sent to `name` and never answered, cost: its
        prompt (a chat completion's) or input (embeddings, rerank), estimated."""
        price = self._registry.models[name].price
        pricer = spend.pricers.get(key)
        if pricer is None:  # a chat completion's prompt
            return priced({}, sent, price, completion="")
        return pricer({}, sent, price)  # embeddings, rerank: their input

    @contextlib.asynccontextmanager
    async def within(self, limit_s: float, spent: list[Usage] | None = None) -> AsyncIterator[None]:
        """The block under a time limit of its own, `limit_s` (as `asyncio.timeout`:
        TimeoutError when it runs out): a cascade gate's, the LLM router's. The calls
        that limit cuts had sent their prompts, so each is charged then, as a cancelled
        request's cut call is (`charge_abandoned`): its prompt counted and marked
        estimated, to the budget of the model it was sent to, and counted as an answer
        in the request's `spend` (its row's usage, its key's budget), no longer
        unanswered, so that the request pays it once, whether it goes on or is cut
        later. What the block's calls cost by then, those answered and those cut, is
        added to `spent` when the block ends by its limit or by an error of its own (a
        gate's verdict says what it spent; a gate that raised after its model answered
        had paid for that answer). Calls cut by a cancel
        of the request itself are left to `charge_abandoned`. Outside `tracked`, the
        block counts its calls in a spend of its own, to see which were cut. A call of
        the request in flight beside the block when the limit runs out would be taken
        for one of the block's: a request makes its calls one at a time."""
        with contextlib.ExitStack() as scope:
            spend = current()
            if spend is None:
                spend = scope.enter_context(tracked(Spend()))
            before, paid = set(spend.unanswered), len(spend.answered)
            limit = asyncio.timeout(limit_s)
            try:
                async with limit:
                    yield
            except Exception as exc:
                if isinstance(exc, TimeoutError) and limit.expired():
                    await self._charge_cut(spend, before)
                if spent is not None:  # its limit or its own error: what it paid for
                    spent.extend(spend.answered[paid:])
                raise

    async def _charge_cut(self, spend: Spend, before: set[int]) -> None:
        """Charge the calls of `spend` a time limit cut (unanswered, and not before it
        began: `within`)."""
        for key, (name, sent) in list(spend.unanswered.items()):
            if key in before:
                continue
            try:
                usage = self._unanswered_usage(spend, key, name, sent)
            except Exception as exc:  # left unanswered: a cancel of the request prices it
                log.warning("could not price a call cut by its time limit: %s", type(exc).__name__)
                continue
            del spend.unanswered[key]
            spend.pricers.pop(key, None)
            spend.answered.append(usage)
            spend.paid_to.append(name)
            try:
                await self._charge(name, usage)
            except Exception as exc:  # its row counts it all the same
                log.warning("could not charge a call cut by its time limit: %s", type(exc).__name__)

    async def _charge_answer(
        self,
        name: str,
        usage: Usage | None,
        deployment: Deployment | None = None,
        held: Sequence[UsdHold] = (),
    ) -> None:
        """`_charge` an answer's usage, and count it as the request's (`spend`) first: a
        request cancelled while the charge waits on Redis is charged it too (its key)."""
        answered(usage, name)
        await self._charge(name, usage, deployment, held)

    async def _charge(
        self,
        name: str,
        usage: Usage | None,
        deployment: Deployment | None = None,
        held: Sequence[UsdHold] = (),
    ) -> None:
        """Count a call's cost against its model's budget and the paying client key's
        hard budget (replacing the worst case the call `held` in them), and its tokens
        against the `deployment`'s ``tpm``: all of it, to the end, even when the caller
        is cancelled meanwhile (`settled`; a client that hung up while one of them
        waited on Redis dropped the rest: the call's cost was never counted)."""
        remote = self._limits is not None and self._limits.remote
        charged = self._charged(name, usage, deployment, held)
        await settled(charged, self._limits, remote=remote)

    async def _charged(
        self,
        name: str,
        usage: Usage | None,
        deployment: Deployment | None,
        held: Sequence[UsdHold],
    ) -> None:
        cost = usage.cost_usd if usage is not None else 0.0
        await self._settle(held, cost)
        if usage is None:
            return
        if deployment is not None:
            await deployment.used(usage.total_tokens)
        if self._limits is None or cost <= 0:
            return
        settled_in = {hold.key for hold in held}
        budget = self._registry.models[name].budget
        if budget is not None and model_account(name) not in settled_in:
            await self._limits.charge(model_account(name), budget.period, cost)
        who = payer()
        if who is not None and who.account not in settled_in:
            await self._limits.charge(who.account, who.budget.period, cost)

    def _held_tokens(self, name: str, body: dict[str, Any], needed: list[int]) -> int:
        """The request's estimated prompt, held against the deployments' ``tpm`` while
        a call runs; 0 (not computed) when no deployment of `name` has one."""
        if not self.deployments.pool(name).holds_tokens:
            return 0
        if not needed:
            needed.append(estimated_prompt_tokens(body))
        return needed[0]

    def _sticky_key(self, name: str, body: dict[str, Any], prefix: list[str | None]) -> str | None:
        """The request's prompt prefix name, for a model balanced ``sticky`` over several
        deployments; None (not computed) otherwise."""
        if not self.deployments.pool(name).sticky:
            return None
        if not prefix:
            prefix.append(prefix_key(body))
        return prefix[0]

    def _check_supported(
        self, name: str, body: dict[str, Any], images: list[bool], plan: Plan | None = None
    ) -> None:
        """Raise `UnsupportedRequest` when the request holds images and the model declares
        ``vision: false``, or has tools and it declares ``tools: false`` (its upstream
        would refuse them), or sets a completions field only a model continuing raw text
        serves (``suffix``, ``echo``, ``logprobs``) and the model is not one."""
        model = self._registry.models[name]
        raw = None if plan is None or plan.text is None else plan.text.raw_only
        if raw is not None and not model.text_completions:
            raise UnsupportedRequest(
                "llmroute",
                f"sets {raw!r}, which only a model continuing raw text serves, and the "
                "model does not declare text_completions: true; not sent",
                status=400,
                code="unsupported_parameter",
                param=raw,
            )
        refused_images = False
        if model.vision is False:
            if not images:
                images.append(holds_images(body.get("messages")))
            refused_images = images[0]
        refused_tools = model.tools is False and bool(body.get("tools") or body.get("functions"))
        if refused_images and refused_tools:  # both said at once: not one fix, then a 400
            raise UnsupportedRequest(
                "llmroute",
                "holds images and has tools, and the model declares vision: false and "
                "tools: false; not sent",
                status=400,
                code="unsupported_request",
            )
        if refused_images:
            raise UnsupportedRequest(
                "llmroute",
                "holds images, and the model declares vision: false; not sent",
                status=400,
                code="images_not_supported",
            )
        if refused_tools:
            raise UnsupportedRequest(
                "llmroute",
                "has tools, and the model declares tools: false; not sent",
                status=400,
                code="tools_not_supported",
            )

    def _check_fits(self, name: str, body: dict[str, Any], needed: list[int]) -> None:
        window = self._registry.models[name].context_window
        if window is None:
            return
        if not needed:
            needed.append(estimated_prompt_tokens(body))
        if needed[0] > window:
            raise ContextWindowExceeded(
                "llmroute",
                f"about {needed[0]} tokens, over the model's context window of {window}",
                status=400,
                code="context_length_exceeded",
            )

    def _widen(
        self,
        chain: list[str],
        position: int,
        name: str,
        policy: RoutePolicy | None,
        pool: tuple[str, ...] | None = None,
    ) -> bool:
        """Put a model with a larger context window than `name` next in `chain`: the
        route's ``context_fallback`` (when inside `pool`), else the smallest larger one
        still in the chain. False when there is none."""
        window = self._registry.models[name].context_window or 0
        rest = chain[position:]
        wider = [m for m in rest if (self._registry.models[m].context_window or 0) > window]
        pick = policy.context_fallback if policy is not None else None
        if pick is not None and pool is not None and pick not in pool:
            pick = None
        if pick is None or pick in chain[:position]:
            if not wider:
                return False
            pick = min(wider, key=lambda m: self._registry.models[m].context_window or 0)
        if pick in rest:
            chain.remove(pick)
        chain.insert(position, pick)
        return True

    def _hand_on(
        self,
        exc: ProviderError,
        name: str,
        chain: list[str],
        position: int,
        plan: Plan,
        failed: int,
    ) -> bool:
        """Whether the request goes on to another model after a refusal another model
        may not make (the chain is rearranged for it): too long for this model's
        context window (`_widen`), refused by its provider's content filter
        (`_refuge`), or beyond its API (the chain's next model, unless this was the
        only one: its own refusal is what a caller pinning it expects). A request safety
        sent to a guarded model goes to no other (`Plan.guarded`): its refusal stands."""
        if isinstance(exc, ContextWindowExceeded | ContentRefused) and plan.guarded:
            return False
        if isinstance(exc, ContextWindowExceeded):
            return self._widen(chain, position, name, plan.policy, plan.pool)
        if isinstance(exc, ContentRefused):
            return self._refuge(chain, position, plan.policy, plan.pool)
        return position < len(chain) or failed > 1

    @staticmethod
    def _may_refuge(plan: Plan, tried: set[str]) -> bool:
        """Whether the route's ``content_fallback`` is there to take a filtered answer's
        request (set, inside the plan's pool, not tried yet, and the request not sent to
        a guarded model by safety): else the answer stands."""
        if plan.guarded:
            return False
        pick = plan.policy.content_fallback if plan.policy is not None else None
        return pick is not None and pick not in tried and (plan.pool is None or pick in plan.pool)

    @staticmethod
    def _refuge(
        chain: list[str], position: int, policy: RoutePolicy | None, pool: tuple[str, ...] | None
    ) -> bool:
        """Put the route's ``content_fallback`` next in `chain` (when set, inside `pool`
        and not tried yet): another provider's content filter may let the request
        through. False when there is none; the chain's own fallbacks are not tried,
        since one provider's filter refusing usually means its other models do too."""
        pick = policy.content_fallback if policy is not None else None
        if pick is None or (pool is not None and pick not in pool) or pick in chain[:position]:
            return False
        if pick in chain[position:]:
            chain.remove(pick)
        chain.insert(position, pick)
        return True

    # -- stage 2: retry -------------------------------------------------------------------

    async def _retry(
        self,
        name: str,
        policy: RoutePolicy | None,
        on: Callable[[Deployment, Timeouts], Awaitable[T]],
        *,
        operation: str = "chat",
        stream: bool = False,
        tokens: int = 0,
        slots: list[Slot] | None = None,
        key: str | None = None,
        told: list[Attempt] | None = None,
        tries: list[int] | None = None,
        passed: TryFailed | None = None,
        resume: _Resume | None = None,
    ) -> tuple[T, Deployment]:
        """The model's answer, from `DeploymentPool.call`, tried again on failures that
        may pass; which try answered goes to `tries`, the deployments it passed over
        for failing, and what it raises if no other answers, to `passed`
        (`DeploymentPool.call`'s `failed`). `resume`: go on from a stream
        handed over silent that failed before its first event, as that try would have
        gone on: the model's other deployments, then its tries left."""
        settings = self._registry.dispatch.retries
        retries = settings.attempts if policy is None or policy.retries is None else policy.retries
        pool = self.deployments.pool(name)
        observer = self.observer
        starting = None if observer is None else getattr(observer, "attempt_starting", None)

        async def call(deployment: Deployment) -> T:
            if starting is not None:
                _tell(starting, operation, deployment)
            return await on(deployment, self._timeouts(policy, name, deployment))

        lease = functools.partial(self._lease, policy, name)

        first = 0 if resume is None else min(resume.retry, retries)
        earlier: ProviderError | None = None  # what this request's last try got
        for retry in range(first, retries + 1):
            skipped = _skipped(resume, retry, passed)
            observe = None
            if observer is not None:
                observe = functools.partial(
                    self._observed, observer, operation, name, retry, stream, told
                )
            try:
                answered = await pool.call(
                    call,
                    observe=observe,
                    tokens=tokens,
                    slots=slots,
                    key=key,
                    lease=lease,
                    stream=stream,
                    passed=skipped,
                    failed=passed,
                )
            except CircuitOpen as exc:  # every deployment at its limit or its breaker open
                if isinstance(exc, LimitReached) and observer is not None:
                    _tell_limited(observer, name, exc.limit)
                _after_tries(exc, earlier)
                raise  # nothing sent: the fallback is free now
            except (ProviderTimeout, ContextWindowExceeded, ProviderMisconfigured):
                raise  # a slow, unreachable, too-small or misset model: the fallback is faster
            except ProviderError as exc:
                if not exc.retryable or retry == retries:
                    raise
                earlier = exc
                delay = backoff_delay(retry, settings, self._rng, exc.retry_after_s)
                if delay is None:
                    raise
                log.info("retrying %s in %.2fs after: %s", name, delay, exc)
                if observer is not None:
                    _tell(observer.on_retry, name, delay)
                await self._sleep(delay)
                continue
            _note(tries, retry)
            return answered
        raise AssertionError("unreachable")  # pragma: no cover

    def _observed(
        self,
        observer: DispatchObserver,
        operation: str,
        model: str,
        retry: int,
        stream: bool,
        told: list[Attempt] | None,
        deployment: Deployment,
        elapsed_s: float,
        error: BaseException | None,
    ) -> None:
        spec = self._registry.providers[deployment.provider_name]
        attempt = Attempt(
            operation=operation,
            model=model,
            deployment=deployment,
            provider_kind=spec.kind,
            base_url=spec.base_url or "",  # "" for in-process (llamacpp) providers
            retry=retry,
            outcome=attempt_outcome(error),
            error=error,
            start_ns=time.time_ns() - int(elapsed_s * 1e9),
            elapsed_s=elapsed_s,
            stream=stream,
        )
        _tell(observer.on_attempt, attempt)
        if told is not None and error is None:
            told.append(attempt)  # for `on_stream_end`, once the stream it opened ends

    def _lease(self, policy: RoutePolicy | None, model: str, deployment: Deployment) -> float:
        """How long a call's in-flight slot on `deployment` is leased (`slot_lease`)."""
        return slot_lease(self._timeouts(policy, model, deployment))

    def _timeouts(self, policy: RoutePolicy | None, model: str, deployment: Deployment) -> Timeouts:
        """Route policy over model over provider, per limit."""
        spec = self._registry.providers[deployment.provider_name]
        entry = self._registry.models[model]
        route = policy or _NO_POLICY
        return Timeouts(
            connect_s=route.connect_timeout_s or entry.connect_timeout_s or spec.connect_timeout_s,
            total_s=route.timeout_s or entry.timeout_s or spec.timeout_s,
            first_token_s=(
                route.first_token_timeout_s
                or entry.first_token_timeout_s
                or spec.first_token_timeout_s
            ),
            stream_s=route.stream_timeout_s or entry.stream_timeout_s or spec.stream_timeout_s,
        )


_NO_POLICY = RoutePolicy()


def _as_chain(plan: Plan, registry: Registry) -> Plan:
    """`plan`, its cascade's tiers tried as a chain when its completion sets a field
    only a model continuing raw text serves, or such a model may answer it (the tiers
    are called, and their gates judge, as chat)."""
    if plan.cascade is None or plan.text is None:
        return plan
    if plan.text.raw_only is None and not may_answer_raw(plan, registry.models):
        return plan
    return without_cascade(plan)


# -- stage 4: transport ---------------------------------------------------------------------


async def _complete_either(
    deployment: Deployment, body: dict[str, Any], timeouts: Timeouts, *, text: bool
) -> dict[str, Any]:
    """The chat answer: from the chat endpoint, or (`text`) from the completions one."""
    if text:
        return chat_answer(await _complete_text_on(deployment, body, timeouts))
    return await _complete_on(deployment, body, timeouts)


async def _complete_on(
    deployment: Deployment, body: dict[str, Any], timeouts: Timeouts
) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeouts.total_s):
            return await deployment.provider.complete(deployment.upstream, body, timeouts=timeouts)
    except TimeoutError:
        raise ProviderTimeout(
            deployment.provider_name, f"no answer within {timeouts.total_s:g}s"
        ) from None


async def _complete_text_on(
    deployment: Deployment, body: dict[str, Any], timeouts: Timeouts
) -> dict[str, Any]:
    provider = _text_provider(deployment)
    try:
        async with asyncio.timeout(timeouts.total_s):
            return await provider.complete_text(deployment.upstream, body, timeouts=timeouts)
    except TimeoutError:
        raise ProviderTimeout(
            deployment.provider_name, f"no answer within {timeouts.total_s:g}s"
        ) from None


def _text_provider(deployment: Deployment) -> TextProvider:
    provider = deployment.provider
    if not isinstance(provider, TextProvider):  # the registry allows none such
        raise UpstreamRejected(deployment.provider_name, "serves no text completions")
    return provider


async def _as_chat_events(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A text-completions stream read as a chat stream (`chat_event`); closing it
    closes `events` at once."""
    try:
        async for event in events:
            yield chat_event(event)
    finally:
        await _close(events)


class _Within:
    """`events` until `seconds` after `started` (monotonic): an event arriving later
    ends the stream with `ProviderTimeout` instead (each wait for one is bounded by the
    call's own timeout, so a stream ends at most that much past its limit). A class, not
    a generator: closing it closes `events` even before its first read."""

    def __init__(
        self, events: AsyncIterator[bytes], started: float, seconds: float, provider: str
    ) -> None:
        self._events = events
        self._deadline = started + seconds
        self._seconds = seconds
        self._provider = provider

    def __aiter__(self) -> _Within:
        return self

    async def __anext__(self) -> bytes:
        event = await anext(self._events)
        if time.monotonic() > self._deadline:
            raise ProviderTimeout(self._provider, f"the stream ran past {self._seconds:g}s")
        return event

    async def aclose(self) -> None:
        await _close(self._events)


async def _open_on(
    deployment: Deployment,
    body: dict[str, Any],
    timeouts: Timeouts,
    hold_s: float,
    *,
    text: bool = False,
    silent: bool = True,
) -> tuple[bytes | None, AsyncIterator[bytes]]:
    """The stream's first event (within the first-token limit) and the stream, read on
    past the events that say nothing yet (`read_preamble`), held at most `hold_s` from
    the call's start: a failure there still falls back. A stream with no event by then
    (a reasoning model that sends nothing while it thinks) comes back without one
    (None), its read going on (`first_within`), still bounded by the first-token limit,
    so that the client hears the status line and keep-alives meanwhile. `hold_s` 0:
    never handed over before the first event; `silent` False: nor before the first
    words, within the first-token limit. `text`: the body is a
    completion, sent to the model's completions endpoint, its events read as chat
    chunks."""
    started = time.monotonic()
    if text:
        upstream = _text_provider(deployment).stream_text(
            deployment.upstream, body, timeouts=timeouts
        )
        events = aiter(_as_chat_events(upstream))
    else:
        events = aiter(deployment.provider.stream(deployment.upstream, body, timeouts=timeouts))
    limit = timeouts.first_token_s or timeouts.total_s
    rest = events
    if timeouts.stream_s is not None:
        rest = _Within(events, started, timeouts.stream_s, deployment.provider_name)
    reading = _first_event(events, limit, deployment.provider_name)
    try:
        if hold_s > 0 and silent:
            first, after = await first_within(reading, rest, hold_s)
            if first is None:
                return None, after
        else:
            first = await reading
        # a cascade's tier that a later one may replace (not `silent`) is not handed over
        # at its opening either: a failure before its first words must still escalate
        held_s = max((hold_s if silent else limit) - (time.monotonic() - started), 0.0)
        return await read_preamble(first, rest, held_s)
    except BaseException:
        await _close(rest)
        raise


async def _first_event(events: AsyncIterator[bytes], limit: float, provider: str) -> bytes:
    """The stream's first event, within `limit` seconds."""
    try:
        async with asyncio.timeout(limit):
            return await anext(events)
    except TimeoutError:
        raise ProviderTimeout(provider, f"no first token within {limit:g}s") from None
    except StopAsyncIteration:
        raise ProviderError(provider, "the stream ended before its first event") from None


async def _metered(
    first: bytes | None,
    rest: AsyncIterator[bytes],
    meter: StreamUsage,
    opened: Opened,
    charge: Callable[[Usage | None], Awaitable[None]] | None = None,
    slots: list[Slot] | None = None,
    renew_holds: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """The stream with its usage priced; a usage chunk is added before ``[DONE]`` when
    the client asked for one and the upstream sent none. It ends at ``[DONE]``: what the
    upstream sends after it is read for a moment and dropped (`drain_after_end`), so
    that one keeping its body open does not hold the stream's end, its slot and its
    reader (a cascade tier being gated) until the read times out (each provider's
    stream ends so too; this bounds any other's). When it ends, completely or not
    (broken by the upstream, closed by the client), its usage (reported, else
    estimated from what was streamed) is `charge`d to the model's budget: a stream cut
    short was paid for as far as it went; and the deployment's in-flight `slots` are
    given back. While it goes on, their leases, and those of its hard-budget holds
    (`renew_holds`), are renewed every `SLOT_RENEW_S`."""
    renews_slots = leased(slots)
    renews = renews_slots or renew_holds is not None
    renew_at = time.monotonic() + SLOT_RENEW_S if renews else math.inf
    try:
        if first is not None and (sent := meter.observe(first)) is not None:
            yield sent
        async for event in rest:
            if renews and time.monotonic() >= renew_at:
                renew_at = time.monotonic() + SLOT_RENEW_S
                if renews_slots and slots:
                    await renew(slots)
                if renew_holds is not None:
                    await renew_holds()
            if event.startswith(b"data: [DONE]"):
                extra = meter.final_event()
                if extra is not None:
                    yield extra
                yield event
                await drain_after_end(rest)  # the body's end, for its connection's reuse
                return
            if (sent := meter.observe(event)) is not None:
                yield sent
    finally:
        await _settled(meter, opened, charge, rest, slots)


async def _settled(
    meter: StreamUsage,
    opened: Opened,
    charge: Callable[[Usage | None], Awaitable[None]] | None,
    rest: AsyncIterator[bytes],
    slots: list[Slot] | None,
) -> None:
    """A stream's end, however it came: its usage charged, the upstream stream closed,
    the deployment's slots given back. One handed over silent whose first read failed
    is a failed call: no usage, nothing charged (its holds given back). One whose answer
    a bug failed to price is charged its prompt (`StreamUsage.estimate`), as a
    completion's is, and the bug raised on for the request to record."""
    try:
        try:
            opened.usage = None if failed_unopened(rest) else meter.finish()
        except Exception:
            opened.usage = meter.estimate()
            raise
        finally:
            if charge is not None:
                await charge(opened.usage)
    finally:
        try:
            await _close(rest)
        finally:
            if slots:
                await give_back(slots)


def _limits(registry: Registry, on_error: Callable[[], None]) -> RateLimits | None:
    """Where the deployments' ``rpm`` limits and the models' budgets are counted; None
    when there are none (nothing to count, no Redis client to open)."""
    if not has_limits(registry):
        return None
    settings = registry.dispatch.limits
    return open_limits(settings.url, settings.timeout_s, settings.namespace, on_error)


def _no_usage(body: dict[str, Any]) -> dict[str, Any]:
    """`body` without ``stream_options``, for a server that refuses them."""
    return {k: v for k, v in body.items() if k != "stream_options"}


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover


async def _close(events: AsyncIterator[bytes]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def _filtered(data: Any) -> bool:
    """Whether every choice of a completion ended because the provider's content filter
    stopped it (Azure OpenAI's output filter; Anthropic's ``refusal`` stop reason)."""
    choices = data.get("choices") if isinstance(data, dict) else None
    return (
        isinstance(choices, list)
        and bool(choices)
        and all(isinstance(c, dict) and c.get("finish_reason") == "content_filter" for c in choices)
    )


def _room(spent: float, cap: float) -> str:
    """What a hard budget has left, for a refusal's message."""
    return f"has {usd(max(cap - spent, 0.0))} of {usd(cap)} left (spent or held)"


def _went_down(
    opening: _Opening | None, chain: list[str], failures: list[tuple[str, ProviderError]]
) -> None:
    """A stream's `opening` told the chain as it was gone down and the failures on the
    way, once a model answered (nothing for a completion: None)."""
    if opening is not None:
        opening.order[:] = chain
        opening.failed[:] = [failed for _, failed in failures]


def _estimated(
    price: Callable[[Answer, Mapping[str, Any], Price], Usage],
    sent: Mapping[str, Any],
    model_price: Price,
) -> Usage | None:
    """What a call whose answer could not be priced cost: its input (an embeddings or
    rerank call's) or prompt counted (`price` of an empty answer, as `charge_abandoned`
    prices a cut one); None when that fails too (the holds are given back, nothing
    charged)."""
    try:
        return price({}, sent, model_price)
    except Exception:
        return None


def _cut(
    failures: list[tuple[str, ProviderError]],
    name: str,
    called: list[Deployment],
    exc: BaseException,
) -> None:
    """A request cancelled on `name` (`called`: its deployment called last, if any)
    after `failures`, or ended there by a bug (`exc`, `ending_of`): its attempt path so
    far, for its log (`cut_after`). Nothing for an error of ours, which says its own."""
    how = ending_of(exc)
    if how is not None:
        provider = called[0].provider_name if called else None
        cut_after([_describe(f) for f in failures], cancelled_on(name, provider, how))


def _tried(
    failures: list[tuple[str, ProviderError]], name: str, exc: ProviderError
) -> tuple[str, ...]:
    """A request `name` refused after others failed: every model tried, the refusing one
    last, as a chain that failed throughout lists them (said as `_describe` says them,
    the refusal not logged as a failure: it is the request's own fault). Nothing when
    `name` was the first: the request did not fall back."""
    if not failures:
        return ()
    return (*(_describe(f) for f in failures), exc.attempt(name))


def _skipped(
    resume: _Resume | None, retry: int, passed: TryFailed | None
) -> tuple[tuple[Deployment, ...], ProviderError] | None:
    """What try `retry` passes over, and why (`_Resume.passed`); `passed`, a stream's
    record of the deployments its try passes over and of what it raises if no other
    answers, begins the try with them (the call adds those that fail in it)."""
    skipped = None if resume is None else resume.passed(retry)
    if passed is not None:
        passed.deployments[:] = () if skipped is None else skipped[0]
        passed.failure = None if skipped is None else skipped[1]
    return skipped


def _note(tries: list[int] | None, retry: int) -> None:
    """Which try of its model answered, for a caller that asked (`tries`)."""
    if tries is not None:
        tries.append(retry)


def _again(events: AsyncIterator[bytes], exc: ProviderError, untried: bool) -> bool:
    """Whether a stream that failed with `exc` goes on on its own model, as a call failing
    within the hold does: handed over silent, it failed before its first event
    (`unopened`: the client has seen nothing of it), with a failure that passes to the
    model's next deployment (no response, no connection in time, a 5xx, a 429, no first
    event within the timeout): a hold shorter than the connect timeout hands a stream
    over before its connect fails, one shorter than the first-token limit before that
    limit runs out. A timeout waiting for the answer goes on only to a deployment the
    try has not called (`untried`): it is not retried on the model, so without one the
    next model is next."""
    if not (exc.retryable and unopened(events)):
        return False
    return untried or not waited_out(exc)


def _ended_after(
    opened: Opened,
    failure: tuple[str, ProviderError] | None,
    exc: ProviderError,
    before: Sequence[ProviderError] = (),
) -> ProviderError:
    """A held stream failed before its first words (`failure`; None when its model went
    on, `_again`: its failures are among `exc`'s) and no model after it answered (`exc`):
    `opened` (what the stream's log line and decision record say) lists the first
    failure before the later ones, and names the model whose provider refused the
    request and ended the stream, as a request that was not streamed says them. A
    gateway verdict on a later model (too long for its context window) called none of
    its deployments: the record keeps the model called, not one served by "llmroute".
    The error to raise lists every model tried too, in order (`exc`'s ``passed_over``;
    when every one failed, an `AllFallbacksFailed` of them all in place of `exc`'s,
    which knew only those after the failure, or of the key's budget refusal of every
    later model; `before`: the failures `opened.attempts` listed already, which count
    for its status too)."""
    if failure is None:
        failure_said: tuple[str, ...] = ()
    elif exc is failure[1]:  # no later model took the request: only this failure counts
        opened.attempts = (*opened.attempts, _describe(failure))
        return exc
    else:
        failure_said = (_describe(failure),)
    said = opened.attempts
    if isinstance(exc, AllFallbacksFailed):
        later = exc.attempts
    elif exc.model is None:  # the gateway's verdict on the later models (a key's budget)
        later = exc.passed_over or (AttemptText(exc.message, exc.outline()),)
    else:  # a later model refused the request: it ends the stream
        later = exc.passed_over or (exc.attempt(exc.model),)
        if exc.provider != GATEWAY:  # its provider refused: that deployment was called
            opened.model, opened.deployment = exc.model, exc.provider
    opened.attempts = exc.passed_over = (*said, *failure_said, *later)
    earlier = (*before, *(() if failure is None else (failure[1],)))
    if isinstance(exc, AllFallbacksFailed):
        if opened.attempts == exc.attempts:
            return exc
        return _every_failed(opened.attempts, exc.errors, earlier)
    if isinstance(exc, KeyBudgetReached) and not all(
        isinstance(e, KeyBudgetReached) for e in counted(earlier)
    ):
        # every later model over the key's budget, after models that failed: not the
        # key's 429 (a model was tried), the status `_exhausted` gives them all; `exc`
        # stands for the later refusals, all of its kind
        return _every_failed(opened.attempts, (exc,), earlier)
    return exc


def _every_failed(
    attempts: tuple[str, ...], later: Sequence[ProviderError], earlier: Sequence[ProviderError]
) -> AllFallbacksFailed:
    """`AllFallbacksFailed` of every model a stream tried (`attempts`), from the failures
    of the models after its own failed (`later`), with the status `_exhausted` gives
    them all (`status_of`): the failures `earlier` (within the hold, then the stream's
    own) count with the later ones, a model skipped for what the request holds aside,
    as there."""
    errors = (*counted(earlier), *later)
    status, wait = status_of(errors)
    every = AllFallbacksFailed(list(attempts), status=status, errors=errors)
    every.retry_after_s = wait
    return every


def _after_tries(stopped: CircuitOpen, earlier: ProviderError | None) -> None:
    """Make `stopped` (a breaker open, a limit reached: nothing sent) say what the
    request's own earlier try got, when there was one, as ``upstream returned HTTP 500;
    then circuit open ...``: those tries' failures opened the breaker (or used up the
    limit), and an operator reading the attempts needs why, not only that it is open."""
    if earlier is None:
        return
    got, bare = earlier.parts, earlier.outline()
    if earlier.provider != stopped.provider:  # one of the model's several deployments
        got, bare = (f"{earlier.provider}: ", *got), f"{earlier.provider}: {bare}"
    stopped.outlined = f"{bare}; then {stopped.outline()}"
    stopped.parts = (*got, "; then ", *stopped.parts)
    stopped.message = "".join(stopped.parts)
    stopped.args = (f"provider {stopped.provider!r}: {stopped.message}",)


def _describe(failure: tuple[str, ProviderError]) -> str:
    name, exc = failure
    if isinstance(exc, UnsupportedRequest):  # skipped by its declaration, not a failure
        log.info("model %s skipped: the request %s", name, exc.message)
    elif isinstance(exc, BeyondModel):  # skipped by its API's limits, nothing sent
        log.info("model %s skipped: %s; not sent", name, exc.message)
    elif isinstance(exc, LimitReached):  # at a cap set to spill over: counted by a metric
        log.info("model %s skipped: %s", name, exc)
    else:
        log.warning("model %s failed: %s", name, exc)
    return exc.attempt(name)


def _exhausted(failures: list[tuple[str, ProviderError]]) -> ProviderError:
    """What to raise when the chain is exhausted: `UnsupportedRequest` (400) when every
    model was skipped for what the request holds; else, of the models tried, 504 when
    every one timed out, 429 when every one was rate limited upstream (an OpenAI
    client's and LiteLLM's rate-limit error: a wait, not an outage), 503 when every one
    was unavailable (breaker open, its own limits, or rate limited), else 502."""
    attempts = [_describe(f) for f in failures]
    errors = counted(exc for _, exc in failures)
    if errors and all(isinstance(e, KeyBudgetReached) for e in errors):
        why = "; ".join(f"{name}: {exc.message}" for name, exc in failures)
        refused = KeyBudgetReached("llmroute", why, status=429, code="insufficient_quota")
        refused.passed_over = tuple(attempts)  # each model, for a stream's (`_ended_after`)
        return refused
    if not errors and failures:
        why = "; ".join(
            f"{name}: {exc.message.removesuffix('; not sent')}" for name, exc in failures
        )
        codes = {exc.code for _, exc in failures}
        params = {exc.param for _, exc in failures}
        return UnsupportedRequest(
            "llmroute",
            f"no model of the chain takes this request ({why})",
            status=400,
            code=codes.pop() if len(codes) == 1 else "unsupported_request",
            param=params.pop() if len(params) == 1 else None,
        )
    status, wait = status_of(errors)
    exhausted = AllFallbacksFailed(attempts, status=status, errors=errors)
    exhausted.retry_after_s = wait
    return exhausted
