"""``router.chat.completions``: the OpenAI client's chat API, served in-process.

Each call is routed (`plan_request`, then the LLM router when the registry has
``llm_fallback`` and the intent layer is unsure) and dispatched (`Dispatcher`) exactly as
the gateway does it, without an HTTP hop. Synchronous calls run on one event loop in a
daemon thread owned by the router (started on first use, stopped by ``close()``);
asynchronous calls run on the caller's loop, with a dispatcher for that loop. Every call
is written to the decision log as a gateway request is (`SdkDecisionLog`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import logging
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Generic, Literal, TypeVar, overload

from llmroute.chat_checks import check_chat_body
from llmroute.decide import Router
from llmroute.decision import Decision
from llmroute.dispatch import AUTO, Dispatcher, Opened, Plan, aplan_request, plan_request
from llmroute.dispatch.plan import OFF_LOOP_CHARS
from llmroute.dispatch.spend import Spend, paid_by_model, tracked
from llmroute.dispatch.usage import Usage
from llmroute.errors import CallTimeout, InvalidRequest, LlmrouteError, RoutingError
from llmroute.gates.base import total_usage
from llmroute.joined_bytes import off_loop
from llmroute.layers.llm_router import LlmRouter, refine_plan
from llmroute.safety.answer_pii import AnswerMask
from llmroute.safety.restore import restore_completion
from llmroute.sdk.clients import LoopClients
from llmroute.sdk.convert import (
    as_completion,
    jsonable,
    load_types,
    name_decision,
    routing_info,
    types_loaded,
)
from llmroute.sdk.decision_log import (
    CallClock,
    SdkDecisionLog,
    record_cache_hit,
    record_failure,
    record_success,
)
from llmroute.sdk.loop import LoopThread
from llmroute.sdk.streams import AsyncStream, Stream
from llmroute.state import CachedAnswer, CacheLookup, look_up, replay
from llmroute.telemetry.attribution import TAGS_HEADER, parse_tags
from llmroute.telemetry.recorder import Recorder
from llmroute.telemetry.shadow import StreamedAnswer, answer_text
from llmroute.untrusted_json import has_surrogate

__all__ = ["Chat", "Completions"]

T = TypeVar("T")
log = logging.getLogger("llmroute.sdk")
_RELEASE_S = 10.0  # for other loops to end their calls and close their connections
_CLOSE_THREAD = "llmroute-close"  # the thread a close called in a running loop waits in
_PACKAGE = str(Path(__file__).parents[1]) + os.sep  # not a sibling llmroute_x package


_A_CLASS = (
    "'{key}' is the class {name}: create() sends JSON, as openai's create() does (a class "
    "is for openai's parse()). For structured output give "
    "{{'type': 'json_schema', 'json_schema': {{'name': '{name}', "
    "'schema': {name}.model_json_schema()}}}}"
)


class _Request:
    """One call's body, routing headers and time limit, from openai-style kwargs."""

    def __init__(
        self,
        model: str,
        messages: Iterable[Any],
        stream: bool,
        options: dict[str, Any],
    ) -> None:
        extra_headers = _mapping("extra_headers", options.pop("extra_headers", None))
        extra_body = _mapping("extra_body", options.pop("extra_body", None))
        if _omitted(model):  # left out, as the gateway reads a body without one: routed
            model = AUTO
        options.pop("extra_query", None)  # query parameters mean nothing in-process
        timeout = options.pop("timeout", None)
        params = {k: v for k, v in options.items() if not _omitted(v)}
        for key, value in params.items():
            if isinstance(value, type):  # a pydantic model's class, as openai's parse takes
                raise InvalidRequest(_A_CLASS.format(key=key, name=value.__name__), param=key)
        if isinstance(messages, str | bytes | Mapping):  # list("hi") would be two "messages"
            raise RoutingError("'messages' must be a list of message objects")
        # a value that is no list (None: a variable left unset) goes in as it is, for
        # the body's check to refuse as the gateway refuses "messages": null
        listed = list(messages) if isinstance(messages, Iterable) else messages
        body: dict[str, Any] = {"model": model, "messages": jsonable(listed)}
        body |= jsonable(params)
        streamed = _streamed(stream)
        if streamed:
            body["stream"] = True
        body |= jsonable(dict(extra_body))
        # the gateway's checks of a chat body (InvalidRequest, its 400's message): a
        # content part that is not an object would go upstream unread by safety
        named = check_chat_body(body)  # its tags: after the header's, as the gateway has them
        if (body.get("stream") is True) is not streamed:
            raise InvalidRequest(_STREAM_DISAGREES, param="stream")
        if has_surrogate(body):  # no encoder takes it: say so here, not from the tokenizer
            raise RoutingError(
                "a string in the request is not valid Unicode: it holds an unpaired UTF-16 "
                "surrogate (text decoded with errors='surrogateescape'?)"
            )
        self.body = body
        self.stream = streamed
        self.headers = _headers(extra_headers)
        self.timeout = None if _omitted(timeout) else _seconds(timeout)
        tags = [v for k, v in self.headers.items() if k.lower() == TAGS_HEADER]
        try:
            self.tags = parse_tags(",".join(tags) if tags else None)
        except ValueError as exc:
            raise RoutingError(f"{TAGS_HEADER}: {exc}") from None
        if named:
            self.tags = tuple(dict.fromkeys((*self.tags, *named)))

    def plan(self, router: Router) -> Plan:
        return plan_request(router, self.body, self.headers)

    async def aplan(self, router: Router) -> Plan:
        return await aplan_request(router, self.body, self.headers)


