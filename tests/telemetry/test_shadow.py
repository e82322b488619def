"""`ShadowRunner` against real fake upstreams on 127.0.0.1: sampling and its filters,
background reference calls that never hold up the caller, bounded concurrency,
reference failures and timeouts, shutdown, and the records written."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import random
import socket
import time
import tracemalloc
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from unittest.mock import patch

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute.decision import Decision, SafetyOutcome
from llmroute.dispatch import Dispatcher, Plan
from llmroute.errors import TelemetryError, outline_of
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import JudgeSettings, Registry, ShadowSettings
from llmroute.sse import CallNumbers, chunk_of
from llmroute.telemetry.record import ShadowRecord
from llmroute.telemetry.service import as_kept
from llmroute.telemetry.shadow import ShadowRunner, StreamedAnswer, answer_text, shadow_body

T = TypeVar("T")
DELAY = 1.0  # seconds the slow reference takes

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  down: {kind: openai, base_url: "%(dead)s", timeout_s: 5}
models:
  cheap: {provider: up, model: cheap}
  ref: {provider: up, model: ref}
  slow: {provider: up, model: 'slow?delay=%(delay)s'}
  broken: {provider: up, model: 'broken?status=500'}
  quoting: {provider: up, model: 'quoting?status=400&quote=1'}
  dead: {provider: down, model: dead}
  judge: {provider: up, model: judge}
routes:
  - {name: maths, examples: [add these numbers], target: cheap}
  - {name: chat, examples: [hello there], target: cheap}
default: {target: cheap}
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as up:
        yield up


@pytest.fixture(scope="module")
def registry(upstream: FakeUpstream) -> Registry:
    text = REGISTRY % {
        "url": upstream.url,
        "dead": f"http://127.0.0.1:{_closed_port()}/v1",
        "delay": DELAY,
    }
    return parse_registry(text).registry


def _decision(
    route: str = "maths", model: str = "cheap", safety: SafetyOutcome | None = None
) -> Decision:
    return Decision(
        id=f"d-{route}-{model}",
        route=route,
        model=model,
        layer="intent",
        confidence=0.9,
        margin=0.3,
        reason="test",
        registry_version="v1",
        signals=(),
        encode_us=0.0,
        total_us=0.0,
        safety=safety,
    )


BODY: dict[str, Any] = {
    "model": "auto",
    "messages": [{"role": "user", "content": "compute 40 + 2 = 42"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


class Run:
    """A runner with its dispatcher, the records it wrote and the outcomes it told."""

    def __init__(self, registry: Registry, **settings: Any) -> None:
        self.settings = ShadowSettings(**{"rate": 1.0, "reference": "ref", **settings})
        self.dispatcher = Dispatcher(registry, build_providers(registry))
        self.records: list[ShadowRecord] = []
        self.outcomes: list[str] = []
        self.runner = ShadowRunner(
            self.settings,
            self.dispatcher,
            registry,
            write=self.write,
            on_outcome=self.outcomes.append,
            rng=random.Random(11),
        )

    async def write(self, record: ShadowRecord) -> None:
        self.records.append(record)

    def submit(self, decision: Decision | None = None, body: dict[str, Any] = BODY) -> bool:
        return self.runner.submit(decision or _decision(), body, "cheap", "#### 42", 1234.5)


def _run(registry: Registry, job: Callable[[Run], Awaitable[T]], **settings: Any) -> T:
    async def main() -> T:
        run = Run(registry, **settings)
        try:
            return await job(run)
        finally:
            await run.runner.aclose(5)
            await run.dispatcher.aclose()

    return asyncio.run(main())


# -- sampling ------------------------------------------------------------------------------


def test_the_sampling_rate_is_respected(registry: Registry) -> None:
    async def job(run: Run) -> int:
        return sum(run.runner.sampled(_decision()) for _ in range(2000))

    assert abs(_run(registry, job, rate=0.2) / 2000 - 0.2) < 0.03
    assert _run(registry, job, rate=0.0) == 0
    assert _run(registry, job, rate=1.0) == 2000


def test_sampling_filters(registry: Registry) -> None:
    async def job(run: Run) -> dict[str, bool]:
        sampled = run.runner.sampled
        return {
            "maths": sampled(_decision("maths")),
            "chat": sampled(_decision("chat")),
            "routed to the reference": sampled(_decision("maths", "ref")),
            "blocked": sampled(_decision(safety=SafetyOutcome("strict", "block"))),
            "rerouted by safety": sampled(
                _decision(safety=SafetyOutcome("strict", "route", model="judge"))
            ),
            "redacted": sampled(_decision(safety=SafetyOutcome("strict", "redact"))),
        }

    assert _run(registry, job, routes=("maths",)) == {
        "maths": True,
        "chat": False,
        "routed to the reference": False,
        "blocked": False,
        "rerouted by safety": False,
        "redacted": True,
    }
    assert _run(registry, job)["chat"] is True  # no route filter: every route


# -- submit --------------------------------------------------------------------------------


def test_submit_returns_at_once_and_the_record_arrives_later(
    registry: Registry, upstream: FakeUpstream
) -> None:
    async def job(run: Run) -> tuple[bool, float, int, list[ShadowRecord], list[str]]:
        started = time.perf_counter()
        scheduled = run.submit()
        elapsed = time.perf_counter() - started
        written_at_once = len(run.records)
        await run.runner.aclose(5 * DELAY)
        return scheduled, elapsed, written_at_once, run.records, run.outcomes

    upstream.requests.clear()
    judge = JudgeSettings(kind="exact")
    scheduled, elapsed, written_at_once, records, outcomes = _run(
        registry, job, reference="slow", judge=judge
    )
    assert outcomes == ["sent"]
    assert scheduled and written_at_once == 0
    # a submit that waited for the reference would take DELAY; the margin is for a
    # loaded machine's stalls, which can pass 50 ms
    assert elapsed < 0.5 * DELAY
    [record] = records
    assert (record.decision_id, record.ts, record.route) == ("d-maths-cheap", 1234.5, "maths")
    assert (record.routed_model, record.reference_model) == ("cheap", "slow")
    assert record.routed_answer == "#### 42"
    assert record.reference_answer == "echo: compute 40 + 2 = 42"
    assert record.judge == "exact" and record.routed_ok is True and record.judge_score == 1.0
    assert record.judge_error is None
    assert record.reference_latency_ms is not None and record.reference_latency_ms >= 900 * DELAY
    assert record.reference_cost_usd is not None
    # the reference got the request unstreamed
    [sent] = upstream.calls_to(f"slow?delay={DELAY}")
    assert "stream" not in sent.body and "stream_options" not in sent.body
    assert sent.body["messages"] == BODY["messages"]


def test_the_reference_gets_the_redacted_body(registry: Registry, upstream: FakeUpstream) -> None:
    redacted = {"messages": [{"role": "user", "content": "mail <EMAIL_1> about 40 + 2"}]}
    safety = SafetyOutcome("pii", "redact", fired=("pii:EMAIL",), redacted_body=redacted)
    body = {"messages": [{"role": "user", "content": "mail ann@example.com about 40 + 2"}]}
    upstream.requests.clear()

    async def job(run: Run) -> list[ShadowRecord]:
        assert run.submit(_decision(safety=safety), body)
        await run.runner.aclose(5)
        return run.records

    [record] = _run(registry, job)
    [sent] = upstream.calls_to("ref")
    assert sent.body["messages"] == redacted["messages"]
    assert record.reference_answer == "echo: mail <EMAIL_1> about 40 + 2"
    assert record.judge is None and record.routed_ok is None and record.judge_error is None
    assert shadow_body(_decision(safety=safety), body)["messages"] == redacted["messages"]


class _Originals(dict[str, str]):
    """A restore mapping a weak reference can watch (a plain dict cannot be one's)."""


class _Text(str):
    """The routed text, likewise."""


def test_a_shadow_in_flight_holds_no_original_safety_redacted(
    registry: Registry, upstream: FakeUpstream
) -> None:
    """A profile that restores answers keeps each value it replaced in the decision
    (`restore`), and the decision keeps the text it routed on: both for the request's
    own answer. The shadow's reference and judge calls outlive the request, and held the
    whole decision throughout; they need only its redacted body, built at submit."""
    redacted = {"messages": [{"role": "user", "content": "mail <EMAIL_1> about 40 + 2"}]}
    body = {"messages": [{"role": "user", "content": "mail ann@example.com about 40 + 2"}]}

    def submitted(run: Run) -> tuple[weakref.ref[_Originals], weakref.ref[_Text]]:
        restore = _Originals({"<EMAIL_1>": "ann@example.com"})
        text = _Text("mail ann@example.com about 40 + 2")
        safety = SafetyOutcome("pii", "redact", redacted_body=redacted, restore=restore)
        decision = dataclasses.replace(_decision(safety=safety), routed=(id(body), text))
        assert run.submit(decision, body)
        return weakref.ref(restore), weakref.ref(text)

    async def job(run: Run) -> list[ShadowRecord]:
        restore, text = submitted(run)
        await asyncio.sleep(0)  # the shadow has begun: its reference call is under way
        gc.collect()
        assert run.runner.in_flight == 1
        assert restore() is None and text() is None
        await run.runner.aclose(5 * DELAY)
        return run.records

    upstream.requests.clear()
    [record] = _run(registry, job, reference="slow", judge=JudgeSettings(kind="exact"))
    assert record.decision_id == "d-maths-cheap" and record.route == "maths"
    assert record.reference_answer == "echo: mail <EMAIL_1> about 40 + 2"
    [sent] = upstream.calls_to(f"slow?delay={DELAY}")
    assert sent.body["messages"] == redacted["messages"]


def test_a_saturated_runner_drops_and_counts(registry: Registry) -> None:
    async def job(run: Run) -> tuple[list[bool], list[str], int]:
        results = [run.submit(), run.submit()]
        outcomes = list(run.outcomes)
        in_flight = run.runner.in_flight
        await run.runner.aclose(5 * DELAY)
        assert len(run.records) == 1
        return results, outcomes, in_flight

    results, outcomes, in_flight = _run(registry, job, reference="slow", max_concurrency=1)
    assert results == [True, False]
    assert outcomes == ["sent", "dropped_saturated"]
    assert in_flight == 1


@pytest.mark.parametrize(
    ("reference", "expected"),
    [("broken", "reference failed: "), ("dead", "reference failed: ")],
)
def test_a_failing_reference_is_recorded_as_an_error(
    registry: Registry, reference: str, expected: str
) -> None:
    async def job(run: Run) -> tuple[list[ShadowRecord], list[str]]:
        assert run.submit()
        await run.runner.aclose(5)
        return run.records, run.outcomes

    [record], outcomes = _run(registry, job, reference=reference, judge=JudgeSettings(kind="exact"))
    assert outcomes == ["sent", "error"]
    assert record.reference_answer is None and record.routed_answer == "#### 42"
    assert record.routed_ok is None and record.judge_score is None
    assert record.judge_error is not None and record.judge_error.startswith(expected)
    assert len(record.judge_error) <= 200
    assert record.reference_cost_usd is None


@pytest.mark.parametrize("prompts", ["off", "hash", "redacted", "full"])
def test_a_reference_failures_upstream_words_are_kept_only_with_full_prompts(
    registry: Registry, prompts: str
) -> None:
    """The reference's 400 quotes the request (as a validation error may): the shadow
    row's `judge_error` keeps the upstream's words only as the decision row's attempts
    do (`telemetry.prompts: full`); its status stays."""

    async def job(run: Run) -> list[ShadowRecord]:
        assert run.submit()
        await run.runner.aclose(5)
        return run.records

    [record] = _run(registry, job, reference="quoting", judge=JudgeSettings(kind="exact"))
    assert record.judge_error is not None and "40 + 2" in record.judge_error
    kept = as_kept(record, "full", 1000, prompts)  # type: ignore[arg-type]
    assert kept.judge_error is not None
    assert kept.judge_error.startswith(
        "reference failed: provider 'up': upstream returned HTTP 400"
    )
    assert ("40 + 2" in kept.judge_error) is (prompts == "full")
    assert outline_of(record.judge_error) == kept.judge_error or prompts == "full"


def test_a_slow_reference_times_out(registry: Registry) -> None:
    async def job(run: Run) -> tuple[list[ShadowRecord], list[str]]:
        assert run.submit()
        await run.runner.aclose(5)
        return run.records, run.outcomes

    [record], outcomes = _run(registry, job, reference="slow", timeout=0.1 * DELAY)
    assert outcomes == ["sent", "error"]
    assert record.judge_error == f"reference timed out after {0.1 * DELAY:g}s"


def test_aclose_cancels_what_is_still_in_flight(registry: Registry) -> None:
    async def job(run: Run) -> tuple[float, list[ShadowRecord]]:
        assert run.submit()
        started = time.perf_counter()
        await run.runner.aclose(0.05 * DELAY)
        elapsed = time.perf_counter() - started
        assert run.runner.in_flight == 0
        assert not run.submit()  # closed: nothing more is taken
        assert not run.runner.sampled(_decision())
        return elapsed, run.records

    elapsed, records = _run(registry, job, reference="slow")
    assert elapsed < 0.5 * DELAY and records == []


def test_a_failing_write_is_logged_not_raised(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    async def job(run: Run) -> None:
        async def broken(record: ShadowRecord) -> None:
            raise OSError("disk full")

        run.runner._write = broken  # the seam under test: the write callback
        assert run.submit()
        await run.runner.aclose(5)

    _run(registry, job)
    assert "could not store the shadow of d-maths-cheap" in caplog.text


def test_a_log_that_is_down_is_said_once_not_traced_for_each_shadow(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """With the decision log down every shadow's write fails alike: each was a
    traceback (one a request at ``rate: 1.0``); now one line a minute, each counted."""

    async def job(run: Run) -> list[str]:
        async def down(record: ShadowRecord) -> None:
            raise TelemetryError("cannot write a shadow record: no connection to PostgreSQL")

        run.runner._write = down
        assert all([run.submit() for _ in range(3)])
        await run.runner.aclose(5)
        return run.outcomes

    with caplog.at_level(logging.WARNING, logger="llmroute.shadow"):
        outcomes = _run(registry, job)
    assert outcomes.count("not_stored") == 3
    said = [r for r in caplog.records if "could not store the shadow" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None
    assert "no connection to PostgreSQL" in said[0].getMessage()


def test_a_model_judge_that_cannot_answer_leaves_the_pair_unjudged(registry: Registry) -> None:
    """The fake upstream echoes the prompt back, which is no JSON verdict."""

    async def job(run: Run) -> list[ShadowRecord]:
        assert run.submit()
        await run.runner.aclose(5)
        return run.records

    [record] = _run(registry, job, judge=JudgeSettings(kind="model", model="judge"))
    assert record.judge == "model:judge" and record.routed_ok is None
    assert record.judge_error == "the judge's reply is not a JSON verdict"
    assert record.reference_answer == "echo: compute 40 + 2 = 42"
    assert record.extra["routed_position"] in ("A", "B")


def test_submit_skips_an_answer_from_the_reference_itself(registry: Registry) -> None:
    async def job(run: Run) -> bool:
        return run.runner.submit(_decision(), BODY, "ref", "x", 0.0)

    assert _run(registry, job) is False


def test_submit_outside_an_event_loop_does_not_raise(registry: Registry) -> None:
    run = Run(registry)
    assert run.submit() is False
    assert run.outcomes == []
    asyncio.run(run.dispatcher.aclose())


# -- answers -------------------------------------------------------------------------------


def test_answer_text() -> None:
    def completion(message: dict[str, Any]) -> dict[str, Any]:
        return {"choices": [{"index": 0, "message": message}]}

    assert answer_text(completion({"role": "assistant", "content": "42"})) == "42"
    assert answer_text(completion({"content": None})) is None
    assert answer_text({"choices": []}) is None
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a":1}'}}
    text = answer_text(completion({"content": None, "tool_calls": [call]}))
    assert text is not None and json.loads(text) == [{"name": "add", "arguments": '{"a":1}'}]
    parts = completion({"content": [{"type": "text", "text": "4"}, {"type": "text", "text": "2"}]})
    assert answer_text(parts) == "42"


@pytest.mark.parametrize(
    ("judge", "chars"),
    [
        (None, 0),
        (JudgeSettings(kind="exact"), 100_000),
        (JudgeSettings(kind="model", model="judge", max_chars=300), 300),
    ],
    ids=["none", "exact", "model"],
)
def test_a_shadow_reads_of_an_answer_what_its_judge_reads(
    registry: Registry, judge: JudgeSettings | None, chars: int
) -> None:
    """A shadowed stream's answer was read whole for the judge: the judge reads no more
    than its `max_chars` (the model judge clips each answer there, the exact judge judges
    none longer), so a stream's is read no further (and is stored cut, as any)."""

    async def job(run: Run) -> int:
        return run.runner.answer_chars

    assert _run(registry, job, judge=judge) == chars


def test_streamed_answer_accumulates_a_real_stream(registry: Registry) -> None:
    async def job(run: Run) -> tuple[str | None, str | None]:
        plan = Plan(_decision(), ("cheap",))
        opened = await run.dispatcher.open_stream(plan, dict(BODY))
        streamed = StreamedAnswer()
        async for event in opened.events:
            streamed.observe(event)
        served = await run.dispatcher.complete(plan, {**BODY, "stream": False})
        return streamed.text(), answer_text(served.data)

    streamed, whole = _run(registry, job)
    assert streamed is not None and whole is not None
    assert streamed.split() == whole.split()  # the fake streams word by word


def test_streamed_answer_joins_tool_call_deltas() -> None:
    def event(delta: dict[str, Any]) -> bytes:
        chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        return f"data: {json.dumps(chunk)}\n\n".encode()

    streamed = StreamedAnswer()
    for delta in (
        {"role": "assistant", "content": None},
        {"tool_calls": [{"index": 0, "function": {"name": "add", "arguments": '{"a"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
    ):
        streamed.observe(event(delta))
    streamed.observe(b"data: [DONE]\n\n")
    text = streamed.text()
    assert text is not None and json.loads(text) == [{"name": "add", "arguments": '{"a":1}'}]
    assert StreamedAnswer().text() is None


def test_streamed_answer_reads_choice_0_and_passes_over_odd_chunks() -> None:
    """Chunks of several choices name theirs by index; a chunk of another shape is
    passed over (an upstream's, read on the request path: it must never raise)."""
    streamed = StreamedAnswer()
    for chunk in (
        {"choices": [{"index": 1, "delta": {"content": "other"}}]},
        {"choices": [{"index": 1, "delta": {}}, {"index": 0, "delta": {"content": "mine"}}]},
        {"choices": 5},
        {"choices": [{"index": 0, "delta": {"tool_calls": 5}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [5, {"function": 5}]}}]},
        {"choices": [{"index": 0, "delta": "x"}]},
        [],
        None,
    ):
        streamed.add(chunk)
    assert streamed.text() == "mine"


def _delta_chunks() -> list[dict[str, Any]]:
    """A stream's answer: text, then two tool calls, JSON escapes and non-ASCII in both."""

    def calls(index: int, **function: str) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, "function": function}]}

    deltas = [
        {"role": "assistant", "content": "héllo "},
        {"content": 'wörld "quoted"\n'},
        calls(0, name="add", arguments='{"a": '),
        calls(0, arguments='"ü\\"}'),
        calls(1, name="sub", arguments="{}"),
    ]
    return [{"choices": [{"index": 0, "delta": delta}]} for delta in deltas]


def test_a_streamed_answer_with_a_limit_is_the_whole_answer_up_to_it() -> None:
    """With a limit (the log's ``max_response_chars``) a stream's answer stops growing one
    character past it: up to the limit, what the row stores, it is the whole answer's,
    and longer than the limit only when the whole answer is."""
    whole = StreamedAnswer()
    for chunk in _delta_chunks():
        whole.add(chunk)
    full = whole.text()
    assert full is not None and '"sub"' in full
    for limit in range(len(full) + 2):
        cut = StreamedAnswer(limit)
        for chunk in _delta_chunks():
            cut.add(chunk)
        text = cut.text() or ""
        assert text[:limit] == full[:limit], limit
        assert (len(text) > limit) == (len(full) > limit), limit


def _cut_alike(chunks: list[dict[str, Any]], limits: range | None = None) -> None:
    """`StreamedAnswer(limit)` read from `chunks` is the whole answer's text up to the
    limit, and longer than the limit exactly when the whole answer is (what the decision
    log stores, and what a judge told of a cut reads, are then the whole answer's)."""
    whole = StreamedAnswer()
    for chunk in chunks:
        whole.add(chunk)
    full = whole.text() or ""
    for limit in limits or range(len(full) + 2):
        cut = StreamedAnswer(limit)
        for chunk in chunks:
            cut.add(chunk)
        text = cut.text() or ""
        assert text[: limit + 1] == full[: limit + 1], limit  # one past: what tells a cut
        assert (len(text) > limit) == (len(full) > limit), limit
        assert len(full) > limit or text == full, limit


def _deltas(*deltas: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"choices": [{"index": 0, "delta": delta}]} for delta in deltas]


def _call(index: int, **function: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "function": function}]}


@pytest.mark.parametrize(
    "deltas",
    [
        # call 1's pieces before call 0's, though call 0 comes first in the answer
        [_call(1, name="second", arguments="b" * 40), _call(0, name="first", arguments="a" * 40)],
        # calls interleaved by index
        [_call(i % 3, arguments=f"<{i}>" * 4) for i in range(12)],
        # text after the calls: the text comes first in the answer
        [_call(0, name="f", arguments="x" * 60), {"content": "text " * 12}],
        # a call's name after its arguments; a name that is empty
        [_call(0, arguments='{"a": "ü\\""}' * 5), _call(0, name=""), _call(1, name="g")],
        # calls by descending index, one delta carrying two
        [
            {"tool_calls": [{"index": i, "function": {"name": f"n{i}"}}, {"index": i - 1}]}
            for i in range(9, 0, -1)
        ],
    ],
    ids=["call-1-first", "interleaved", "text-after-calls", "name-after-arguments", "descending"],
)
def test_a_streamed_answer_with_a_limit_is_the_whole_answer_up_to_it_in_any_order(
    deltas: list[dict[str, Any]],
) -> None:
    """Pieces out of the answer's order (several calls interleaved, text after calls) were
    taken as they came: one character past the limit was the first pieces', not the
    answer's first characters."""
    _cut_alike(_deltas(*deltas))


@pytest.mark.parametrize("index", [True, False, None, "1", 1.0])
def test_a_call_index_that_is_not_an_int_is_call_0(index: Any) -> None:
    """A bool is no index, as for a choice (`choice_zero`) and the fronts: ``true`` was
    read as call 1, its arguments a call of their own."""
    streamed = StreamedAnswer()
    for delta in _deltas(
        _call(0, name="f"), {"tool_calls": [{"index": index, "function": {"arguments": "{}"}}]}
    ):
        streamed.add(delta)
    assert json.loads(streamed.text() or "") == [{"name": "f", "arguments": "{}"}]


_PIECE = st.text(alphabet=st.sampled_from('ab"\\\nü€'), max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(lambda text: {"content": text}, _PIECE),
            st.builds(
                lambda index, function: _call(index, **function),
                st.integers(0, 3),
                st.fixed_dictionaries({}, optional={"name": _PIECE, "arguments": _PIECE}),
            ),
        ),
        max_size=12,
    )
)
def test_a_streamed_answer_with_a_limit_is_cut_as_the_whole_answer(
    deltas: list[dict[str, Any]],
) -> None:
    _cut_alike(_deltas(*deltas))


