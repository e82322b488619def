"""``POST /v1/feedback`` when the decision log's store fails: a 503
``telemetry_unavailable`` in OpenAI's error shape whatever the error says, and one
warning naming why (our store's error's first line, never another error's text). A
`TelemetryError` with an empty message was a 500: its first line was read from an
empty list. The store is a stand-in over the real one (the gateway's error mapping is
what is tested), served in this process so the stand-in is what the route calls."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_proc import ECHO_ONLY, serve_in_thread
from starlette.applications import Starlette

from llmroute.errors import TelemetryError
from llmroute.log_every import LogEvery
from llmroute.server import app as app_module
from llmroute.server import feedback as feedback_module

SECRET = "sk-in-a-driver-message-0123456789"


class _FailingStore:
    """The gateway's store, but every feedback read or write raises `error`."""

    def __init__(self, store: Any, error: Exception) -> None:
        self._store, self._error = store, error

    def has_decision(self, *args: Any, **kwargs: Any) -> bool:
        raise self._error

    def write_feedback(self, *args: Any, **kwargs: Any) -> bool:
        raise self._error

    def __getattr__(self, name: str) -> Any:  # the rest (its close) is the real store's
        return getattr(self._store, name)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Starlette]]:
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{tmp_path / 'log.db'}")
    monkeypatch.setattr(feedback_module, "_UNSTORED", LogEvery(60.0))  # its first is said
    registry = tmp_path / "registry.yaml"
    registry.write_text(ECHO_ONLY.replace("telemetry: {enabled: false}\n", ""))
    app = app_module.create_app(str(registry))
    with serve_in_thread(app) as url:
        yield url, app


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (TelemetryError(""), "TelemetryError"),
        (
            TelemetryError("sqlite:///log.db: disk I/O error\nmore"),
            "sqlite:///log.db: disk I/O error",
        ),
        (RuntimeError(f"driver said {SECRET}"), "RuntimeError"),
    ],
)
def test_a_store_error_is_a_503_whatever_it_says(
    served: tuple[str, Starlette],
    error: Exception,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, app = served
    telemetry = app.state.telemetry
    monkeypatch.setattr(telemetry, "store", _FailingStore(telemetry.store, error))
    caplog.set_level(logging.WARNING, logger="llmroute.server")
    answer = httpx.post(
        f"{url}/v1/feedback", json={"decision_id": "0" * 24, "thumbs": "up"}, timeout=10
    )
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "telemetry_unavailable"
    warned = [r.getMessage() for r in caplog.records if "feedback not stored" in r.getMessage()]
    assert warned == [f"feedback not stored: {said}"]
    assert SECRET not in caplog.text and SECRET not in answer.text