def _edits_of(decision: Decision) -> tuple[AnswerMask | None, Mapping[str, str] | None]:
    """What the answer goes through on its way to the caller: the profile's
    ``answer_pii`` redaction, then its ``restore`` of the request's placeholders."""
    safety = decision.safety
    return (None, None) if safety is None else (safety.answer_mask, safety.restore)


async def _restored(data: dict[str, Any], decision: Decision) -> dict[str, Any]:
    """`data` as the caller gets it: a copy with PII the model wrote redacted and the
    request's placeholders swapped back, as the profile says (the cache and the
    decision log keep the provider's answer). A long answer is scanned in a worker
    thread, off the caller's event loop (`off_loop`: not in its default executor, where
    its own blocking calls may queue)."""
    mask, values = _edits_of(decision)
    if mask is None and not values:
        return data
    edited: dict[str, Any] = copy.deepcopy(data)
    if mask is not None and len(answer_text(edited) or "") > OFF_LOOP_CHARS:
        edited = await off_loop(mask.completion, edited)
    elif mask is not None:
        edited = mask.completion(edited)
    if values:
        edited = restore_completion(edited, values)
    return edited


_STREAM_DISAGREES = (
    "'stream' in extra_body must agree with the stream argument, which says whether a "
    "completion or a Stream is returned (pass stream=True to stream)"
)


def _streamed(stream: Any) -> bool:
    """The `stream` argument: None and openai's sentinels mean left out (not streamed);
    anything else but a boolean is the gateway's 400 for a body's ``"stream": "yes"``
    (it was streamed, as truthy)."""
    if isinstance(stream, bool):  # the common case first: `_omitted` reads a type's name
        return stream
    if stream is None or _omitted(stream):
        return False
    raise InvalidRequest("'stream' must be true or false", param="stream")


def _omitted(value: Any) -> bool:
    """openai's ``NOT_GIVEN`` / ``omit`` sentinels, so wrappers can forward them."""
    return type(value).__name__ in ("NotGiven", "Omit")


def _mapping(name: str, value: Any) -> Mapping[Any, Any]:
    """`extra_headers` / `extra_body`: a mapping, or nothing when left out or None (a
    list was merged by ``dict.update``, which said neither which argument nor why)."""
    if value is None or _omitted(value):
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping (a dict), not {type(value).__name__}")
    return value


def _headers(extra_headers: Mapping[Any, Any]) -> dict[str, str]:
    """Header values as openai's client takes them: text (or bytes), or its ``omit`` to
    leave the header out. ``str(None)`` was sent: ``x-llmroute-session: None`` made every
    caller without an id one conversation."""
    headers: dict[str, str] = {}
    for key, value in extra_headers.items():
        if _omitted(value):
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1")  # as HTTP carries it
        if not isinstance(value, str):
            kind = type(value).__name__
            raise TypeError(f"extra_headers[{str(key)!r}] must be a string, not {kind}")
        headers[str(key)] = value
    return headers


