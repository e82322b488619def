"""The cascade at dispatch time, against a real fake upstream on 127.0.0.1: escalation
on a gate's rejection or a tier's failure, the attempt path and its header, summed
usage, buffered and passthrough streams, gates that raise or hang, the learned gate's
adapter, and which plans carry a cascade."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from plans import plan_for

import llmroute.dispatch.cascade as cascade_module
from llmroute.decide import Router
from llmroute.dispatch import Dispatcher, Opened, Plan, cascade_header, plan_request
from llmroute.dispatch.cascade import assemble_stream
from llmroute.encoders.fake import FakeEncoder
from llmroute.errors import AllFallbacksFailed, UpstreamRejected
from llmroute.gates.base import GateVerdict, ModelCall, QualityGate, TierAnswer
from llmroute.gates.build import GateFactory
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import Gate, Registry
from llmroute.sse import DONE, event_of

T = TypeVar("T")

REFUSAL = quote("I'm sorry, but I can't help with that.")

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
%(models)s
routes:
  - name: r
    examples: [hello]
    target: small
    cascade: %(cascade)s
  - name: plain
    examples: [goodbye]
    target: large
default: {target: large}
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
"""


@pytest.fixture(scope="module")
def upstream_module() -> Iterator[FakeUpstream]:
    with fake_upstream() as upstream:
        yield upstream


@pytest.fixture
def upstream(upstream_module: FakeUpstream) -> FakeUpstream:
    upstream_module.requests.clear()
    upstream_module.counts.clear()
    upstream_module.answers.clear()
    upstream_module.released.clear()
    return upstream_module


def registry(
    upstream: FakeUpstream,
    small: str = "small",
    large: str = "large",
    cascade: str = "[small, large]",
    mid: str | None = None,
) -> Registry:
    models = [
        f"  small: {{provider: up, model: '{small}', price: {{input: 1, output: 2}}}}",
        f"  large: {{provider: up, model: '{large}', price: {{input: 10, output: 20}}}}",
    ]
    if mid is not None:
        models.append(f"  mid: {{provider: up, model: '{mid}'}}")
    text = REGISTRY % {"url": upstream.url, "models": "\n".join(models), "cascade": cascade}
    return parse_registry(text).registry


def plan_of(reg: Registry) -> Plan:
    route = reg.route("r")
    return plan_for("small", policy=route.policy, cascade=route.cascade)


