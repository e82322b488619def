"""The verifier gate against a real fake upstream: a scripted yes/no reply, P(yes) from
logprobs, a provider that refuses logprobs, an unparseable reply."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import pytest
from fake_upstream import FakeUpstream, fake_upstream

from llmroute.decision import Decision
from llmroute.dispatch import Dispatcher, Plan, Served
from llmroute.gates.verifier import VERIFIER_PROMPT, MalformedVerdict, p_yes
from llmroute.providers import build_providers
from llmroute.registry import parse_registry

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: up, model: small}
  large: {provider: up, model: large}
  judge: {provider: up, model: '%(judge)s', price: {input: 1, output: 1}}
routes:
  - name: r
    examples: [hello]
    target: small
    cascade: {tiers: [small, large], gates: [{kind: verifier, model: judge%(threshold)s}]}
default: {target: large}
dispatch:
  retries: {attempts: 0}
"""


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeUpstream]:
    with fake_upstream() as upstream:
        yield upstream


@pytest.fixture
def upstream(shared: FakeUpstream) -> FakeUpstream:
    shared.requests.clear()
    shared.counts.clear()
    return shared


def serve(upstream: FakeUpstream, judge: str, threshold: float | None = None) -> Served:
    extra = "" if threshold is None else f", threshold: {threshold}"
    text = REGISTRY % {"url": upstream.url, "judge": judge, "threshold": extra}
    reg = parse_registry(text).registry
    decision = Decision("d", "r", "small", "test", 1.0, None, "test", "v", (), 0.0, 0.0)
    plan = Plan(decision, ("small",), None, reg.route("r").cascade)

    async def main() -> Served:
        dispatcher = Dispatcher(reg, build_providers(reg))
        try:
            body = {"messages": [{"role": "user", "content": "capital of France?"}]}
            return await dispatcher.complete(plan, body)
        finally:
            await dispatcher.aclose()

    return asyncio.run(main())