def _seconds(timeout: Any) -> float | None:
    read = getattr(timeout, "read", timeout)  # an httpx.Timeout: its read limit
    if read is None:
        return None
    if isinstance(read, bool) or not isinstance(read, int | float):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not read > 0:  # NaN too
        raise ValueError(f"timeout must be more than 0 seconds, not {read}")
    return read


@contextlib.asynccontextmanager
async def _within(timeout: float | None) -> AsyncIterator[None]:
    """The call's own `timeout`, for all it waits for once routed: the LLM router's
    call, the cache, the upstream's answer (`CallTimeout`; a `TimeoutError` of another
    is left as it is)."""
    limit = asyncio.timeout(timeout)
    try:
        async with limit:
            yield
    except TimeoutError:
        if not limit.expired():
            raise
        raise CallTimeout("llmroute", f"no answer within {timeout:g}s") from None


async def _cut_cost(dispatcher: Dispatcher | None, asking: Spend, spend: Spend) -> Usage | None:
    """What a call cut in flight (its caller's cancel, its own `timeout`) had cost: the
    prompts it had sent charged to their models' budgets, as the gateway charges a
    client that hung up, the LLM router's (`asking`) too; the call's own (`spend`) are
    returned, for its row (None: nothing, or the charge failed: it is logged all the
    same)."""
    if dispatcher is None:  # cut before anything was sent
        return None
    try:
        await dispatcher.charge_abandoned(asking)
        return await dispatcher.charge_abandoned(spend)
    except Exception as exc:
        log.warning("could not charge a cut call's prompt: %s", type(exc).__name__)
        return None


@dataclass(frozen=True, slots=True)
class _Sent(Generic[T]):
    """A call that was looked up and, unless the cache answered, sent: `result` is None
    on a cache hit (the answer is `lookup.answer`)."""

    recorder: Recorder | None
    plan: Plan
    lookup: CacheLookup | None
    result: T | None
    spend: Spend | None = None  # what it paid for as it was sent (None: a cache hit)

    def hit(self) -> CachedAnswer:
        assert self.lookup is not None and self.lookup.answer is not None
        return self.lookup.answer


def _hit_info(info: dict[str, Any], lookup: CacheLookup | None) -> None:
    """``cache: hit``, and the stored request's similarity after a semantic lookup."""
    info["cache"] = "hit"
    if lookup is not None and lookup.similarity is not None:
        info["cache_similarity"] = round(lookup.similarity, 4)


def _cache_state(lookup: CacheLookup | None) -> str | None:
    """The ``cache`` field for an answer from upstream, as ``x-llmroute-cache`` says it:
    ``miss``, ``bypass``, or None when the request is not cached."""
    if lookup is None:
        return None
    return "miss" if lookup.directives.lookup else "bypass"


class _Held:
    """What a router's SDK holds that would outlive it: its loop thread, when started,
    and its loops' clients (their HTTP sessions), which a router freed without a close
    closes on their loops (`_abandoned`), not leaves to the collector ("Unclosed client
    session")."""

    __slots__ = ("clients", "thread")

    def __init__(self, clients: LoopClients) -> None:
        self.clients = clients
        self.thread: LoopThread | None = None


def _abandoned(held: _Held, log: SdkDecisionLog) -> None:
    """A router freed without a close (a registry reloaded by swapping routers, the old
    one dropped): its loop thread and its decision log's writer thread, with its store's
    connection, lived on, one of each per router, until the process ended, and its
    sessions were left to the collector. It is closed as `close` closes it, in a thread:
    the collector may run in any thread, the loop thread's own included, and closing
    waits."""
    thread, held.thread = held.thread, None
    clients = held.clients
    if thread is None and log.writer is None and clients.idle():
        return
    finish_log = log.detach()

    def let_go() -> None:
        if thread is not None:
            thread.stop()
        concurrent.futures.wait(clients.release_others(set()), timeout=_RELEASE_S)
        finish_log()

    with contextlib.suppress(RuntimeError):  # the interpreter is shutting down
        threading.Thread(target=let_go, name=_CLOSE_THREAD).start()