def body(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def run(
    reg: Registry,
    job: Callable[[Dispatcher], Awaitable[T]],
    gates: GateFactory | None = None,
) -> T:
    async def main() -> T:
        dispatcher = Dispatcher(reg, build_providers(reg), gates=gates)
        try:
            return await job(dispatcher)
        finally:
            await dispatcher.aclose()

    return asyncio.run(main())


def content(data: Mapping[str, Any]) -> str:
    text: str = data["choices"][0]["message"]["content"]
    return text


# -- non-streaming -----------------------------------------------------------------------


def test_a_refusal_escalates_and_the_second_tier_answers(upstream: FakeUpstream) -> None:
    reg = registry(upstream, small=f"small?reply={REFUSAL}")
    served = run(reg, lambda d: d.complete(plan_of(reg), body()))
    assert served.model == "large" and content(served.data) == "echo: hi"
    assert [s.outcome for s in served.cascade] == ["escalate", "accept"]
    assert served.cascade[0].verdicts[0].reason == "refusal"
    assert served.cascade[1].gated is False
    assert served.attempts == ("small escalated: heuristic (refusal)",)
    assert cascade_header(served.cascade) == "small:escalate(heuristic:refusal),large:accept"


def test_a_good_first_answer_is_served_and_the_next_tier_never_called(
    upstream: FakeUpstream,
) -> None:
    reg = registry(upstream)
    served = run(reg, lambda d: d.complete(plan_of(reg), body()))
    assert served.model == "small" and content(served.data) == "echo: hi"
    assert served.attempts == () and cascade_header(served.cascade) == "small:accept"
    assert upstream.models_called() == ["small"]


def test_usage_of_every_tier_is_summed(upstream: FakeUpstream) -> None:
    reg = registry(upstream, small="small?finish=length")
    served = run(reg, lambda d: d.complete(plan_of(reg), body()))
    assert served.model == "large"
    assert served.attempts == ("small escalated: heuristic (truncated)",)
    small_cost, large_cost = (3 * 1 + 3 * 2) / 1e6, (3 * 10 + 3 * 20) / 1e6
    assert served.cascade[0].usage is not None
    assert served.cascade[0].usage.cost_usd == pytest.approx(small_cost)
    assert served.usage.prompt_tokens == 6 and served.usage.completion_tokens == 6
    assert served.usage.cost_usd == pytest.approx(small_cost + large_cost)
    assert served.data["usage"]["cost_usd"] == pytest.approx(small_cost + large_cost)
    assert served.data["usage"]["total_tokens"] == 12


def test_a_failing_tier_escalates(upstream: FakeUpstream) -> None:
    reg = registry(upstream, small="small?status=500", cascade="[small, mid, large]", mid="mid")
    served = run(reg, lambda d: d.complete(plan_of(reg), body()))
    assert served.model == "mid"
    (attempt,) = served.attempts  # the upstream's request id comes along for its support
    expected = (
        r"small failed: small via up \(upstream returned HTTP 500"
        r" \[upstream request req_fake\d+\]\)"
    )
    assert re.fullmatch(expected, attempt)
    assert cascade_header(served.cascade) == "small:error,mid:accept"


def test_an_image_skips_a_tier_without_vision(upstream: FakeUpstream) -> None:
    models = (
        "  small: {provider: up, model: small, vision: false}\n"
        "  large: {provider: up, model: large}"
    )
    text = REGISTRY % {"url": upstream.url, "models": models, "cascade": "[small, large]"}
    reg = parse_registry(text).registry
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    picture = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]}
    served = run(reg, lambda d: d.complete(plan_of(reg), picture))
    assert served.model == "large" and upstream.models_called() == ["large"]
    assert "vision: false" in served.attempts[0]
    served = run(reg, lambda d: d.complete(plan_of(reg), body()))  # text: the first tier
    assert served.model == "small"


def test_every_tier_failing_is_all_fallbacks_failed_with_the_attempts(
    upstream: FakeUpstream,
) -> None:
    reg = registry(upstream, small=f"small?reply={REFUSAL}", large="large?status=503")
    reg_fail = registry(upstream, small="small?status=500", large="large?status=503")
    with pytest.raises(AllFallbacksFailed) as caught:
        run(reg_fail, lambda d: d.complete(plan_of(reg_fail), body()))
    assert caught.value.status == 502
    assert tuple(re.sub(r" \[upstream request \w+\]", "", a) for a in caught.value.attempts) == (
        "small failed: small via up (upstream returned HTTP 500)",
        "large failed: large via up (upstream returned HTTP 503)",
    )
    # an earlier tier that answered (and escalated) beats an error from the last one
    served = run(reg, lambda d: d.complete(plan_of(reg), body()))
    assert served.model == "small" and content(served.data).startswith("I'm sorry")
    assert cascade_header(served.cascade) == "small:escalate(heuristic:refusal),large:error"


def test_every_tier_timing_out_is_504(upstream: FakeUpstream) -> None:
    text = REGISTRY.replace("timeout_s: 5", "timeout_s: 0.1")
    reg = parse_registry(
        text
        % {
            "url": upstream.url,
            "models": "  small: {provider: up, model: 'small?delay=0.5'}\n"
            "  large: {provider: up, model: 'large?delay=0.5'}",
            "cascade": "[small, large]",
        }
    ).registry
    with pytest.raises(AllFallbacksFailed) as caught:
        run(reg, lambda d: d.complete(plan_of(reg), body()))
    assert caught.value.status == 504 and len(caught.value.attempts) == 2


