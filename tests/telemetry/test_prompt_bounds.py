"""What bounds the cost of a stored prompt: the text is cut at `max_prompt_chars` before
the PII detector reads it, the detector runs in the writer's thread (not on the event
loop), embeddings' and rerank's text is its hash unless `embeddings_text` asks, and a
record whose row cannot be built costs only itself."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from telemetry_records import ListSink

from llmroute.decide import Router
from llmroute.errors import ConfigError
from llmroute.registry import parse_registry
from llmroute.telemetry import recorder as recorder_module
from llmroute.telemetry.record import DecisionRecord, PromptMode, prompt_hash
from llmroute.telemetry.recorder import Recorder
from llmroute.telemetry.store.sqlite import SqliteStore

REGISTRY = """
encoder: builtin:static
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models: {small: {provider: p, model: s}}
routes:
  - {name: chat, examples: ["hi there", "how are you"], target: small}
default: {target: small}
%(extra)s
"""


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(parse_registry(REGISTRY % {"extra": ""}))


def _chat(router: Router, recorder: Recorder, text: str) -> DecisionRecord:
    sink = recorder.sink
    assert isinstance(sink, ListSink)
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    decision = router.decide(body)
    recorder.finished(
        router, decision, body, ts=time.time(), started_ns=time.perf_counter_ns(), status=200
    )
    return sink.records[-1]


@pytest.mark.parametrize("mode", ["full", "redacted"])
def test_a_long_prompt_is_stored_cut_and_hashed_whole(router: Router, mode: PromptMode) -> None:
    text = "tell me about this. " * 300 + "write to jane.doe@example.com soon"
    record = _chat(router, Recorder(ListSink(), None, mode, max_prompt_chars=1000), text)
    digest, stored = record.stored_prompt()
    assert digest == prompt_hash(text)  # repeats of the whole text still count as one
    assert stored is not None and 900 < len(stored) <= 1000
    assert text.startswith(stored)  # cut between words, nothing past the cut read
    assert "jane" not in stored and "<EMAIL" not in stored


def test_the_default_cap_is_32000_characters(router: Router) -> None:
    text = "word " * 20_000
    record = _chat(router, Recorder(ListSink(), None, "full"), text)
    stored = record.stored_prompt()[1]
    assert stored is not None and 31_900 < len(stored) <= 32_000


def test_max_prompt_chars_is_checked_at_load() -> None:
    with pytest.raises(ConfigError) as err:
        parse_registry(REGISTRY % {"extra": "telemetry: {max_prompt_chars: 10}"})
    assert "max_prompt_chars" in str(err.value)
    settings = parse_registry(REGISTRY % {"extra": "telemetry: {max_prompt_chars: 500}"})
    assert settings.registry.telemetry.max_prompt_chars == 500


def test_a_chats_prompt_is_redacted_in_the_writer_not_on_the_request_path(
    router: Router,
) -> None:
    text = "call me on +44 20 7946 0958 or mail jane.doe@example.com"
    record = _chat(router, Recorder(ListSink(), None, "redacted"), text)
    assert record.redacted_prompt is None  # nothing run on the request path
    stored = record.stored_prompt()[1]  # what the writer's thread stores
    assert stored is not None and "<EMAIL_1>" in stored and "<PHONE_1>" in stored
    assert "7946" not in stored and "jane" not in stored


def _embeddings(recorder: Recorder, text: str) -> DecisionRecord:
    return recorder.by_api("embeddings").unrouted(
        "(embeddings)",
        "embed",
        "v1",
        {"model": "embed", "input": [text]},
        lambda body: "\n".join(body["input"]),
        ts=time.time(),
        started_ns=time.perf_counter_ns(),
        status=200,
    )


@pytest.mark.parametrize("mode", ["redacted", "full"])
def test_embeddings_text_is_its_hash_unless_asked(mode: PromptMode) -> None:
    text = "a document that names jane.doe@example.com"
    kept = _embeddings(Recorder(ListSink(), None, mode), text)
    assert kept.stored_prompt() == (prompt_hash(text), None)
    assert kept.prompt_mode == "hash"
    asked = _embeddings(Recorder(ListSink(), None, mode, embeddings_text=True), text)
    stored = asked.stored_prompt()[1]
    assert stored is not None and "a document that names" in stored
    assert ("<EMAIL_1>" in stored) == (mode == "redacted")


def test_embeddings_text_is_a_registry_setting() -> None:
    loaded = parse_registry(REGISTRY % {"extra": "telemetry: {embeddings_text: true}"})
    assert loaded.registry.telemetry.embeddings_text is True
    assert parse_registry(REGISTRY % {"extra": ""}).registry.telemetry.embeddings_text is False
    with pytest.raises(ConfigError) as err:
        parse_registry(REGISTRY % {"extra": "telemetry: {embeddings_text: sometimes}"})
    assert "embeddings_text" in str(err.value)


def test_a_failing_redaction_keeps_the_hash_and_costs_no_other_record(
    router: Router, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = recorder_module.redact_text

    def fragile(text: str) -> str:
        if "BOOM" in text:
            raise RuntimeError("the detector broke on jane.doe@example.com")
        return real(text)

    monkeypatch.setattr(recorder_module, "redact_text", fragile)
    sink = ListSink()
    recorder = Recorder(sink, None, "redacted")
    good = _chat(router, recorder, "mail jane.doe@example.com please")
    bad = _chat(router, recorder, "BOOM goes the detector")
    store = SqliteStore(tmp_path / "log.db")
    store.migrate()
    store.write_decisions([good, bad])
    rows = {d.id: d for d in store.decisions(0.0)}
    assert set(rows) == {good.id, bad.id}
    assert rows[bad.id].prompt is None and rows[bad.id].prompt_hash == prompt_hash(bad.prompt or "")
    assert rows[good.id].prompt == "mail <EMAIL_1> please"
    store.close()


def test_a_record_whose_row_cannot_be_built_is_left_out_alone(
    router: Router, tmp_path: Path
) -> None:
    sink = ListSink()
    recorder = Recorder(sink, None, "hash")
    good = _chat(router, recorder, "hello there")
    unwritable = dataclasses.replace(_chat(router, recorder, "how are you"), tags=(object(),))
    store = SqliteStore(tmp_path / "log.db")
    store.migrate()
    # no exception: the batch is not lost; the one left out is said
    assert store.write_decisions([unwritable, good]) == 1
    assert [d.id for d in store.decisions(0.0)] == [good.id]
    store.close()
