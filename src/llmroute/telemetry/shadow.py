"""Shadow routing at run time: a sampled share of requests also goes, in the background,
to the registry's reference model (``shadow.reference``); both answers are judged
(`llmroute.telemetry.judge`) and stored as a `ShadowRecord`.

The gateway calls `ShadowRunner.sampled` on the request path (cheap: a few comparisons
and one random draw) and, once the routed answer is complete, `ShadowRunner.submit`,
which schedules the reference call as an asyncio task and returns at once. The client's
response never waits for a shadow, and a shadow never raises into the request.

For a stream, the caller accumulates the streamed answer (`StreamedAnswer`, from the
relayed SSE events, up to `ShadowRunner.answer_chars`) and calls `submit` after the
stream has ended.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from llmroute.decision import Decision
from llmroute.dispatch.budgets import paid_by
from llmroute.dispatch.plan import Plan
from llmroute.errors import AttemptText, ConfigError, LlmrouteError, TelemetryError, error_text
from llmroute.log_every import LogEvery
from llmroute.registry.schema import Registry, RoutePolicy, ShadowSettings
from llmroute.sse import CallNumbers, choice_zero, chunk_of
from llmroute.telemetry.judge import Judge, Judgement, judge_from_settings
from llmroute.telemetry.record import ShadowRecord

if TYPE_CHECKING:
    from llmroute.dispatch.dispatcher import Dispatcher, Served

__all__ = [
    "OUTCOMES",
    "ShadowRunner",
    "StreamedAnswer",
    "answer_text",
    "shadow_body",
]

log = logging.getLogger("llmroute.shadow")

# What `on_outcome` is called with: once per submitted shadow, "sent" (scheduled) or
# "dropped_saturated" (max_concurrency already in flight); and "error" as well when
# the reference call then failed or timed out, "not_stored" when its record was not
# written (the decision log down or not answering).
OUTCOMES = ("sent", "dropped_saturated", "error", "not_stored")
_ERROR_CHARS = 200
_CUT_S = 0.5  # the longest a closing runner waits for the shadows it cancelled to end


def answer_text(chat_completion: Mapping[str, Any]) -> str | None:
    """The first choice's answer: its message content, then its tool calls as JSON
    (``[{"name": ..., "arguments": ...}]``); None when it has neither."""
    choices = chat_completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        return None
    parts: list[str] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        parts.append(content)
    elif isinstance(content, list):
        text = "".join(
            str(p.get("text", "")) for p in content if isinstance(p, Mapping) and "text" in p
        )
        if text:
            parts.append(text)
    calls = _tool_calls(message.get("tool_calls"))
    if calls:
        parts.append(json.dumps(calls, ensure_ascii=False))
    return "\n".join(parts) if parts else None


def _tool_calls(raw: Any) -> list[dict[str, Any]]:
    calls = []
    for call in raw if isinstance(raw, list) else ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            calls.append({"name": function.get("name"), "arguments": function.get("arguments")})
    return calls


# the fields of a place in the calls' JSON, in their order: a call itself, its name's
# characters, its arguments', and what follows it (the next calls)
_CALL, _NAME, _ARGUMENTS, _AFTER = -1, 0, 1, 2
_FIELDS = ((_NAME, "name"), (_ARGUMENTS, "arguments"))
# the least a call takes in `text`, JSON of empty fields: '{"name": "", "arguments": ""}, '
_CALL_CHARS = 31
_JOIN = 64  # a text's pieces, and then its joined pieces, joined so many at a time


class _Text(list[str]):
    """A text as its pieces come: the latest (the list, appended to), and the strings
    they were joined into. Not a string a piece (a streamed piece of 2 characters takes
    ~60 bytes so), nor one string joined again for each (quadratic): each `_JOIN`
    strings of a level are joined into one of the next (`fold`), a character copied
    once a level, and there are a handful."""

    __slots__ = ("_levels",)

    def __init__(self, text: str = "") -> None:
        super().__init__([text] if text else ())
        self._levels: list[list[str]] = []  # joined pieces, then joined joins, ...

    def fold(self) -> None:
        """Join the latest pieces, once there are `_JOIN` of them."""
        joined = "".join(self)
        self.clear()
        for level in self._levels:
            level.append(joined)
            if len(level) < _JOIN:
                return
            joined = "".join(level)
            level.clear()
        self._levels.append([joined])

    def size(self) -> int:
        return sum(map(len, self)) + sum(len(s) for level in self._levels for s in level)

    def text(self) -> str:
        return "".join([s for level in reversed(self._levels) for s in level] + self)


class StreamedAnswer:
    """A stream's answer as `answer_text` reads the same answer whole: choice 0's
    content deltas, and its tool-call deltas joined by index (name and arguments). The
    one reader of a stream's answer for the decision log and the shadow: the gateway's
    relay, a cached stream's replay and the SDK's streams. Of several choices (``n``),
    choice 0's (`choice_zero`), as the cascade's gates read a buffered tier's.

    With a `limit` (what its readers keep of an answer: the decision log's
    ``max_response_chars``, the shadow judge's `max_chars`) it holds no more than what may end up
    within one character past it (of tool calls, up to twice that before what lies past
    it is dropped), as nothing else bounds a stream's length before its
    upstream ends it. `text` is then the whole answer's up to the limit and longer than
    the limit exactly when the whole answer is, whatever order the pieces came in (calls
    interleaved by index, text after calls). Without one nothing is left out."""

    def __init__(self, limit: int | None = None) -> None:
        self._content = _Text()
        self._calls: dict[int, dict[str, _Text]] = {}
        self._most = None if limit is None else limit + 1  # the characters that matter
        self._room = self._most  # content characters still taken: the text comes first
        self._held = 0  # the least the calls held take in `text`
        self._trim_past = self._most  # calls held past it are trimmed; then past twice it
        # (index, field) from which on, in `text`, every call's piece is past the limit
        self._past: tuple[int, int] | None = None
        # once that is within call 0, all that may still come before it is text and, when
        # it is within call 0's arguments (True), call 0's name; None before
        self._name_counts: bool | None = None
        # calls numbered as the fronts number them (`CallNumbers`): those without an
        # index (Gemini's OpenAI-compatible stream) by their id
        self._numbers = CallNumbers()
        self._unindexed = False  # one came: every event is read (its number needs them all)

    def observe(self, event: bytes) -> None:
        """Read one event, as `Opened.events` yields it (``data: <JSON>``); once the text
        (first in the answer) reaches the limit, not even parsed. Calls past the limit
        are not held, but what follows them is read: more text, or an earlier call,
        would come before them; once the limit falls within call 0, only events that
        may hold those are parsed (`_may_count`)."""
        names = self._name_counts
        if self._room != 0 and (names is None or self._unindexed or self._may_count(event, names)):
            self.add(chunk_of(event))

    @staticmethod
    def _may_count(event: bytes, names: bool) -> bool:
        """Whether `event` may hold text or (`names`) a name, told from its bytes: JSON in
        UTF-8 (unless its second byte is 0: `json.loads` reads UTF-16 and UTF-32 too)
        spells a key out unless it escapes a letter (``\\u``). Every call is call 0 or a
        later one (`CallNumbers`); a call without an index is numbered from the calls
        before it and their ids, and once one came, every event is read."""
        return (
            event[7:8] == b"\0"
            or b"\\u" in event
            or b'"content"' in event
            or (names and b'"name"' in event)
            # a call without an index: no more "index" keys than calls ("function"
            # keys; a first delta's "type": "function" is read too), its choice's aside
            or event.count(b'"index"') <= max(event.count(b'"function"'), 1)
            # a call's id beside the chunk's: what a call without an index may go on by
            or event.count(b'"id"') > 1
        )

    def add(self, chunk: Any) -> None:
        """Read one parsed chunk (anything else is passed over)."""
        choice = choice_zero(chunk)
        delta = None if choice is None else choice.get("delta")
        if isinstance(delta, Mapping):
            self._observe_delta(delta)

    def _observe_delta(self, delta: Mapping[str, Any]) -> None:
        content = delta.get("content")
        if isinstance(content, str) and content and self._room != 0:
            self._content.append(self._taken(content))
            if len(self._content) == _JOIN:
                self._content.fold()
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if self._room == 0:
                return
            if not isinstance(call, Mapping):
                continue
            index = self._index(call)
            function = call.get("function")
            if isinstance(function, Mapping):
                self._observe_call(index, function)

    def _index(self, call: Mapping[str, Any]) -> int:
        """A call's number, as the fronts give it (`CallNumbers`). An id is kept only while
        its call may be held (a new one is past any kept)."""
        index = call.get("index")
        if type(index) is not int or index < 0:
            self._unindexed = True
        return self._numbers.number(index, call.get("id"))

    def _observe_call(self, index: int, function: Mapping[str, Any]) -> None:
        past = self._past
        if past is not None and (index, _CALL) >= past:
            return
        slot = self._calls.get(index)
        if slot is None:
            slot = self._calls[index] = {}
            self._held += _CALL_CHARS
        for field, key in _FIELDS:
            piece = function.get(key)
            if isinstance(piece, str) and (past is None or (index, field) < past):
                text = slot.get(key)
                if text is None:
                    text = slot[key] = _Text()
                if piece:
                    text.append(piece)
                    if len(text) == _JOIN:
                        text.fold()
                    self._held += len(piece)
        if self._trim_past is not None and self._held > self._trim_past:
            most = self._most or 0
            self._trim_past = 2 * most  # the first trim at the limit: the cut known sooner
            self._cut_calls(most)

    def _cut_calls(self, most: int) -> None:
        """Leave out what of the calls lies past `most` characters into `text`, counting
        the least each piece may take there (a character a character, a missing field as
        ``""``): more text, or more of an earlier call, only pushes it further. Each cut
        leaves `text` as the whole answer's up to where it differs, at `most` or past."""
        cut = self._trimmed(most)
        if cut is None:
            return
        self._past = cut if self._past is None else min(cut, self._past)
        if self._past <= (0, _ARGUMENTS):
            self._name_counts = self._past == (0, _ARGUMENTS)
        self._numbers.keep_to(self._past[0])  # the calls after it are past it
        for index in list(self._calls):
            if (index, _CALL) > cut:
                del self._calls[index]
            elif (index, _ARGUMENTS) > cut:
                self._calls[index].pop("arguments", None)
        self._held = sum(
            _CALL_CHARS + sum(text.size() for text in slot.values())
            for slot in self._calls.values()
        )

    def _trimmed(self, most: int) -> tuple[int, int] | None:
        """Where in the calls `text` reaches `most` characters at the least, each field
        before it joined and the one it falls in cut there; None when it does not."""
        content = (self._most or 0) - (self._room or 0)
        at = content + (1 if content else 0) + 1  # the calls' JSON starts after a newline
        order = sorted(self._calls)
        for n, index in enumerate(order):
            if n:
                if at >= most:  # a ", " where the whole answer has its next call
                    return (order[n - 1], _AFTER)
                at += 2
            slot = self._calls[index]
            at += len('{"name": ')
            for field, key in _FIELDS:
                at += len(', "arguments": ') if field else 0
                text = slot.get(key)
                piece = "" if text is None else text.text()
                room = max(most - at - 1, 0)  # after its opening quote
                if text is not None:
                    slot[key] = _Text(piece[:room])
                if len(piece) > room or at >= most:
                    return (index, field)
                at += len(piece) + 2
            at += 1
        return None

    def _taken(self, piece: str) -> str:
        """As much of `piece` as the limit leaves room for."""
        if self._room is None:
            return piece
        piece = piece[: self._room]
        self._room -= len(piece)
        return piece

    def text(self) -> str | None:
        message: dict[str, Any] = {"content": self._content.text()}
        if self._calls:
            message["tool_calls"] = [
                {"function": {key: text.text() for key, text in self._calls[i].items()}}
                for i in sorted(self._calls)
            ]
        return answer_text({"choices": [{"message": message}]})


def shadow_body(decision: Decision, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the reference model is sent: the body as dispatch sends it (PII redacted
    when the safety policy says so), unstreamed. Raises `PolicyViolation` for a blocked
    request."""
    sent = dict(Plan(decision, ()).outgoing(dict(body)))
    sent.pop("stream", None)
    sent.pop("stream_options", None)
    return sent


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"


class ShadowRunner:
    """Sends a sampled share of requests to ``settings.reference`` in the background and
    writes a judged `ShadowRecord` for each through `write`.

    `write` is awaited on the event loop once per finished shadow (wrap a synchronous
    store: ``lambda r: asyncio.to_thread(store.write_shadow, r)``); its errors are
    logged, never raised. `on_outcome` is told what became of each submitted shadow
    (`OUTCOMES`), for metrics. `rng` draws the samples (seed it in tests).

    At most ``settings.max_concurrency`` shadows are in flight (reference call, judge and
    write together); a shadow submitted beyond that is dropped, not queued. `aclose`
    waits for the ones in flight, then cancels the rest.
    """

    def __init__(
        self,
        settings: ShadowSettings,
        dispatcher: Dispatcher,
        registry: Registry,
        *,
        write: Callable[[ShadowRecord], Awaitable[None]],
        on_outcome: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if settings.reference not in registry.models:  # the registry refuses this already
            raise ConfigError(f"unknown model {settings.reference!r}", field="shadow.reference")
        self.settings = settings
        self._dispatcher = dispatcher
        self._write = write
        self._on_outcome = on_outcome
        self._rng = rng or random.Random()
        self._routes = None if settings.routes is None else frozenset(settings.routes)
        self.judge: Judge | None = judge_from_settings(settings.judge, dispatcher)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # a decision log that is down fails every shadow's write alike: one line a minute
        self._unstored = LogEvery(60.0)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def answer_chars(self) -> int:
        """How much of a routed answer the shadow reads: what its judge reads (`max_chars`;
        none without one, the answer then only stored, cut as the decision log cuts
        answers). A shadowed stream's is read that far, one character past telling a cut
        one, as for the decision log (`StreamedAnswer`)."""
        return 0 if self.judge is None else self.judge.max_chars

    @property
    def models(self) -> tuple[str, ...]:
        """Every pool model a shadowed request's text goes to: the reference, and the
        judge's model when one judges."""
        judge = self.settings.judge
        if judge is not None and judge.kind == "model" and judge.model is not None:
            return (self.settings.reference, judge.model)
        return (self.settings.reference,)

    def sampled(self, decision: Decision) -> bool:
        """Whether to shadow this request: not blocked, not rerouted by safety to a
        guarded model (its text must not reach another model), on a shadowed route,
        routed to a model other than the reference, and drawn at ``settings.rate``."""
        if self._closed or decision.blocked:
            return False
        if decision.safety is not None and decision.safety.model is not None:
            return False
        if self._routes is not None and decision.route not in self._routes:
            return False
        if decision.model == self.settings.reference:
            return False
        return self._rng.random() < self.settings.rate

    def submit(
        self,
        decision: Decision,
        body: Mapping[str, Any],
        routed_model: str,
        routed_answer: str | None,
        started_ts: float,
    ) -> bool:
        """Schedule the shadow of one answered request; True when it was scheduled.

        `body` is the request as sent upstream (the client's body is fine too: the
        decision's redaction is applied again); `routed_model` the pool model that
        answered (``Served.model``); `routed_answer` its text (`answer_text`, or
        `StreamedAnswer.text` for a stream); `started_ts` the request's arrival (Unix
        seconds), stored as the record's ``ts``. Never awaits the reference call and
        never raises; must be called from the event loop's thread.
        """
        try:
            return self._submit(decision, body, routed_model, routed_answer, started_ts)
        except Exception:
            log.exception("shadow of %s not scheduled", decision.id)
            return False

    def _submit(
        self,
        decision: Decision,
        body: Mapping[str, Any],
        routed_model: str,
        routed_answer: str | None,
        started_ts: float,
    ) -> bool:
        if self._closed or decision.blocked or routed_model == self.settings.reference:
            return False
        if len(self._tasks) >= self.settings.max_concurrency:
            self._outcome("dropped_saturated")
            return False
        try:  # before the coroutine exists, so that none is left unawaited
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("shadow of %s not scheduled: no running event loop", decision.id)
            return False
        sent = shadow_body(decision, body)
        # the calls outlive the request: not the originals of what safety redacted
        job = self._run(decision.kept(), sent, routed_model, routed_answer, started_ts)
        task = loop.create_task(job, name=f"shadow-{decision.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._outcome("sent")
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop taking shadows; wait up to `timeout` seconds for those in flight, then
        cancel the rest (their records are not written)."""
        self._closed = True
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "stopping: cancelled %d shadow request(s) still in flight after %g s; "
                "their shadow records are not written",
                len(pending),
                round(timeout, 2),
            )
            # bounded: one cancelled while its record is written in a thread ends with it
            ended, _ = await asyncio.wait(pending, timeout=_CUT_S)
            for task in ended:
                if not task.cancelled():
                    task.exception()

    # -- the background task ---------------------------------------------------------------

    async def _run(
        self,
        decision: Decision,
        sent: dict[str, Any],
        routed_model: str,
        routed_answer: str | None,
        started_ts: float,
    ) -> None:
        started = time.perf_counter()
        with paid_by(None):  # the operator's cost (reference and judge), not the client key's
            served, error = await self._reference(decision, sent)
            latency_ms = round((time.perf_counter() - started) * 1000, 1)
            reference_answer = None if served is None else answer_text(served.data)
            judgement: Judgement | None = None
            if error is not None:
                self._outcome("error")
            elif self.judge is not None:
                judgement = await self._judge(sent, routed_answer, reference_answer)
        extra: dict[str, Any] = {}
        if served is not None and served.attempts:
            extra["reference_attempts"] = list(served.attempts)
        if judgement is not None:
            extra.update(judgement.extra)
        record = ShadowRecord(
            decision_id=decision.id,
            ts=started_ts,
            route=decision.route,
            routed_model=routed_model,
            reference_model=self.settings.reference,
            routed_answer=routed_answer,
            reference_answer=reference_answer,
            judge=None if self.judge is None else self.judge.name,
            routed_ok=None if judgement is None else judgement.routed_ok,
            judge_score=None if judgement is None else judgement.score,
            judge_error=error if judgement is None else judgement.error,
            reference_latency_ms=latency_ms if served is not None else None,
            reference_cost_usd=None if served is None else served.usage.cost_usd,
            extra=extra,
        )
        try:
            await self._write(record)
        except TelemetryError as exc:  # the store failed (its message masks its URL)
            self._outcome("not_stored")
            held = self._unstored.due("store")
            if held is not None:
                log.warning(
                    "could not store the shadow of %s: %s%s",
                    decision.id,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    LogEvery.since(held),
                )
        except Exception:
            self._outcome("not_stored")
            log.exception("could not store the shadow of %s", decision.id)

    async def _reference(
        self, decision: Decision, sent: dict[str, Any]
    ) -> tuple[Served | None, str | None]:
        """The reference model's answer, or why there is none. The plan keeps the
        decision's reasoning verdict (so the reference gets the same thinking settings)
        but not its safety outcome: `sent` is already redacted."""
        reference = self.settings.reference
        plan = Plan(
            dataclasses.replace(decision, model=reference, safety=None),
            (reference,),
            RoutePolicy(retries=0),
        )
        timeout = self.settings.timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._dispatcher.complete(plan, sent), None
        except TimeoutError:
            return None, f"reference timed out after {timeout:g}s"
        except LlmrouteError as exc:
            said = error_text(exc)  # the upstream's words: kept as telemetry.prompts says
            return None, AttemptText(
                _short(f"reference failed: {said}"), _short(f"reference failed: {said.outline}")
            )
        except Exception as exc:
            log.exception("shadow reference call for %s failed", decision.id)
            return None, f"reference failed: {type(exc).__name__}"

    async def _judge(
        self, sent: dict[str, Any], routed: str | None, reference: str | None
    ) -> Judgement:
        judge = self.judge
        assert judge is not None
        timeout = self.settings.timeout
        try:
            async with asyncio.timeout(timeout):
                return await judge.judge(sent, routed, reference)
        except TimeoutError:
            return Judgement(judge.name, None, error=f"judge timed out after {timeout:g}s")
        except Exception as exc:  # a judge should not raise; a bug must not lose the record
            log.exception("shadow judge %s failed", judge.name)
            return Judgement(judge.name, None, error=f"judge failed: {type(exc).__name__}")

    def _outcome(self, outcome: str) -> None:
        if self._on_outcome is None:
            return
        try:
            self._on_outcome(outcome)
        except Exception:
            log.exception("shadow outcome callback failed")