def test_every_tier_rate_limited_is_429_with_the_soonest_wait(upstream: FakeUpstream) -> None:
    """As a chain's: every tier's 429 is the client's 429 (it was a 503), its
    ``Retry-After`` the soonest the tiers said."""
    reg = registry(
        upstream, small="small?status=429&retry_after=4", large="large?status=429&retry_after=2"
    )
    with pytest.raises(AllFallbacksFailed) as caught:
        run(reg, lambda d: d.complete(plan_of(reg), body()))
    assert caught.value.status == 429 and caught.value.retry_after_s == 2.0
    assert len(caught.value.attempts) == 2


def test_a_request_every_tier_rejects_keeps_its_4xx(upstream: FakeUpstream) -> None:
    reg = registry(upstream, small="small?status=400", large="large?status=400")
    with pytest.raises(UpstreamRejected) as caught:
        run(reg, lambda d: d.complete(plan_of(reg), body()))
    assert caught.value.status == 400 and caught.value.model == "large"


def test_json_mode_escalates_an_answer_that_is_not_json(upstream: FakeUpstream) -> None:
    reg = registry(upstream, small=f"small?reply={quote('{bad')}", large="large?reply=%7B%7D")
    served = run(
        reg,
        lambda d: d.complete(plan_of(reg), body(response_format={"type": "json_object"})),
    )
    assert served.model == "large" and content(served.data) == "{}"
    assert served.attempts == ("small escalated: heuristic (json)",)


def test_per_tier_gates_override_the_cascade_gates(upstream: FakeUpstream) -> None:
    tiers = "{tiers: [{model: small, gates: [{kind: heuristic, min_chars: 50}]}, large]}"
    reg = registry(upstream, cascade=tiers)
    served = run(reg, lambda d: d.complete(plan_of(reg), body()))
    assert served.model == "large" and served.attempts == (
        "small escalated: heuristic (too_short)",
    )


# -- gates that fail ------------------------------------------------------------------------


class Boom:
    name = "boom"

    async def check(self, request: Mapping[str, Any], answer: TierAnswer) -> GateVerdict:
        raise KeyError(answer.text)  # the answer must not reach the WARNING log


class Hang:
    name = "hang"

    async def check(self, request: Mapping[str, Any], answer: TierAnswer) -> GateVerdict:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")


class Factory(GateFactory):
    def __init__(self, reg: Registry, gate: QualityGate) -> None:
        super().__init__(reg)
        self.gate = gate

    def build(self, spec: Gate, call: ModelCall) -> QualityGate:
        return self.gate