# what JSON escapes (a quote, a backslash, a control character) takes more than a
# character in `text`; an astral character and the halves of a pair are one each
_ODD_PIECE = st.text(alphabet=st.sampled_from('a "\\\x01\U0001f600\ud83d\ude00'), max_size=12)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(lambda text: {"content": text}, _ODD_PIECE),
            st.builds(
                lambda index, function: {"tool_calls": [{"index": index, "function": function}]},
                st.one_of(
                    st.integers(-1, 3), st.just(10**18), st.sampled_from([None, "1", 1.0, True])
                ),
                st.fixed_dictionaries({}, optional={"name": _ODD_PIECE, "arguments": _ODD_PIECE}),
            ),
        ),
        max_size=16,
    )
)
def test_a_streamed_answer_with_a_limit_is_cut_as_the_whole_answer_whatever_it_holds(
    deltas: list[dict[str, Any]],
) -> None:
    """Escaped and astral characters, halves of a pair, odd and huge call indexes."""
    _cut_alike(_deltas(*deltas))


def _read_alike(events: list[bytes], limits: range | None = None) -> None:
    """`_cut_alike` for events read as the relay reads them (`StreamedAnswer.observe`)."""
    whole = StreamedAnswer()
    for event in events:
        whole.observe(event)
    full = whole.text() or ""
    for limit in limits or range(len(full) + 2):
        cut = StreamedAnswer(limit)
        for event in events:
            cut.observe(event)
        text = cut.text() or ""
        assert text[: limit + 1] == full[: limit + 1], limit
        assert (len(text) > limit) == (len(full) > limit), limit
        assert len(full) > limit or text == full, limit