class _Engine:
    """Owns the loop thread and the per-loop dispatchers of one router."""

    def __init__(self, router: Router) -> None:
        self.router = router
        loaded = router.loaded
        gates = router.gate_factory()  # learned gates loaded with the router
        metrics = None
        if router.metrics_registry is not None:
            from llmroute.telemetry.metrics import metrics_for

            metrics = metrics_for(router.metrics_registry)
        self._clients = LoopClients(
            loaded.registry,
            gates=gates,
            base_dir=loaded.base_dir,
            version=router.version,
            metrics=metrics,
            at=loaded.at,
        )
        self._lock = threading.Lock()
        self._held = _Held(self._clients)
        self._llm_routers: weakref.WeakKeyDictionary[Dispatcher, LlmRouter] = (
            weakref.WeakKeyDictionary()
        )
        self.log = SdkDecisionLog(loaded.registry.telemetry, metrics=metrics)
        self._warned: set[str] = set()  # the blocking calls `blocking` has warned of
        # at exit the loop threads are stopped (`llmroute.sdk.loop`) and the log's
        # writer is the interpreter's to finish, as for a router still held
        weakref.finalize(self, _abandoned, self._held, self.log).atexit = False

    def blocking(self, name: str, instead: str) -> None:
        """Warn, once per router and call, that the synchronous `name` runs in a running
        event loop (an ``async def`` handler): it holds the loop, and every task on
        it, until it returns. Not an error: a notebook's cells run in a loop too."""
        if self._first_in_a_loop(name):
            _warn_blocking(
                f"{name}() was called in a running event loop: it blocks the loop, and "
                f"every task on it, until it returns; in async code use `await "
                f"{instead}(...)`"
            )

    def reading(self) -> None:
        """As `blocking`, for a synchronous `Stream` read in a running event loop: each
        chunk holds the loop until it comes (wherever the stream was created)."""
        if self._first_in_a_loop("Stream"):
            _warn_blocking(
                "router.chat.completions.create(stream=True)'s Stream was read in a "
                "running event loop: it blocks the loop, and every task on it, until each "
                "chunk comes; in async code use `async for chunk in await "
                "router.chat.completions.acreate(..., stream=True)`"
            )

    def _first_in_a_loop(self, name: str) -> bool:
        """Whether this thread runs an event loop and `name` was not warned of yet."""
        if asyncio._get_running_loop() is None or name in self._warned:
            return False
        self._warned.add(name)
        return True

    def thread(self) -> LoopThread:
        with self._lock:
            if self._held.thread is None or not self._held.thread.alive:
                self._held.thread = LoopThread()
            return self._held.thread

    async def dispatcher(self) -> Dispatcher:
        return await self._clients.get()

    async def evict(self, decision_id: str) -> bool:
        """Drop the cached answer that served `decision_id` (negative feedback)."""
        await self._clients.get()  # this loop's cache
        cache = self._clients.cache()
        if cache is None or not cache.settings.evict_on_feedback:
            return False
        return await cache.evict(decision_id)

    async def refined(self, request: _Request, plan: Plan, dispatcher: Dispatcher) -> Plan:
        """`plan` after the LLM router (one per dispatcher, so per loop), when the
        registry configures one and it applies, then after conversation affinity."""
        settings = self.router.loaded.registry.llm_fallback
        if settings is not None and settings.enabled:
            with self._lock:
                llm = self._llm_routers.get(dispatcher)
                if llm is None:
                    llm = LlmRouter(settings, self.router.loaded.registry, dispatcher)
                    self._llm_routers[dispatcher] = llm
            plan = await refine_plan(llm, self.router, plan, request.body, request.headers)
        affinity = self._clients.affinity()
        if affinity is not None:
            plan = await affinity.apply(plan, request.body, request.headers)
        return plan

    async def _send(
        self,
        request: _Request,
        plan: Plan,
        clock: CallClock,
        send: Callable[[Dispatcher, Plan], Coroutine[Any, Any, T]],
    ) -> _Sent[T]:
        """Refine `plan`, look it up in the response cache, and on a miss `send` it
        within the call's timeout; a failure is logged (with the status the gateway
        would answer) and raised."""
        recorder = await self.log.arecorder()
        if recorder is not None:
            recorder = recorder.with_tags(request.tags)
        stream = request.body.get("stream") is True
        dispatcher: Dispatcher | None = None
        spend = Spend()
        # the LLM router's call while it is asked: charged to its model's budget if cut
        # then, not to the call's row, as the gateway charges it (one its own
        # ``timeout_s`` cuts is charged as that runs out: `Dispatcher.within`)
        asking = Spend()
        try:
            dispatcher = await self.dispatcher()
            async with _within(request.timeout):
                with tracked(asking):
                    plan = await self.refined(request, plan, dispatcher)
                cache = self._clients.cache()
                evictable = (
                    cache is not None and cache.settings.evict_on_feedback and self.log.enabled
                )
                lookup = await look_up(
                    cache, plan, request.body, stream, request.headers, evictable=evictable
                )
                if lookup is not None and lookup.answer is not None:
                    return _Sent(recorder, plan, lookup, None)
                with tracked(spend):
                    result = await send(dispatcher, plan)
        except asyncio.CancelledError as exc:
            # The caller gave up (a wait_for timeout, a cancelled task): logged and
            # charged what it had cost, as the gateway does for a client that hangs up.
            usage = await _cut_cost(dispatcher, asking, spend)
            record_failure(
                recorder,
                self.router,
                plan.decision,
                request.body,
                clock,
                exc,
                stream=stream,
                usage=usage,
                by_model=paid_by_model(spend, None, usage),
                tried=spend.tried,
            )
            raise
        except Exception as exc:
            name_decision(exc, plan.decision.id)
            # what it paid for all the same (an answer the content filter withheld, a
            # cascade tier answered before a later one failed), as the gateway logs it;
            # its own `timeout` cut the calls in flight as a cancel does: charged too
            if isinstance(exc, CallTimeout):
                paid = await _cut_cost(dispatcher, asking, spend)
            else:
                paid = total_usage(spend.answered)
            record_failure(
                recorder,
                self.router,
                plan.decision,
                request.body,
                clock,
                exc,
                stream=stream,
                usage=paid,
                by_model=paid_by_model(spend, None, paid),
                tried=spend.tried,
            )
            raise
        return _Sent(recorder, plan, lookup, result, spend)

    async def complete(self, request: _Request, plan: Plan, clock: CallClock) -> Any:
        sent = await self._send(
            request,
            plan,
            clock,
            lambda dispatcher, refined: dispatcher.complete(refined, request.body),
        )
        decision = sent.plan.decision
        if sent.result is None:
            answer = sent.hit()
            record_cache_hit(sent.recorder, self.router, decision, request.body, clock, answer)
            info = routing_info(decision, answer.model, answer.deployment, ())
            info["cost_usd"] = 0.0
            _hit_info(info, sent.lookup)
            return as_completion(await _restored(answer.data(), decision), info)
        served = sent.result
        record_success(
            sent.recorder, self.router, decision, request.body, clock, served, spend=sent.spend
        )
        if sent.lookup is not None:  # after the record (the gateway's reason)
            await sent.lookup.store(served)
        info = routing_info(decision, served.model, served.deployment, served.attempts)
        info["cost_usd"] = served.usage.cost_usd
        info["cache"] = _cache_state(sent.lookup)
        return as_completion(await _restored(served.data, decision), info)

    async def open(self, request: _Request, plan: Plan, clock: CallClock) -> AsyncStream:
        sent = await self._send(
            request,
            plan,
            clock,
            lambda dispatcher, refined: dispatcher.open_stream(refined, request.body),
        )
        decision = sent.plan.decision
        recorder = sent.recorder
        if sent.result is None:
            answer = sent.hit()
            record_cache_hit(recorder, self.router, decision, request.body, clock, answer)
            opened = Opened(answer.model, answer.deployment, replay(answer))
            info = routing_info(decision, answer.model, answer.deployment, ())
            _hit_info(info, sent.lookup)
            return self._tracked(
                AsyncStream(opened, info, request.timeout, edits=_edits_of(decision), owner=self)
            )
        opened = sent.result
        if sent.lookup is not None:
            opened.events = sent.lookup.tee(opened)

        def ended(opened: Opened, error: str | None, text: str, first_ns: int | None) -> None:
            # the first event as read, not the open: a stream silent past the hold is
            # returned before it (its ttft was the hold, or the hold for none at all)
            ttft_ms = None if first_ns is None else (first_ns - clock.started_ns) / 1e6
            record_success(
                recorder,
                self.router,
                decision,
                request.body,
                clock,
                opened,
                error=error,
                ttft_ms=ttft_ms,
                text=text or None,
                spend=sent.spend,
            )

        info = routing_info(decision, opened.model, opened.deployment, opened.attempts)
        info["cache"] = _cache_state(sent.lookup)
        kept = None  # what the decision log keeps of its answer, when it keeps answers
        if recorder is not None and recorder.wants_answers:
            kept = StreamedAnswer(recorder.max_response_chars)
        return self._tracked(
            AsyncStream(
                opened,
                info,
                request.timeout,
                on_end=ended,
                answer=kept,
                edits=_edits_of(decision),
                owner=self,
            )
        )

    def _tracked(self, stream: AsyncStream) -> AsyncStream:
        self._clients.track(stream)
        return stream

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """An `acreate`'s work, ended by `RouterClosed` if the router closes first."""
        return await self._clients.run(coro)

    def stop_thread(self) -> LoopThread | None:
        with self._lock:
            thread, self._held.thread = self._held.thread, None
        if thread is not None:
            thread.stop()
        return thread

    def release_others(
        self, stopped: LoopThread | None, here: asyncio.AbstractEventLoop | None = None
    ) -> list[concurrent.futures.Future[None]]:
        """`LoopClients.release_others`, sparing the loop thread just stopped (it closes
        its own) and one a concurrent `create` started since (its call goes on)."""
        with self._lock:
            spared = {t.loop for t in (stopped, self._held.thread) if t is not None}
            return self._clients.release_others(spared, here)

    def close(self) -> None:
        stopped = self.stop_thread()
        concurrent.futures.wait(self.release_others(stopped), timeout=_RELEASE_S)
        self.log.close()

    def close_later(self, here: asyncio.AbstractEventLoop) -> None:
        """`close` for code running on `here`, which must not block: what the router
        holds (the loop thread, other loops' clients, the log) is let go of now, so a
        call begun once this returns starts afresh and is not ended by it; the waiting
        (the thread's stop, the others' release, the log's flush) is done in a thread."""
        with self._lock:
            thread, self._held.thread = self._held.thread, None
        released = self.release_others(thread, here)  # `thread` runs still: spared
        finish_log = self.log.detach()

        def wait() -> None:
            if thread is not None:
                thread.stop()
            concurrent.futures.wait(released, timeout=_RELEASE_S)
            finish_log()

        threading.Thread(target=wait, name=_CLOSE_THREAD).start()

    async def aclose(self) -> None:
        await self._clients.aclose_current()
        stopped = await asyncio.to_thread(self.stop_thread)
        released = [asyncio.wrap_future(f) for f in self.release_others(stopped)]
        if released:
            await asyncio.wait(released, timeout=_RELEASE_S)
        await asyncio.to_thread(self.log.close)