def test_a_gate_that_raises_escalates_and_logs_no_answer(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    reg = registry(upstream, small="small?reply=SECRET-ANSWER")
    served = run(reg, lambda d: d.complete(plan_of(reg), body()), Factory(reg, Boom()))
    assert served.model == "large"
    assert served.attempts == ("small escalated: boom (error (KeyError))",)
    assert cascade_header(served.cascade) == "small:escalate(boom:error),large:accept"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings and not any("SECRET-ANSWER" in w for w in warnings)


def test_a_gate_that_hangs_escalates(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cascade_module, "GATE_TIMEOUT_S", 0.05)
    reg = registry(upstream)
    served = run(reg, lambda d: d.complete(plan_of(reg), body()), Factory(reg, Hang()))
    assert served.model == "large" and served.attempts == ("small escalated: hang (timeout)",)


# -- the learned gate's adapter --------------------------------------------------------------


class FakeLearned:
    threshold = 0.5

    def __init__(self, score: float) -> None:
        self.value = score
        self.seen: list[tuple[list[str], list[str]]] = []

    def score(self, prompts: list[str], answers: list[str]) -> np.ndarray:
        self.seen.append((list(prompts), list(answers)))
        return np.array([self.value])


@pytest.mark.parametrize(("score", "served_by"), [(0.9, "small"), (0.2, "large")])
def test_the_learned_gate_scores_prompt_and_answer_in_a_thread(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, score: float, served_by: str
) -> None:
    reg = registry(upstream, cascade="{tiers: [small, large], gates: [learned]}")
    model = FakeLearned(score)
    factory = GateFactory(reg, encoder=FakeEncoder(), base_dir=Path("/nowhere"))  # type: ignore[arg-type]
    monkeypatch.setattr(factory, "_load_model", lambda artifact: model)
    served = run(reg, lambda d: d.complete(plan_of(reg), body("what is 2+2?")), factory)
    assert served.model == served_by
    assert model.seen == [(["what is 2+2?"], ["echo: what is 2+2?"])]
    verdict = served.cascade[0].verdicts[0]
    assert verdict.gate == "learned" and verdict.score == pytest.approx(score)


def test_a_learned_gate_loads_its_artifact_relative_to_the_registry_once(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from llmroute.gates import learned

    loads: list[Any] = []

    def load(path: Any, encoder: Any) -> FakeLearned:
        loads.append(path)
        return FakeLearned(0.9)

    monkeypatch.setattr(learned.LearnedGateModel, "load", staticmethod(load))
    gates = "[{kind: learned, artifact: gates/mine, threshold: 0.95}]"
    reg = registry(upstream, cascade=f"{{tiers: [small, large], gates: {gates}}}")
    factory = GateFactory(reg, encoder=FakeEncoder(), base_dir=tmp_path)  # type: ignore[arg-type]

    async def twice(d: Dispatcher) -> list[str]:
        return [(await d.complete(plan_of(reg), body())).model for _ in range(2)]

    assert run(reg, twice, factory) == ["large", "large"]  # 0.9 < the gate's own 0.95
    assert loads == [tmp_path / "gates/mine"]


def test_a_learned_gate_without_an_encoder_escalates(upstream: FakeUpstream) -> None:
    reg = registry(upstream, cascade="{tiers: [small, large], gates: [learned]}")
    served = run(reg, lambda d: d.complete(plan_of(reg), body()))
    assert served.model == "large"
    assert served.attempts == ("small escalated: learned (error (RuntimeError))",)


# -- streams ------------------------------------------------------------------------------


async def drain(opened: Opened) -> tuple[str, list[dict[str, Any]]]:
    text, chunks = [], []
    async for event in opened.events:
        if event.startswith(b"data: {"):
            chunk = json.loads(event[6:])
            chunks.append(chunk)
            for choice in chunk.get("choices") or ():
                text.append(choice["delta"].get("content") or "")
    return "".join(text), chunks


def stream_body() -> dict[str, Any]:
    return body(stream=True, stream_options={"include_usage": True})


def test_a_buffered_stream_replays_the_accepted_tier(upstream: FakeUpstream) -> None:
    reg = registry(upstream, small="small?reply=fine%20answer", large="large")

    async def job(d: Dispatcher) -> tuple[Opened, str, list[dict[str, Any]]]:
        opened = await d.open_stream(plan_of(reg), stream_body())
        text, chunks = await drain(opened)
        return opened, text, chunks

    opened, text, _ = run(reg, job)
    assert opened.model == "small" and text.strip() == "fine answer"
    assert cascade_header(opened.cascade) == "small:accept"
    assert opened.usage is not None and opened.usage.completion_tokens == 3
    assert [m.partition("?")[0] for m in upstream.models_called()] == ["small"]


def test_a_buffered_stream_escalates_and_streams_the_last_tier_live(
    upstream: FakeUpstream,
) -> None:
    reg = registry(upstream, small=f"small?reply={REFUSAL}")

    async def job(d: Dispatcher) -> tuple[Opened, str, list[dict[str, Any]]]:
        opened = await d.open_stream(plan_of(reg), stream_body())
        text, chunks = await drain(opened)
        return opened, text, chunks

    opened, text, chunks = run(reg, job)
    assert opened.model == "large" and text.strip() == "echo: hi"
    assert opened.attempts == ("small escalated: heuristic (refusal)",)
    total = (3 * 1 + 3 * 2) / 1e6 + (3 * 10 + 3 * 20) / 1e6
    assert opened.usage is not None and opened.usage.cost_usd == pytest.approx(total)
    usage_chunks = [c["usage"] for c in chunks if c.get("usage")]
    assert usage_chunks and usage_chunks[-1]["cost_usd"] == pytest.approx(total)
    assert usage_chunks[-1]["prompt_tokens"] == 6


def test_a_stream_over_the_buffer_limit_escalates(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cascade_module, "MAX_BUFFER_BYTES", 200)
    reg = registry(upstream, small="small?reply=" + quote(" ".join(["word"] * 50)))

    async def job(d: Dispatcher) -> tuple[Opened, str]:
        opened = await d.open_stream(plan_of(reg), body(stream=True))
        return opened, (await drain(opened))[0]

    opened, text = run(reg, job)
    assert opened.model == "large" and text.strip() == "echo: hi"
    assert opened.attempts == ("small escalated: buffer (buffer_limit)",)


def test_a_stream_broken_mid_way_escalates(upstream: FakeUpstream) -> None:
    reg = registry(upstream, small="small?mid=1")

    async def job(d: Dispatcher) -> tuple[Opened, str]:
        opened = await d.open_stream(plan_of(reg), body(stream=True))
        return opened, (await drain(opened))[0]

    opened, text = run(reg, job)
    assert opened.model == "large" and text.strip() == "echo: hi"
    assert cascade_header(opened.cascade) == "small:error,large:accept"


def test_a_buffered_stream_broken_after_its_done_is_a_whole_answer(
    upstream: FakeUpstream,
) -> None:
    """A tier whose upstream broke once its ``[DONE]`` was read sent its whole answer (a
    success for its breaker, a whole stream at the gateway): it is gated and served as
    any other, not taken for a failed tier and escalated (the next tier paid for)."""
    reg = registry(upstream, small="small?reply=fine%20answer&after=reset", large="large")

    async def job(d: Dispatcher) -> tuple[Opened, str]:
        opened = await d.open_stream(plan_of(reg), stream_body())
        return opened, (await drain(opened))[0]

    opened, text = run(reg, job)
    assert opened.model == "small" and text.strip() == "fine answer"
    assert cascade_header(opened.cascade) == "small:accept"
    assert opened.attempts == ()
    assert [m.partition("?")[0] for m in upstream.models_called()] == ["small"]


class Seen:
    """Accepts every answer, keeping what it was shown."""

    name = "seen"

    def __init__(self) -> None:
        self.answers: list[TierAnswer] = []

    async def check(self, request: Mapping[str, Any], answer: TierAnswer) -> GateVerdict:
        self.answers.append(answer)
        return GateVerdict(True, None, "ok", self.name)


def test_the_gates_read_choice_0_of_a_buffered_stream_of_several(upstream: FakeUpstream) -> None:
    """A tier streaming several choices (``n``) is gated on choice 0's answer, as a whole
    answer is: its words and its finish reason, not every choice's words interleaved."""
    reg = registry(upstream, small="small?reply=fine%20answer&multi=1&finish=length")
    seen = Seen()

    async def job(d: Dispatcher) -> Opened:
        opened = await d.open_stream(plan_of(reg), body(stream=True, n=2))
        await drain(opened)
        return opened

    opened = run(reg, job, Factory(reg, seen))
    assert opened.model == "small"
    [answer] = seen.answers
    assert (answer.text.strip(), answer.finish_reason) == ("fine answer", "length")


def test_a_buffered_tier_whose_upstream_holds_its_body_open_after_its_done_answers(
    upstream: FakeUpstream,
) -> None:
    """A tier whose upstream sends its whole answer and ``[DONE]``, then keeps the body
    open (a proxy's keep-alive bug): its answer is gated and served once the body has
    been read on for a moment (`END_DRAIN_S`), its connection closed then. The tier was
    read until the upstream let go (here 60 s; a read timeout, then, as a slower answer
    or a failed tier)."""
    reg = registry(upstream, small="small?reply=fine%20answer&after=open", large="large")
    slow = reg.providers["up"].model_copy(update={"timeout_s": 120.0})
    reg = reg.model_copy(update={"providers": {**reg.providers, "up": slow}})

    async def job(d: Dispatcher) -> tuple[Opened, str]:
        opened = await d.open_stream(plan_of(reg), stream_body())
        return opened, (await drain(opened))[0]

    async def bounded(d: Dispatcher) -> tuple[Opened, str]:
        return await asyncio.wait_for(job(d), 30)  # far less than the upstream holds

    opened, text = run(reg, bounded)
    assert opened.model == "small" and text.strip() == "fine answer"
    assert cascade_header(opened.cascade) == "small:accept"
    assert opened.attempts == ()
    assert [m.partition("?")[0] for m in upstream.models_called()] == ["small"]
    wait_for("the upstream released", lambda: bool(upstream.released), 10)
    assert upstream.released == ["small?reply=fine%20answer&after=open"]


def test_a_buffered_streams_tool_calls_that_are_no_list_are_passed_over() -> None:
    """A tier's stream whose delta says ``tool_calls`` as no list (``true``, a number) is
    gated on its text, as the same answer whole is: its assembly raised a TypeError, the
    request a 500 (``internal_error``) where the answer whole was served."""
    events = [
        event_of({"choices": [{"index": 0, "delta": {"content": word, "tool_calls": odd}}]})
        for word, odd in (("fine ", True), ("answer", 2))
    ]
    answer = assemble_stream([*events, DONE], "small")
    assert answer.text == "fine answer"
    assert "tool_calls" not in answer.data["choices"][0]["message"]


def test_a_buffered_streams_calls_without_an_index_are_numbered_by_id() -> None:
    """Gemini's OpenAI-compatible endpoint streams each of parallel calls whole, with its
    id and no index: the gates read them as one call, named ``fg``, whose arguments
    (``{"x": 1}{}``) are no JSON, where the fronts and the answer whole have two. A
    ``true`` index is no index either (it was call 1)."""
    deltas = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        {"index": True, "function": {"arguments": ""}},  # neither: the last call goes on
    ]
    events = [
        event_of({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}) for call in deltas
    ]
    calls = assemble_stream([*events, DONE], "small").data["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]) for c in calls] == [
        ("a", {"name": "f", "arguments": '{"x": 1}'}),
        ("b", {"name": "g", "arguments": "{}"}),
    ]


def test_a_buffered_streams_calls_without_an_index_follow_the_indexed_ones() -> None:
    """An id an indexed call gave is that call's; a new id after it is the next call, as
    the fronts number them (`ChunkTranslator`). Numbered apart from the indexed calls, a
    call without an index after call 0 was merged into it (``fg``, ``{}{}``) and the
    first call's id going on without its index made a call of its own."""
    deltas = [
        {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{"}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        {"id": "a", "function": {"arguments": "}"}},
    ]
    events = [
        event_of({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}) for call in deltas
    ]
    calls = assemble_stream([*events, DONE], "small").data["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]) for c in calls] == [
        ("a", {"name": "f", "arguments": "{}"}),
        ("b", {"name": "g", "arguments": "{}"}),
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([None, None, 0, 1, 2, -1, -2, True, "1", 1.0]),
            st.sampled_from([None, "a", "b", "c"]),
            st.sampled_from(["f", "g", "{", "}", ""]),
        ),
        max_size=10,
    )
)
def test_a_buffered_streams_calls_are_numbered_as_the_fronts_number_them(
    calls: list[tuple[Any, str | None, str]],
) -> None:
    """Whatever mix of indexes and ids, the gates read a tier's calls as the fronts'
    `ChunkTranslator` reads them (each delta given its index there and cleaned, then
    read): a negative index, left as it was by the numbering, was call 0 once cleaned."""
    from types import SimpleNamespace

    from llmroute.server.chunk_translation import ChunkTranslator, clean_chunk

    front = SimpleNamespace(_call_ids=None, _numbers=None)
    raw, numbered = [], []
    for index, call_id, piece in calls:
        call = {
            **({} if index is None else {"index": index}),
            **({} if call_id is None else {"id": call_id}),
            "function": {"name": piece, "arguments": piece},
        }
        chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
        raw.append(event_of(json.loads(json.dumps(chunk))))
        ChunkTranslator._number_calls(front, chunk)  # its numbering
        numbered.append(event_of(clean_chunk(chunk)))  # what the fronts translate
    assert (
        assemble_stream([*raw, DONE], "small").data["choices"]
        == assemble_stream([*numbered, DONE], "small").data["choices"]
    )