def _event(delta: dict[str, Any], **dumps: Any) -> bytes:
    chunk = {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": delta}]}
    return b"data: " + json.dumps(chunk, **dumps).encode("utf-8", "surrogatepass") + b"\n\n"


# what, once the calls are cut within call 0's arguments, still comes before the cut: text
# and call 0's name however their keys are written (in UTF-16 too, which `json.loads`
# reads); a call of a negative index, however its number is spaced, is no index: the last
# call's (call 0's here), its name before the cut
_BEFORE_THE_CUT = {
    "text": _event({"content": "late"}),
    "text-escaped-key": b'data: {"choices": [{"index": 0, "delta": {"\\u0063ontent": "x"}}]}\n\n',
    "text-utf-16": b"data: "  # (with no line end: an event's two are no UTF-16)
    + json.dumps({"choices": [{"index": 0, "delta": {"content": "late"}}]}).encode("utf-16-le"),
    "name": _event(_call(0, name="g"), separators=(",", ":")),
    "name-escaped-key": b'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, '
    b'"function": {"n\\u0061me": "g"}}]}}]}\n\n',
    "negative-index": _event(_call(-1, name="h")),
    "negative-index-spaced": b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":\n\t-1,'
    b'"function":{"arguments":"{}"}}]}}]}\n\n',
    "negative-index-in-a-list": b'data: {"choices":[{"index":0,"delta":{"tool_calls":[-1, {"index":'
    b'-2,"function":{"name":"h"}}]}}]}\n\n',
}


@pytest.mark.parametrize("late", list(_BEFORE_THE_CUT.values()), ids=list(_BEFORE_THE_CUT))
def test_a_stream_cut_within_call_0_still_reads_what_comes_before_the_cut(late: bytes) -> None:
    """Once the calls are cut within call 0, events that cannot change `text` are passed
    over unparsed; these can, and must still be read."""
    start = _event(_call(0, name="f", arguments=""))
    pieces = [_event(_call(0, arguments='{"a": 1, '), ensure_ascii=False) for _ in range(40)]
    _read_alike([start, *pieces, late, *pieces], range(0, 400, 7))
    _read_alike([start, *pieces[:3], late, *pieces], range(0, 400, 7))


def test_a_stream_cut_within_call_0_is_not_parsed_on() -> None:
    """Past the limit in call 0's arguments every event was parsed (~5 µs each), as more
    text or an earlier call would come before the cut; events that cannot hold them are
    now told by their bytes (the review: 2,001 events at limit 1,000, 0.7 ms before the
    any-order cut, 9.8 ms with it)."""
    events = [_event(_call(0, name="f", arguments=""))]
    events += [_event(_call(0, arguments='{"a": 1, '), separators=(",", ":"))] * 2000
    parsed = []
    with patch(
        "llmroute.telemetry.shadow.chunk_of", side_effect=lambda e: parsed.append(e) or chunk_of(e)
    ):
        read = StreamedAnswer(1000)
        for event in events:
            read.observe(event)
    text = read.text() or ""
    assert len(text) > 1000 and text.startswith('[{"name": "f", "arguments": "{\\"a\\": 1, ')
    assert len(parsed) < 400


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(lambda text: {"content": text}, _PIECE),
            st.builds(
                lambda index, function: _call(index, **function),
                st.integers(-2, 2),
                st.fixed_dictionaries({}, optional={"name": _PIECE, "arguments": _PIECE}),
            ),
        ),
        max_size=12,
    ),
    st.sampled_from([{}, {"ensure_ascii": False}, {"separators": (",", ":")}, {"indent": 1}]),
)
def test_a_streamed_answer_read_from_events_is_cut_as_the_whole_answer(
    deltas: list[dict[str, Any]], dumps: dict[str, Any]
) -> None:
    """Read from events as the relay reads them, their JSON written as upstreams may."""
    _read_alike([_event(delta, **dumps) for delta in deltas])


