"""A long answer's PII is redacted in `joined_bytes`' worker threads (`off_loop`), not in
the event loop's default executor: there a remote encoder's decisions (the gateway's,
and the SDK's) wait out their round trips, up to the encoder's timeout each, and the
answer waited behind them."""

from __future__ import annotations

from loop_ticks import while_default_executor_blocked
from starlette.responses import JSONResponse

from llmroute.decision import Decision, SafetyOutcome
from llmroute.registry.schema import SafetyProfile
from llmroute.safety.answer_pii import AnswerMask
from llmroute.safety.pii import PiiDetector
from llmroute.sdk import chat as sdk_chat
from llmroute.server import chat as server_chat
from llmroute.untrusted_json import loads

MASK = AnswerMask(PiiDetector(["EMAIL"]), SafetyProfile(answer_pii={"EMAIL": "redact"}))
SAFETY = SafetyOutcome(profile="p", action="allow", answer_mask=MASK)
LONG = "Write to alice@corp.example. " + "Nothing else here. " * 1_000  # past OFF_LOOP_CHARS
ANSWER = {"id": "c", "choices": [{"index": 0, "message": {"role": "assistant", "content": LONG}}]}
MASKED = "Write to <EMAIL>. " + "Nothing else here. " * 1_000


def test_the_gateway_masks_a_long_answer_beside_the_default_executors_blocking_calls() -> None:
    answered = while_default_executor_blocked(
        lambda: server_chat._for_client(JSONResponse(ANSWER), SAFETY)
    )
    assert loads(bytes(answered.body))["choices"][0]["message"]["content"] == MASKED


def test_the_sdk_masks_a_long_answer_beside_the_default_executors_blocking_calls() -> None:
    decision = Decision(
        id="d",
        route="r",
        model="m",
        layer="default",
        confidence=1.0,
        margin=None,
        reason="",
        registry_version="v",
        signals=(),
        encode_us=0.0,
        total_us=0.0,
        safety=SAFETY,
    )
    masked = while_default_executor_blocked(lambda: sdk_chat._restored(ANSWER, decision))
    assert masked["choices"][0]["message"]["content"] == MASKED
    assert ANSWER["choices"][0]["message"]["content"] == LONG  # a copy is masked