def _warn_blocking(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=_outside_stacklevel())


def _outside_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside llmroute: a warning names the
    user's line (``router.close()``, a ``with`` block's end), not ours."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


class Completions:
    """``create`` (synchronous) and ``acreate`` (asynchronous), taking the OpenAI chat
    parameters. ``model`` is ``"auto"`` (route it), a route name or a pool model name."""

    def __init__(self, engine: _Engine) -> None:
        self._engine = engine

    @overload
    def create(
        self,
        *,
        messages: Iterable[Any],
        model: str = ...,
        stream: Literal[False] = ...,
        **params: Any,
    ) -> Any: ...

    @overload
    def create(
        self, *, messages: Iterable[Any], model: str = ..., stream: Literal[True], **params: Any
    ) -> Stream: ...

    def create(
        self, *, messages: Iterable[Any], model: str = AUTO, stream: bool = False, **params: Any
    ) -> Any:
        """A ``ChatCompletion`` (a dict without ``openai``), or with ``stream=True`` a
        `Stream` of chunks. The decision runs in the calling thread; the upstream call
        on the router's loop thread."""
        clock = CallClock()
        self._engine.blocking("router.chat.completions.create", "router.chat.completions.acreate")
        request = _Request(model, messages, stream, params)
        load_types()  # here, not on the loop thread every thread's calls share
        plan = request.plan(self._engine.router)
        thread = self._engine.thread()
        try:
            if not request.stream:
                return thread.run(self._engine.complete(request, plan, clock))
            opened = thread.run(self._engine.open(request, plan, clock))
            return Stream(opened, thread, on_read=self._engine.reading)
        except LlmrouteError as exc:  # `RouterClosed` too, raised outside the call
            name_decision(exc, plan.decision.id)
            raise

    @overload
    async def acreate(
        self,
        *,
        messages: Iterable[Any],
        model: str = ...,
        stream: Literal[False] = ...,
        **params: Any,
    ) -> Any: ...

    @overload
    async def acreate(
        self, *, messages: Iterable[Any], model: str = ..., stream: Literal[True], **params: Any
    ) -> AsyncStream: ...

    async def acreate(
        self, *, messages: Iterable[Any], model: str = AUTO, stream: bool = False, **params: Any
    ) -> Any:
        """As `create`, on the running loop; a stream is an `AsyncStream`."""
        clock = CallClock()
        request = _Request(model, messages, stream, params)
        if not types_loaded():  # a second or more, once: not on the caller's loop
            await asyncio.to_thread(load_types)
        # ~ms of CPU on the caller's loop; a long prompt's in a worker thread
        plan = await request.aplan(self._engine.router)
        try:
            if not request.stream:
                return await self._engine.run(self._engine.complete(request, plan, clock))
            return await self._engine.run(self._engine.open(request, plan, clock))
        except LlmrouteError as exc:  # `RouterClosed` too, raised outside the call
            name_decision(exc, plan.decision.id)
            raise


