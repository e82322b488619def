"""What the recorder keeps of the prompt, per `telemetry.prompts`, and that a request
safety redacted is never logged unredacted."""

from __future__ import annotations

import dataclasses
import time

import pytest
from telemetry_records import ListSink

from llmroute.decide import Router
from llmroute.registry import parse_registry
from llmroute.telemetry.record import DecisionRecord, PromptMode, prompt_hash
from llmroute.telemetry.recorder import Recorder, redact_text

REGISTRY = """
encoder: builtin:static
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models: {small: {provider: p, model: s}}
routes:
  - {name: chat, examples: ["hi there", "how are you"], target: small}
  - {name: mail, examples: ["write an email to my boss"], target: small,
     policy: {safety: open}}
  - {name: billing, examples: ["refund my card"], target: small,
     policy: {safety: payments}}
default: {target: small}
safety:
  profiles:
    standard: {injection: block, pii: {SECRET: block, "*": redact}}
    open: {injection: block, pii: allow}
    payments: {injection: block, pii: {CARD: allow, "*": redact}}
  profile: standard
%(extra)s
"""

EMAIL = "my address is jane.doe@example.com, say hi"


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(parse_registry(REGISTRY % {"extra": ""}))


def _record(router: Router, mode: PromptMode, text: str, model: str = "auto") -> DecisionRecord:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    sink = ListSink()
    recorder = Recorder(sink, None, mode)
    decision = router.decide(body)
    recorder.finished(
        router, decision, body, ts=time.time(), started_ns=time.perf_counter_ns(), status=200
    )
    (record,) = sink.records
    return record


def _stored(
    router: Router, mode: PromptMode, text: str, model: str = "auto"
) -> tuple[str | None, str | None]:
    return _record(router, mode, text, model).stored_prompt()


def test_modes_store_nothing_a_hash_or_the_text(router: Router) -> None:
    text = "hi there, how are you"
    assert _stored(router, "off", text) == (None, None)
    assert _stored(router, "hash", text) == (prompt_hash(text), None)
    assert _stored(router, "full", text) == (prompt_hash(text), text)
    assert _stored(router, "redacted", text) == (prompt_hash(text), text)


@pytest.mark.parametrize("mode", ["full", "redacted", "hash"])
def test_a_request_safety_redacted_is_logged_redacted_in_every_mode(
    router: Router, mode: PromptMode
) -> None:
    digest, prompt = _stored(router, mode, EMAIL)
    redacted = "my address is <EMAIL_1>, say hi"
    assert digest == prompt_hash(redacted)
    assert prompt == (None if mode == "hash" else redacted)


def test_redacted_mode_redacts_what_the_policy_let_through(router: Router) -> None:
    # The `mail` route's profile allows PII: the model sees the address, the log does not.
    text = "write an email to my boss at jane.doe@example.com"
    assert _stored(router, "full", text, model="mail")[1] == text
    assert _stored(router, "redacted", text, model="mail")[1] == (
        "write an email to my boss at <EMAIL_1>"
    )


def test_redacted_mode_redacts_what_a_partial_redaction_let_through(router: Router) -> None:
    # The `billing` route's profile redacts the address but lets the card through to
    # the model: safety's redaction still holds the card, the log must not.
    text = "refund my card 4111 1111 1111 1111 and mail jane.doe@example.com"
    sent = "refund my card 4111 1111 1111 1111 and mail <EMAIL_1>"
    assert _stored(router, "full", text, model="billing")[1] == sent
    assert _stored(router, "redacted", text, model="billing") == (
        prompt_hash(sent),
        "refund my card <CARD_1> and mail <EMAIL_1>",
    )


def test_the_logs_redaction_numbers_past_the_placeholders_the_text_holds() -> None:
    # a placeholder already in the text (safety's, or one the user pasted) stands for
    # its own value: a new one is never given the same name
    assert redact_text("<EMAIL_1> wrote to jane.doe@example.com") == (
        "<EMAIL_1> wrote to <EMAIL_2>"
    )


def test_without_a_sink_nothing_of_the_prompt_is_computed(router: Router) -> None:
    body = {"messages": [{"role": "user", "content": EMAIL}]}
    recorder = Recorder(None, None, "full")
    record = recorder.finished(
        router, router.decide(body), body, ts=0.0, started_ns=time.perf_counter_ns(), status=200
    )
    assert record.prompt is None and record.latency_ms >= 0


