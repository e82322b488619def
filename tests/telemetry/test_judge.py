"""Shadow judges: `final_answer`/`ExactJudge` on GSM8K-style answers, and `ModelJudge`
against a real scripted OpenAI-protocol server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from fake_upstream import serve_in_thread

from llmroute.dispatch import Dispatcher
from llmroute.errors import ConfigError, outline_of
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import JudgeSettings
from llmroute.telemetry.judge import (
    JUDGE_PROMPT,
    ExactJudge,
    Judgement,
    ModelJudge,
    final_answer,
    judge_from_settings,
    parse_verdict,
)
from llmroute.telemetry.record import ShadowRecord
from llmroute.telemetry.service import as_kept

GSM8K = Path("/work/shared/data/gsm8k/gsm8k_dev.jsonl")
REQUEST = {"messages": [{"role": "user", "content": "What is 6 * 7?"}]}

# -- final_answer / ExactJudge -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She sells 9 eggs for 9 * $2 = $<<9*2=18>>18.\n#### 18", "18"),
        ("so she makes 9 * $2 = $18 every day at the farmers' market.", "18"),
        ("The profit is $70,000.\n#### 70,000", "70000"),
        ("The answer is 42. I checked it in 3 steps.", "42"),
        ("The answer is $1,200.50", "1200.5"),
        ("It costs 18.00 dollars", "18"),
        ("x = -5", "-5"),
        ("Answer: (B)", "B"),
        ("the answer: (c) because it is larger", "C"),
        ("**Answer:** D", "D"),
        ("The answer is A bird.", "the answer is a bird"),
        ("so the result is \\boxed{18}. Then 3 more", "18"),
        ("\\boxed{\\frac{1}{2}}", "frac 1 2"),
        ("  Paris!! ", "paris"),
    ],
)
def test_final_answer(text: str, expected: str) -> None:
    assert final_answer(text) == expected


def _judge(judge: Any, routed: str | None, reference: str | None) -> Judgement:
    result: Judgement = asyncio.run(judge.judge(REQUEST, routed, reference))
    return result


def test_exact_judge_compares_final_answers() -> None:
    # a real GSM8K pair (id 431dbd908cd5): Mixtral ends with "#### 18", GPT-4 in prose
    weak = "She sells these 9 eggs at the farmers' market for 9 * $2 = $<<9*2=18>>18.\n#### 18"
    strong = "She sells each egg for $2, so she makes 9 * $2 = $18 every day at the market."
    same = _judge(ExactJudge(), weak, strong)
    assert (same.judge, same.routed_ok, same.score, same.error) == ("exact", True, 1.0, None)
    assert same.extra == {"routed_final": "18", "reference_final": "18"}
    differ = _judge(ExactJudge(), "#### 17", strong)
    assert (differ.routed_ok, differ.score) == (False, 0.0)
    assert _judge(ExactJudge(), "Answer: (B)", "The answer is B.").routed_ok is True


def test_exact_judge_without_an_answer_is_undecided() -> None:
    assert _judge(ExactJudge(), None, "42").error == "no routed answer to judge"
    missing = _judge(ExactJudge(), "42", "  ")
    assert missing.routed_ok is None and missing.error == "no reference answer to judge"


def test_exact_judge_does_not_judge_an_answer_longer_than_it_reads() -> None:
    """Its final answer is at an answer's end: past `max_chars` (where a stream's answer
    is no longer read) it is not judged, rather than judged on a wrong final answer."""
    judge = ExactJudge()
    long = "x " * (judge.max_chars // 2) + "so the answer is 7"
    assert len(long) > judge.max_chars
    for routed, reference, which in ((long, "7", "routed"), ("7", long, "reference")):
        result = _judge(judge, routed, reference)
        assert result.routed_ok is None and result.score is None
        assert result.error == f"the {which} answer is longer than 100,000 characters"
    assert _judge(judge, long[-judge.max_chars :], "7").routed_ok is True


@pytest.mark.skipif(not GSM8K.exists(), reason=f"{GSM8K} is absent (shared GSM8K data)")
def test_exact_judge_agrees_with_gsm8k_correctness_labels() -> None:
    """On RouteLLM's GSM8K answers (Apache-2.0): where both models were right, their
    final answers must match; where exactly one was, they should mostly differ."""
    rows = [json.loads(line) for line in GSM8K.read_text(encoding="utf-8").splitlines()]
    both = [r for r in rows if r["weak_correct"] and r["strong_correct"]]
    one = [r for r in rows if r["weak_correct"] != r["strong_correct"]]
    agree = sum(
        final_answer(r["weak_response"]) == final_answer(r["strong_response"]) for r in both
    )
    differ = sum(
        final_answer(r["weak_response"]) != final_answer(r["strong_response"]) for r in one
    )
    assert len(both) > 100 and len(one) > 100
    assert agree / len(both) >= 0.97
    assert differ / len(one) >= 0.85


# -- parse_verdict -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ('{"verdict": "A"}', "A"),
        (' {"verdict": "b"} ', "B"),
        ('{"verdict": "Tie"}', "tie"),
        ('```json\n{"verdict": "tie"}\n```', "tie"),
        ('{"verdict": "C"}', None),
        ('{"winner": "A"}', None),
        ('["A"]', None),
        ('I think A. {"verdict": "A"}', None),
        ("", None),
    ],
)
def test_parse_verdict_is_strict(reply: str, verdict: str | None) -> None:
    assert parse_verdict(reply) == verdict


# -- ModelJudge against a scripted upstream ------------------------------------------------

ROUTED = "ROUTED-ANSWER 42"
REFERENCE = "REFERENCE-ANSWER 42"


class Scripted:
    """A real OpenAI-protocol server whose reply depends on the upstream model name:
    ``verdict-X`` answers ``{"verdict": "X"}``; ``prefer-routed`` / ``prefer-reference``
    answer the slot (A or B) holding that answer in the prompt; ``garbage`` answers
    prose; ``nojson`` refuses ``response_format`` with a 400; ``fail`` answers 500; ``quote``
    a 400 whose message quotes the request, ``quote-answers`` one quoting the answers."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = ""

    def reply(self, body: dict[str, Any]) -> tuple[int, str]:
        model = str(body.get("model"))
        prompt = str(body["messages"][-1]["content"])
        if model.startswith("verdict-"):
            return 200, json.dumps({"verdict": model.removeprefix("verdict-")})
        if model.startswith("prefer-"):
            marker = ROUTED if model == "prefer-routed" else REFERENCE
            a = prompt.index("[Answer A]")
            b = prompt.index("[Answer B]")
            return 200, json.dumps({"verdict": "A" if a < prompt.index(marker) < b else "B"})
        if model == "nojson" and "response_format" in body:
            return 400, "response_format is not supported"
        if model == "nojson":
            return 200, '{"verdict": "tie"}'
        if model == "fail":
            return 500, "boom"
        if model == "quote":  # a validation error quoting the request it was sent
            return 400, "refused: " + prompt[prompt.index("[User request]") :][:120]
        if model == "quote-answers":  # ... quoting the answers it was sent
            return 400, "refused: " + prompt[prompt.index("[Answer A]") :][:120]
        return 200, "Answer B looks better to me."

    def handler(self) -> type[BaseHTTPRequestHandler]:
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with scripted.lock:
                    scripted.bodies.append(body)
                status, text = scripted.reply(body)
                if status == 200:
                    data: dict[str, Any] = {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 1,
                        "model": body.get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                else:
                    data = {"error": {"message": text, "type": "invalid_request_error"}}
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler


@pytest.fixture(scope="module")
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    with serve_in_thread(server.handler()) as url:
        server.url = f"{url}/v1"
        yield server


JUDGES = (
    *("verdict-A", "verdict-B", "verdict-tie", "prefer-routed", "prefer-reference"),
    *("garbage", "nojson", "fail", "quote", "quote-answers"),
)


def _registry_text(url: str) -> str:
    models = "\n".join(f"  {m}: {{provider: up, model: {m}}}" for m in JUDGES)
    return f"""
encoder: builtin:static
providers:
  up: {{kind: openai, base_url: "{url}", timeout_s: 5}}
models:
{models}
routes:
  - {{name: r, examples: [hello], target: garbage}}
default: {{target: garbage}}
"""


def _run_judge(
    scripted: Scripted, model: str, times: int = 1, seed: int = 3
) -> tuple[list[Judgement], ModelJudge]:
    registry = parse_registry(_registry_text(scripted.url)).registry

    async def main() -> tuple[list[Judgement], ModelJudge]:
        dispatcher = Dispatcher(registry, build_providers(registry))
        judge = ModelJudge(dispatcher, model, 500, rng=random.Random(seed))
        try:
            return [await judge.judge(REQUEST, ROUTED, REFERENCE) for _ in range(times)], judge
        finally:
            await dispatcher.aclose()

    return asyncio.run(main())


def test_model_judge_sends_the_documented_prompt(scripted: Scripted) -> None:
    scripted.bodies.clear()
    [result], judge = _run_judge(scripted, "verdict-tie")
    assert result.judge == "model:verdict-tie" == judge.name
    assert (result.routed_ok, result.score, result.error) == (True, 1.0, None)
    assert result.extra["verdict"] == "tie"
    [body] = scripted.bodies
    assert body["temperature"] == 0 and body["max_tokens"] <= 64
    assert body["response_format"] == {"type": "json_object"}
    slot = result.extra["routed_position"]
    a, b = (ROUTED, REFERENCE) if slot == "A" else (REFERENCE, ROUTED)
    expected = JUDGE_PROMPT.format(request="user: What is 6 * 7?", answer_a=a, answer_b=b)
    assert body["messages"] == [{"role": "user", "content": expected}]


def test_model_judge_maps_a_fixed_slot_verdict_back_through_the_random_order(
    scripted: Scripted,
) -> None:
    for verdict in ("A", "B"):
        results, _ = _run_judge(scripted, f"verdict-{verdict}", times=12)
        positions = {r.extra["routed_position"] for r in results}
        assert positions == {"A", "B"}  # the order is drawn, both ways occur
        for r in results:
            routed_won = r.extra["routed_position"] == verdict
            assert r.routed_ok is routed_won
            assert r.extra["verdict"] == ("routed" if routed_won else "reference")


def test_model_judge_follows_the_answer_not_its_position(scripted: Scripted) -> None:
    routed, _ = _run_judge(scripted, "prefer-routed", times=10)
    reference, _ = _run_judge(scripted, "prefer-reference", times=10)
    assert {r.extra["routed_position"] for r in routed + reference} == {"A", "B"}
    assert all(r.routed_ok is True and r.score == 1.0 for r in routed)
    assert all(r.routed_ok is False and r.score == 0.0 for r in reference)


def test_an_unparseable_verdict_is_a_judge_error(scripted: Scripted) -> None:
    [result], _ = _run_judge(scripted, "garbage")
    assert result.routed_ok is None and result.score is None
    assert result.error == "the judge's reply is not a JSON verdict"
    assert ROUTED not in result.error and "Answer B" not in result.error


def test_a_failing_judge_model_is_a_judge_error(scripted: Scripted) -> None:
    [result], _ = _run_judge(scripted, "fail")
    assert result.routed_ok is None
    assert result.error is not None and result.error.startswith("judge call failed")
    assert len(result.error) <= 200


def test_a_judge_calls_failure_says_the_upstreams_words_apart(scripted: Scripted) -> None:
    """The judge's prompt holds the request, and its upstream's error may quote it: the
    error's outline (what the shadow row keeps unless ``telemetry.prompts: full``)
    leaves the upstream's words out, its status in."""
    [result], _ = _run_judge(scripted, "quote")
    assert result.error is not None and "What is 6 * 7" in result.error
    assert outline_of(result.error) == (
        "judge call failed: provider 'up': upstream returned HTTP 400"
    )


@pytest.mark.parametrize("responses", ["off", "redacted", "full"])
def test_a_judge_calls_failure_quoting_the_answers_is_kept_only_with_full_responses(
    scripted: Scripted, responses: str
) -> None:
    """The judge's upstream was sent the answers too: with ``telemetry.prompts: full``
    the shadow row keeps its words only where ``telemetry.responses`` keeps answers
    whole; else the error's outline."""
    [result], _ = _run_judge(scripted, "quote-answers")
    said = result.error
    assert said is not None and (ROUTED in said or REFERENCE in said)
    record = ShadowRecord(
        decision_id="d1",
        ts=1.0,
        route="r",
        routed_model="small",
        reference_model="ref",
        routed_answer=ROUTED,
        reference_answer=REFERENCE,
        judge_error=said,
    )
    kept = as_kept(record, responses, 1000, "full")  # type: ignore[arg-type]
    assert kept.judge_error == (said if responses == "full" else outline_of(said))
    assert kept.judge_error == "judge call failed: provider 'up': upstream returned HTTP 400" or (
        responses == "full"
    )


def test_a_provider_without_json_mode_is_asked_again_without_it(scripted: Scripted) -> None:
    scripted.bodies.clear()
    results, _ = _run_judge(scripted, "nojson", times=2)
    assert [r.routed_ok for r in results] == [True, True]
    sent = [("response_format" in b) for b in scripted.bodies]
    assert sent == [True, False, False]  # refused once, then never asked with it again


def test_judge_from_settings(scripted: Scripted) -> None:
    registry = parse_registry(_registry_text(scripted.url)).registry
    dispatcher = Dispatcher(registry, build_providers(registry))
    assert judge_from_settings(None, dispatcher) is None
    assert isinstance(judge_from_settings(JudgeSettings(kind="exact"), dispatcher), ExactJudge)
    model = judge_from_settings(
        JudgeSettings(kind="model", model="verdict-A", max_chars=300), dispatcher
    )
    assert isinstance(model, ModelJudge) and model.max_chars == 300
    with pytest.raises(ConfigError):
        judge_from_settings(JudgeSettings(kind="model"), dispatcher)
    asyncio.run(dispatcher.aclose())


def test_model_judge_truncates_long_answers_and_requests(scripted: Scripted) -> None:
    registry = parse_registry(_registry_text(scripted.url)).registry
    dispatcher = Dispatcher(registry, build_providers(registry))
    judge = ModelJudge(dispatcher, "verdict-A", 200)
    request = {"messages": [{"role": "user", "content": "ψ" * 1000}]}
    prompt = judge.prompt(request, "Ж" * 1000, "Ω" * 1000, "A")
    assert prompt.count("Ж") == prompt.count("Ω") == 200
    assert prompt.count("ψ") == 200  # the request's last 200 characters
    assert prompt.index("Ж") < prompt.index("Ω")  # the routed answer in slot A
    assert prompt.count("…[truncated]") == 2
    asyncio.run(dispatcher.aclose())


def test_a_judge_reads_an_answer_cut_past_its_max_chars_as_the_whole_answer(
    scripted: Scripted,
) -> None:
    """A shadowed stream's answer is read one character past the judge's `max_chars`
    (or further, as far as the decision log keeps): one blank that far, its words after,
    was judged whole (a verdict on the blank the model judge is shown; the exact judge's
    "too long") but, read that far, was "no routed answer"."""
    registry = parse_registry(_registry_text(scripted.url)).registry

    async def main() -> list[tuple[bool | None, str | None]]:
        dispatcher = Dispatcher(registry, build_providers(registry))
        said = []
        try:
            for judge in (ExactJudge(), ModelJudge(dispatcher, "verdict-A", 200)):
                whole = " " * (judge.max_chars + 1) + "so the answer is 7"
                for routed in (whole, whole[: judge.max_chars + 1], whole[: judge.max_chars + 9]):
                    result = await judge.judge(REQUEST, routed, "7")
                    said.append((result.routed_ok, result.error))
        finally:
            await dispatcher.aclose()
        return said

    said = asyncio.run(main())
    assert said[0] == said[1] == said[2] and said[3] == said[4] == said[5], said