def test_passthrough_streams_the_first_tier_ungated(upstream: FakeUpstream) -> None:
    reg = registry(
        upstream,
        small=f"small?reply={REFUSAL}",
        cascade="{tiers: [small, large], stream: passthrough}",
    )

    async def job(d: Dispatcher) -> tuple[Opened, str]:
        opened = await d.open_stream(plan_of(reg), body(stream=True))
        return opened, (await drain(opened))[0]

    opened, text = run(reg, job)
    assert opened.model == "small" and text.startswith("I'm sorry")
    assert cascade_header(opened.cascade) == "small:accept"
    assert [m.partition("?")[0] for m in upstream.models_called()] == ["small"]


def _silent_tiers(
    upstream: FakeUpstream, small: str, large: str, stream: str, first_token_s: float = 0.4
) -> Registry:
    """Tiers [small, large] whose models may stay silent before their first event, the
    stream held 0.05 s (`stream_hold_s`)."""
    limit = f"first_token_timeout_s: {first_token_s}"
    models = f"""  small: {{provider: up, model: '{small}', {limit}}}
  large: {{provider: up, model: '{large}', {limit}}}"""
    cascade = f"{{tiers: [small, large], stream: {stream}}}"
    text = REGISTRY % {"url": upstream.url, "models": models, "cascade": cascade}
    reg = parse_registry(text).registry
    held = reg.dispatch.model_copy(update={"stream_hold_s": 0.05})
    return reg.model_copy(update={"dispatch": held})