def test_a_streamed_answer_with_a_limit_holds_no_more_of_interleaved_calls() -> None:
    """However the calls interleave, what is held stays within a few limits' worth."""
    streamed = StreamedAnswer(100)
    for i in range(10_000):
        streamed.add(_deltas(_call(10_000 - i if i % 2 else i % 7, arguments="x" * 50))[0])
    held = sum(field.size() for call in streamed._calls.values() for field in call.values())
    assert held <= 300 and len(streamed._calls) <= 20


def test_a_streamed_answer_with_a_limit_holds_no_more_of_a_stream_without_end() -> None:
    streamed = StreamedAnswer(100)
    for _ in range(10_000):
        streamed.add({"choices": [{"index": 0, "delta": {"content": "word "}}]})
        streamed.add({"choices": [{"index": 0, "delta": {"content": ""}}]})
    streamed.observe(b'data: {"choices": [{"index": 0, "delta": {"content": "more"}}]}\n\n')
    assert streamed.text() == ("word " * 21)[:101]
    calls = StreamedAnswer(100)
    for i in range(10_000):  # calls without end, each new and empty
        calls.add(
            {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "function": {}}]}}]}
        )
    # what each holds, however long the stream
    assert streamed._content.size() <= 101 and len(calls._calls) <= 101


