"""A request that got no answer keeps in its decision log row what it did before it
ended, as a served one's row does: one cut by its client while on its fallback lists
the failed model and the cut one, so the report and the dashboard count it as a
fallback. A gateway in a thread (`create_app`) before a fake upstream on 127.0.0.1, its
log in a SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve_in_thread, wait_for
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmroute.errors import TelemetryError
from llmroute.server import app as app_module
from llmroute.telemetry.record import LoggedDecision
from llmroute.telemetry.report import is_fallback
from llmroute.telemetry.store import open_store
from llmroute.telemetry.tracing import Tracing

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
  broken: {provider: fake, model: "broken?status=500", price: {input: 1, output: 2}}
  hung: {provider: fake, model: "hung?delay=4&ttft=4", price: {input: 5, output: 15}}
  cutoff: {provider: fake, model: "cutoff?finish=length", price: {input: 1, output: 2}}
  good: {provider: fake, model: good-up, price: {input: 10, output: 30}}
routes:
  - name: falling
    examples: ["plan a trip to Rome"]
    target: broken
    policy: {fallback: [hung]}
  - name: escalating
    examples: ["summarise the quarterly report"]
    target: cutoff
    cascade: [cutoff, good]
default: {target: good}
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
telemetry:
  prompts: full
  flush_seconds: 0.05
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as up:
        yield up


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def gateway(
    upstream: FakeUpstream,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, str]]:
    """(the gateway's URL, its decision log's URL), its spans to `exporter`."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(app_module, "tracing_from_env", lambda: Tracing(provider))
    store_url = f"sqlite:///{tmp_path / 'log.db'}"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", store_url)
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY % {"url": upstream.url})
    try:
        with serve_in_thread(app_module.create_app(str(registry))) as url:
            yield url, store_url
    finally:
        provider.shutdown()


def _logged(store_url: str, prompt: str) -> LoggedDecision:
    store = open_store(store_url)
    found: list[LoggedDecision] = []

    def check() -> bool:
        try:
            found[:] = [d for d in store.decisions(0) if d.prompt == prompt]
        except TelemetryError:  # the writer has not created the tables yet
            return False
        return bool(found)

    try:
        wait_for(f"the row of {prompt!r}", check, 10)
    finally:
        store.close()
    return found[0]


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_cut_on_its_fallback_keeps_its_attempt_path(
    gateway: tuple[str, str], upstream: FakeUpstream, stream: bool
) -> None:
    """The decided model failed (500), its fallback was slow, and the client left: the
    499 row lists the failure and the fallback it was cut on, and is a fallback. It
    listed nothing, so the report, the dashboard and the span saw no fallback at all."""
    url, store_url = gateway
    prompt = f"plan a trip to Rome, streamed {stream}"
    body: dict[str, Any] = {"model": "falling", "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    before = len(upstream.cut)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=1.0)
    wait_for("the fallback's call closed", lambda: len(upstream.cut) > before, 10)
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.served_model) == (499, "client_disconnected", None)
    failed, cut = row.attempts
    assert failed.startswith("broken via fake (") and "500" in failed
    assert cut == "hung via fake (cancelled)"
    assert is_fallback(row)
    assert row.tokens_in and row.model == "broken"  # its cut prompt, sent to the fallback