def test_a_silent_tier_with_one_after_it_is_not_handed_over_before_its_first_event(
    upstream: FakeUpstream,
) -> None:
    """A passthrough tier silent past the hold, with a tier after it, waits for its
    first event as before (were it handed over, its first-token timeout would end the
    stream instead of escalating); the last tier, with nothing after it, is handed over
    silent (status line and keep-alives), and answers whole."""
    reg = _silent_tiers(upstream, "small?ttft=30", "large?ttft=0.3", "passthrough")

    async def job(d: Dispatcher) -> tuple[float, Opened, str]:
        started = asyncio.get_running_loop().time()
        opened = await d.open_stream(plan_of(reg), body(stream=True))
        handed_s = asyncio.get_running_loop().time() - started
        return handed_s, opened, (await drain(opened))[0]

    handed_s, opened, text = run(reg, job)
    assert opened.model == "large" and text.strip() == "echo: hi"
    assert cascade_header(opened.cascade) == "small:error,large:accept"
    assert handed_s < 0.65  # small's limit (0.4 s) and the hold, not large's first event


def test_a_tier_with_one_after_it_that_fails_after_its_opening_escalates(
    upstream: FakeUpstream,
) -> None:
    """A passthrough tier that opens with its role, thinks past the hold, then fails
    before its first words (a reasoning model giving up) is not handed over at its
    opening: its failure escalates to the next tier, which answers, rather than ending
    the stream with an error."""
    # a first-token limit well past the pause: on loaded cores 0.4 s was sometimes reached
    reg = _silent_tiers(upstream, "small?pause=0.3&early=1", "large", "passthrough", 2.0)

    async def job(d: Dispatcher) -> tuple[Opened, str]:
        opened = await d.open_stream(plan_of(reg), body(stream=True))
        return opened, (await drain(opened))[0]

    opened, text = run(reg, job)
    assert opened.model == "large" and text.strip() == "echo: hi"
    assert cascade_header(opened.cascade) == "small:error,large:accept"