def test_a_streamed_answer_with_a_limit_holds_no_more_of_ids_given_to_one_call() -> None:
    """Each piece of call 0 with an id of its own (an upstream making one up for each):
    every id was kept, call 0 being held, 5 MB for the log's 32,000 characters over a
    6.5 MB stream. A call is named by its first id, as the fronts number it."""
    streamed = StreamedAnswer(100)
    for i in range(10_000):
        call = {"index": 0, "id": f"call_{i}", "function": {"arguments": "x"}}
        streamed.add(_deltas({"tool_calls": [call]})[0])
    assert len(streamed._numbers._ids) == 1
    # the first id names call 0; a later one, come without an index, is a call of its
    # own, for the fronts too (one rule: `CallNumbers`)
    numbers = CallNumbers()
    assert [numbers.number(0, "a"), numbers.number(0, "b")] == [0, 0]
    assert [numbers.number(None, "a"), numbers.number(None, "b")] == [0, 1]


@pytest.mark.parametrize("field", ["content", "arguments"])
def test_a_streamed_answer_holds_small_pieces_compactly(field: str) -> None:
    """Each piece was held as a string of its own (~60 bytes for a tokenizer's 2
    characters): at the log's 32,000 characters a stream's text took 1 MB, its tool
    calls (held up to twice the limit) 2 MB, a few bytes a character once joined."""
    limit = 32_000
    streamed = StreamedAnswer(limit)
    tracemalloc.start()
    try:
        for k in range(limit):  # each piece a new string, as parsed from its event
            piece = f"{k % 100:02d}"
            delta = {"content": piece} if field == "content" else _call(0, arguments=piece)
            streamed.add(_deltas(delta)[0])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * limit
    text = streamed.text() or ""
    assert len(text) > limit and "00010203" in text