def judge_requests(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [r.body for r in upstream.requests if r.body["model"].startswith("judge")]


def test_a_yes_accepts_and_the_question_shows_request_and_answer(upstream: FakeUpstream) -> None:
    served = serve(upstream, "judge?reply=Yes.")
    assert served.model == "small"
    verdict = served.cascade[0].verdicts[0]
    assert verdict.gate == "verifier" and verdict.accept and verdict.score == 1.0
    (asked,) = judge_requests(upstream)
    prompt = asked["messages"][0]["content"]
    assert "user: capital of France?" in prompt and "echo: capital of France?" in prompt
    assert prompt.endswith(VERIFIER_PROMPT.rsplit("\n", 1)[-1])
    assert asked["logprobs"] is True and asked["top_logprobs"] == 5
    # the verifier's cost counts
    assert served.usage.prompt_tokens == 6


def test_a_no_escalates(upstream: FakeUpstream) -> None:
    served = serve(upstream, "judge?reply=no")
    assert served.model == "large"
    assert served.attempts == ("small escalated: verifier (p_yes 0.00<0.50)",)


def test_p_yes_comes_from_logprobs_when_there_are_some(upstream: FakeUpstream) -> None:
    served = serve(upstream, "judge?reply=yes&p_yes=0.3")
    assert served.model == "large"
    assert served.cascade[0].verdicts[0].score == pytest.approx(0.3)
    served = serve(upstream, "judge?reply=no&p_yes=0.3", threshold=0.25)
    assert served.model == "small"


def test_a_provider_refusing_logprobs_is_asked_again_without(upstream: FakeUpstream) -> None:
    served = serve(upstream, "judge?reply=yes&nologprobs=1")
    assert served.model == "small"
    asked = judge_requests(upstream)
    assert [b.get("logprobs") for b in asked] == [True, None]


def test_an_unparseable_reply_escalates(upstream: FakeUpstream) -> None:
    served = serve(upstream, "judge?reply=perhaps")
    assert served.model == "large"
    assert served.attempts == ("small escalated: verifier (unparseable)",)


def test_a_failing_verifier_escalates(upstream: FakeUpstream) -> None:
    served = serve(upstream, "judge?status=500")
    assert served.model == "large"
    assert served.attempts == ("small escalated: verifier (error (AllFallbacksFailed))",)


def test_p_yes_normalises_yes_over_no() -> None:
    top = [
        {"token": " Yes", "logprob": -0.5},
        {"token": "no", "logprob": -1.5},
        {"token": "maybe", "logprob": -0.1},
    ]
    data = {
        "choices": [
            {"message": {"content": "Yes"}, "logprobs": {"content": [{"top_logprobs": top}]}}
        ]
    }
    expected = math.exp(-0.5) / (math.exp(-0.5) + math.exp(-1.5))
    assert p_yes(data) == pytest.approx(expected)
    assert p_yes({"choices": [{"message": {"content": "NO"}}]}) == 0.0
    assert p_yes({"choices": []}) is None


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        ("huge", "logprob above 0"),  # exp(1000) overflowed: OverflowError
        ("positive", "logprob above 0"),  # a probability of 1.65
        ("notalist", "top_logprobs not a list"),  # iterating 5: TypeError
    ],
)
def test_a_malformed_judge_answer_is_an_unusable_verdict(
    upstream: FakeUpstream, bad: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Logprobs no provider sends (a first token's logprob above 0, ``top_logprobs`` not
    a list) give no P(yes): the gate escalates, as for an unparseable reply, saying what
    was wrong with them, and logs that (never the answer); nothing raises."""
    with caplog.at_level("WARNING", logger="llmroute.gates"):
        served = serve(upstream, f"judge?reply=yes&badlogprobs={bad}")
    assert served.model == "large"
    verdict = served.cascade[0].verdicts[0]
    assert (verdict.accept, verdict.score) == (False, None)
    assert verdict.reason == f"malformed ({kind})"
    assert verdict.usage is not None and verdict.usage.cost_usd > 0  # the call was paid
    assert served.attempts == (f"small escalated: verifier (malformed ({kind}))",)
    logged = [r.getMessage() for r in caplog.records if r.name == "llmroute.gates"]
    assert any(kind in line and "judge" in line for line in logged), logged
    assert not any("capital of France" in line for line in logged)


def test_p_yes_refuses_malformed_logprobs() -> None:
    def data(first: dict[str, Any]) -> dict[str, Any]:
        choice = {"message": {"content": "yes"}, "logprobs": {"content": [first]}}
        return {"choices": [choice]}

    for first, kind in [
        ({"token": "yes", "logprob": 1000}, "logprob above 0"),
        ({"token": "yes", "logprob": float("inf")}, "logprob above 0"),
        ({"token": "yes", "logprob": float("nan")}, "logprob NaN"),
        ({"token": "yes", "logprob": True}, "logprob not a number"),
        ({"token": "yes", "logprob": "-0.1"}, "logprob not a number"),
        ({"token": "yes", "logprob": 10**400}, "logprob above 0"),
        ({"token": "yes", "logprob": -0.1, "top_logprobs": {"yes": -0.1}}, "top_logprobs"),
    ]:
        with pytest.raises(MalformedVerdict) as caught:
            p_yes(data(first))
        assert kind in caught.value.kind
    # a logprob of 0 (certain) and one a rounding error above it are fine
    assert p_yes(data({"token": "yes", "logprob": 0.0})) == 1.0
    assert p_yes(data({"token": "yes", "logprob": 1e-9})) == 1.0
    # -inf is a probability of 0
    top = [{"token": "yes", "logprob": float("-inf")}, {"token": "no", "logprob": -0.1}]
    assert p_yes(data({"token": "no", "logprob": -0.1, "top_logprobs": top})) == 0.0
    top = [{"token": "yes", "logprob": -(10**400)}, {"token": "no", "logprob": -0.1}]
    assert p_yes(data({"token": "no", "logprob": -0.1, "top_logprobs": top})) == 0.0