def test_a_silent_last_tier_after_a_buffered_answer_falls_back_to_that_answer(
    upstream: FakeUpstream,
) -> None:
    """The last tier is silent and times out; the first tier's escalated answer was
    buffered: it is served, as when the last tier fails to open (were the last tier
    handed over silent, its timeout would end the stream with an error)."""
    reg = _silent_tiers(upstream, f"small?reply={REFUSAL}", "large?ttft=30", "buffer")

    async def job(d: Dispatcher) -> tuple[Opened, str]:
        opened = await d.open_stream(plan_of(reg), body(stream=True))
        return opened, (await drain(opened))[0]

    opened, text = run(reg, job)
    assert opened.model == "small" and text.startswith("I'm sorry")


def _left_after(reg: Registry, read: int) -> Opened:
    """The cascade's stream, closed by its reader after `read` events."""

    async def job(d: Dispatcher) -> Opened:
        opened = await d.open_stream(plan_of(reg), stream_body())
        events = aiter(opened.events)
        for _ in range(read):
            await anext(events)
        await opened.aclose()
        return opened

    return run(reg, job)


@pytest.mark.parametrize("read", [0, 1])
@pytest.mark.parametrize("escalated", [True, False])
def test_a_stream_its_reader_leaves_counts_every_tier_paid(
    upstream: FakeUpstream, escalated: bool, read: int
) -> None:
    """A client gone mid-stream (or as its headers went out) still has the tiers it paid
    for in the stream's usage: the record and the key's ``tpm`` are told it, not None."""
    small = f"small?reply={REFUSAL}" if escalated else "small?reply=fine%20answer"
    reg = registry(upstream, small=small, large="large?gap=0.2")

    opened = _left_after(reg, read)
    small_usd = (3 * 1 + 3 * 2) / 1e6
    assert opened.model == ("large" if escalated else "small")
    assert opened.usage is not None
    if escalated:  # the live tier's share is estimated: it was cut
        assert opened.usage.cost_usd > small_usd and opened.usage.prompt_tokens > 3
    else:
        assert opened.usage.cost_usd == pytest.approx(small_usd)


@pytest.mark.parametrize("read", [0, 1])
def test_a_passthrough_stream_its_reader_leaves_has_its_usage(
    upstream: FakeUpstream, read: int
) -> None:
    """The same for a passthrough cascade, whose first tier streams live and ungated."""
    reg = registry(upstream, cascade="{tiers: [small, large], stream: passthrough}")

    opened = _left_after(reg, read)
    assert opened.model == "small"
    assert opened.usage is not None and opened.usage.prompt_tokens > 0


# -- plans ---------------------------------------------------------------------------------


def test_plans_carry_the_cascade_of_the_deciding_route(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    text = REGISTRY % {
        "url": upstream.url,
        "models": "  small: {provider: up, model: small}\n  large: {provider: up, model: large}",
        "cascade": "[small, large]",
    }
    router = Router(parse_registry(text), encoder=FakeEncoder(), cache_dir=tmp_path)  # type: ignore[arg-type]
    by_route = plan_request(router, {"model": "r", **body()}, {})
    assert by_route.cascade is not None and by_route.cascade.tiers[1].model == "large"
    assert plan_request(router, {"model": "small", **body()}, {}).cascade is None
    assert plan_request(router, {"model": "plain", **body()}, {}).cascade is None