@pytest.mark.parametrize("mode", ["off", "redacted", "full"])
def test_shadow_answers_are_kept_as_telemetry_responses_says(mode: str) -> None:
    """With `responses: off` (and prompts hashed) the shadow table still held both
    answers in full, PII included, beside a decision row that kept none."""
    from llmroute.telemetry.service import as_kept

    record = ShadowRecord(
        decision_id="d1",
        ts=1.0,
        route="r",
        routed_model="small",
        reference_model="large",
        routed_answer="write to mary.jones@example.org: 42",
        reference_answer="mail mary.jones@example.org, the answer is 42",
        judge="exact",
        routed_ok=True,
        judge_score=1.0,
        extra={"routed_final": "42", "reference_final": "42", "reference_attempts": ["x"]},
    )
    kept = as_kept(record, mode, 40)  # type: ignore[arg-type]
    assert (kept.routed_ok, kept.judge_score) == (True, 1.0)  # the verdict stays
    assert kept.extra["reference_attempts"] == ["x"]
    if mode == "off":
        assert kept.routed_answer is None and kept.reference_answer is None
        assert "routed_final" not in kept.extra
    elif mode == "redacted":
        assert kept.routed_answer == "write to <EMAIL_1>: 42"
        assert "mary" not in (kept.reference_answer or "")
    else:
        assert kept.routed_answer == record.routed_answer
        assert kept.reference_answer == record.reference_answer[:40]  # type: ignore[index]