SECRET = "deploy with this key ghp_0123456789abcdefABCDEF0123456789abcd please"


@pytest.mark.parametrize("mode", ["full", "redacted"])
def test_a_blocked_request_is_stored_as_a_hash_unless_the_operator_opts_in(
    router: Router, mode: PromptMode
) -> None:
    """The standard profile blocks secrets: what was refused (a live key here) must not
    land in the decision log because prompts are logged in full, only its hash; the
    row says so. ``safety.log_blocked_text`` is the operator's opt-in to keep it."""
    record = _record(router, mode, SECRET)
    assert record.decision.blocked
    assert record.prompt_mode == "hash"
    assert record.stored_prompt() == (prompt_hash(SECRET), None)
    assert "ghp_" not in repr(record.to_row())

    opted_in = Router(parse_registry(REGISTRY % {"extra": "  log_blocked_text: true"}))
    record = _record(opted_in, mode, SECRET)
    assert record.decision.blocked and record.prompt_mode == mode
    stored = record.stored_prompt()[1]
    assert stored is not None and ("ghp_" in stored) == (mode == "full")


def test_the_prompt_stored_is_the_text_the_layers_routed_on(router: Router) -> None:
    """The body is not parsed a second time for the log: the routed request's text is
    stored when the body recorded is the one routed, and another body is parsed."""
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi there"}]}
    decision = router.decide(body)
    assert decision.routed == (id(body), "hi there")
    decision = dataclasses.replace(decision, routed=(id(body), "as the layers saw it"))

    def stored(recorded: dict[str, object]) -> str | None:
        sink = ListSink()
        Recorder(sink, None, "full").finished(
            router,
            decision,
            recorded,
            ts=time.time(),
            started_ns=time.perf_counter_ns(),
            status=200,
        )
        return sink.records[0].stored_prompt()[1]

    assert stored(body) == "as the layers saw it"
    assert stored(dict(body)) == "hi there"  # not the body routed: its own text


def test_the_record_keeps_no_original_value_safety_redacted() -> None:
    """A profile that restores answers holds each value it replaced (`restore`), and the
    decision the text it routed on: both for the request's own way out. Its record waits
    in the writer's queue past the request, and the row reads neither, so the record's
    decision is the same less those (and the redacted body, and the spans the detectors
    found)."""
    restoring = REGISTRY.replace("standard: {", "standard: {restore: true, ", 1)
    router = Router(parse_registry(restoring % {"extra": ""}))
    body = {"model": "auto", "messages": [{"role": "user", "content": EMAIL}]}
    decision = router.decide(body)
    assert decision.safety is not None and decision.routed is not None
    assert dict(decision.safety.restore or {}) == {"<EMAIL_1>": "jane.doe@example.com"}
    assert "jane.doe" in decision.routed[1]
    sink = ListSink()
    recorder = Recorder(sink, None, "full")
    record = recorder.finished(
        router, decision, body, ts=time.time(), started_ns=time.perf_counter_ns(), status=200
    )
    assert sink.records == [record]
    kept = record.decision
    assert kept.routed is None and kept.safety is not None
    assert (kept.safety.restore, kept.safety.redacted_body, kept.safety.detected) == (None,) * 3
    assert kept.to_dict() == decision.to_dict()
    assert record.stored_prompt()[1] == "my address is <EMAIL_1>, say hi"
    # the request's own decision is left whole: its answer is restored from it
    assert decision.safety.restore is not None and decision.routed is not None


def test_the_record_keeps_no_embedding_of_the_request(router: Router) -> None:
    """The request text's vector serves its own request (the layers, a pool's fall to
    the default, the semantic cache's keys); a vector can be inverted to approximate
    text, and its 384 or more floats would wait in the log's queue and a shadow's calls
    with each record. Nothing read after the request needs it."""
    body = {"model": "auto", "messages": [{"role": "user", "content": "how are you"}]}
    decision = router.decide(body)
    assert decision.embedding is not None and decision.embedded_chars > 0
    sink = ListSink()
    record = Recorder(sink, None, "full").finished(
        router, decision, body, ts=time.time(), started_ns=time.perf_counter_ns(), status=200
    )
    kept = record.decision
    assert kept.embedding is None and kept.embedded_chars == 0
    assert kept.to_dict() == decision.to_dict()
    assert decision.embedding is not None  # the request's own is left whole