class Chat:
    """``router.chat``: holds ``completions``, as ``openai.OpenAI().chat`` does."""

    def __init__(self, router: Router) -> None:
        self._engine = _Engine(router)
        self.completions = Completions(self._engine)

    def feedback(
        self,
        decision_id: str,
        *,
        score: float | None = None,
        thumbs: Literal["up", "down"] | None = None,
        comment: str | None = None,
    ) -> bool:
        """A user's verdict on an answer (its ``llmroute["decision_id"]``), stored beside
        the decision as ``POST /v1/feedback`` does: `score` in [0, 1] and/or `thumbs`.
        False when the log holds no such decision; `ValueError` for bad values;
        `RuntimeError` when the decision log is off. Blocking (a store round trip).
        Negative feedback (thumbs down, a score under 0.5) also drops the cached answer
        that served the decision (``cache.evict_on_feedback``), as the gateway does."""
        from llmroute.server.errors import GatewayError
        from llmroute.server.feedback import negative_feedback, parse_feedback

        self._engine.blocking("router.chat.feedback", "router.chat.afeedback")

        body: dict[str, Any] = {"decision_id": decision_id, "score": score, "thumbs": thumbs}
        if comment is not None:
            body["comment"] = comment
        try:
            record = parse_feedback(body, time.time())
        except GatewayError as exc:
            raise ValueError(exc.message) from None
        stored = self._engine.log.add_feedback(record)
        if stored and negative_feedback(record):
            self._engine.thread().run(self._engine.evict(record.decision_id))
        return stored

    async def afeedback(
        self,
        decision_id: str,
        *,
        score: float | None = None,
        thumbs: Literal["up", "down"] | None = None,
        comment: str | None = None,
    ) -> bool:
        """`feedback` for async code: the store round trip runs in a worker thread, off
        the event loop."""
        return await asyncio.to_thread(
            self.feedback, decision_id, score=score, thumbs=thumbs, comment=comment
        )

    def close(self) -> None:
        """Stop the loop thread (closing its connections) and release the dispatchers
        of other loops; a later call starts afresh.

        That waits (for other loops' calls to end, the decision log's flush: up to
        seconds), so called in a running event loop (``with`` in ``async def``) it must
        not: what it holds is let go of at once (a call begun after it starts afresh),
        the waiting is handed to a thread, which the interpreter waits for at exit
        (nothing queued is lost), and a `RuntimeWarning` points to ``aclose``."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._engine.close()
            return
        self._engine.close_later(loop)
        warnings.warn(
            "Router.close() was called in a running event loop: it goes on in a thread so "
            "as not to block the loop; use `await router.aclose()` or `async with`, which "
            "wait for it",
            RuntimeWarning,
            stacklevel=_outside_stacklevel(),
        )

    async def aclose(self) -> None:
        """As `close`, and close the running loop's dispatcher first."""
        await self._engine.aclose()