def _gemini_call(call_id: str | None, **function: str) -> dict[str, Any]:
    """A call as Gemini's OpenAI-compatible endpoint streams it: whole, with no index."""
    return {"tool_calls": [{**({"id": call_id} if call_id else {}), "function": function}]}


def test_calls_without_an_index_are_numbered_by_id_as_the_fronts_number_them() -> None:
    """Gemini streams each of parallel calls whole, with its id and no index: they were
    all read as call 0, one call named ``fg`` with both arguments run together, where the
    fronts (`ChunkTranslator`) and the whole answer have two."""
    streamed = StreamedAnswer()
    for delta in _deltas(
        _gemini_call("a", name="f", arguments='{"x": 1}'),
        _gemini_call("b", name="g", arguments="{}"),
        _gemini_call(None, arguments=""),  # neither: the last call goes on
        _gemini_call("a", arguments=""),
    ):
        streamed.add(delta)
    assert json.loads(streamed.text() or "") == [
        {"name": "f", "arguments": '{"x": 1}'},
        {"name": "g", "arguments": "{}"},
    ]


def test_a_call_without_an_index_after_the_cut_is_read_where_it_counts() -> None:
    """A call of negative index named by its id, then continued by the id alone: once the
    calls are cut within call 0 it still comes before the cut."""
    start = [
        _event({"tool_calls": [{"index": -1, "id": "neg", "function": {"name": "h"}}]}),
        _event(_call(0, name="f", arguments="")),
    ]
    pieces = [_event(_call(0, arguments='{"a": 1, '), separators=(",", ":"))] * 40
    late = _event(_gemini_call("neg", arguments="late"), separators=(",", ":"))
    _read_alike([*start, *pieces, late, *pieces], range(0, 400, 7))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(lambda text: {"content": text}, _PIECE),
            st.builds(
                lambda index, call_id, function: {
                    "tool_calls": [
                        {
                            **({} if index is None else {"index": index}),
                            **({} if call_id is None else {"id": call_id}),
                            "function": function,
                        }
                    ]
                },
                st.sampled_from([None, None, 0, 1, -1, True]),
                st.sampled_from([None, "a", "b", "c"]),
                st.fixed_dictionaries({}, optional={"name": _PIECE, "arguments": _PIECE}),
            ),
        ),
        max_size=14,
    )
)
def test_a_stream_with_calls_numbered_by_id_is_cut_as_the_whole_answer(
    deltas: list[dict[str, Any]],
) -> None:
    _read_alike([_event(delta, separators=(",", ":")) for delta in deltas])


def test_calls_without_an_index_follow_the_indexed_ones_as_the_fronts_number_them() -> None:
    """An id an indexed call gave is that call's; a new id after it is the next call, as
    the fronts (`ChunkTranslator`) number them. Numbered apart from the indexed calls, a
    call without an index after call 0 was merged into it (``fg``, ``{}{}``) and call 0's
    id going on without its index made a call of its own."""
    translator_seen = _deltas(
        {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}]},
        _gemini_call("b", name="g", arguments="{}"),
        _gemini_call("a", arguments="}"),
    )
    streamed = StreamedAnswer()
    for delta in translator_seen:
        streamed.add(delta)
    assert json.loads(streamed.text() or "") == [
        {"name": "f", "arguments": "{}"},
        {"name": "g", "arguments": "{}"},
    ]


def test_a_call_of_negative_index_is_numbered_by_its_id_as_the_fronts_number_it() -> None:
    """A negative index is no index: the call its id names, as the fronts read it (they
    merged it into call 0 before); read as a call before call 0, the decision log and the
    shadow's answer had ``g`` first, where the client was sent one call."""
    streamed = StreamedAnswer()
    for delta in _deltas(
        {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}]},
        {"tool_calls": [{"index": -1, "id": "b", "function": {"name": "g", "arguments": "{"}}]},
        _call(0, arguments="}"),
        _call(-1, arguments="}"),
    ):
        streamed.add(delta)
    assert json.loads(streamed.text() or "") == [
        {"name": "f", "arguments": "{}"},
        {"name": "g", "arguments": "{}"},
    ]


def test_an_indexed_calls_id_past_the_cut_is_still_its_own() -> None:
    """Once the calls are cut within call 0's arguments, call 1's event (an index, an
    id) may go unparsed; a piece of it streamed by its id alone, without an index, is
    still call 1's, past the cut, not call 0's (whose name it would have grown)."""
    start = [_event(_call(0, name="f", arguments=""))]
    pieces = [_event(_call(0, arguments='{"a": 1, '), separators=(",", ":"))] * 40
    second = _event(
        {"tool_calls": [{"index": 1, "id": "x", "function": {"arguments": "{"}}]},
        separators=(",", ":"),
    )
    late = _event(_gemini_call("x", name="late"), separators=(",", ":"))
    _read_alike([*start, *pieces, second, late, *pieces], range(0, 400, 7))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(
            lambda index, call_id, function: {
                "tool_calls": [
                    {
                        **({} if index is None else {"index": index}),
                        **({} if call_id is None else {"id": call_id}),
                        "function": function,
                    }
                ]
            },
            st.sampled_from([None, None, 0, 1, 2, -1, -2, True, "1", 1.0]),
            st.sampled_from([None, "a", "b", "c"]),
            st.fixed_dictionaries({}, optional={"name": _PIECE, "arguments": _PIECE}),
        ),
        max_size=10,
    )
)
def test_calls_are_numbered_as_the_fronts_number_them(deltas: list[dict[str, Any]]) -> None:
    """Whatever mix of indexes and ids, a stream's calls read as the fronts'
    `ChunkTranslator` reads them (each delta given its index there and cleaned, then
    read): a negative index, left as it was by the numbering, was call 0 once cleaned."""
    from types import SimpleNamespace

    from llmroute.server.chunk_translation import ChunkTranslator, clean_chunk

    front = SimpleNamespace(_call_ids=None, _numbers=None)
    streamed, numbered = StreamedAnswer(), StreamedAnswer()
    for chunk in _deltas(*deltas):
        streamed.add(json.loads(json.dumps(chunk)))
        ChunkTranslator._number_calls(front, chunk)  # its numbering
        numbered.add(clean_chunk(chunk))  # what the fronts translate
    assert streamed.text() == numbered.text()
