"""An error no handler expected is one 500 in the front's error shape and one log record
with its traceback: Starlette's last resort re-raised it after answering, so uvicorn
logged each one a second time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from batch_runs import one_failed_line
from gateway_proc import ECHO_ONLY, serve_in_thread, wait_for
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import Response

from llmroute.dispatch import Dispatcher, Plan, Served
from llmroute.server import app as app_module
from llmroute.server.fronts import Stateless


async def _fails(request: Request) -> Response:
    raise RuntimeError("the handler's own bug")


async def _fails_to_dispatch(self: Dispatcher, plan: Plan, body: dict[str, Any]) -> Served:
    raise RuntimeError("a bug once the request is routed")


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(app_module, "list_models", _fails)
    monkeypatch.setattr(app_module, "messages", _fails)
    monkeypatch.setattr(Dispatcher, "complete", _fails_to_dispatch)  # chat, once routed
    yield from _serving(tmp_path)


async def _fails_to_convert(self: Stateless, data: Any, model: str, body: Any) -> Any:
    raise RuntimeError("a bug converting the answer back")


@pytest.fixture
def converting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A gateway whose chat answers come (the echo model's), and whose fronts' converting
    them back (``/v1/messages``, ``/v1/responses`` without a store) is a bug."""
    monkeypatch.setattr(Stateless, "answer", _fails_to_convert)
    yield from _serving(tmp_path)


def _serving(tmp_path: Path) -> Iterator[str]:
    registry = tmp_path / "registry.yaml"
    registry.write_text(ECHO_ONLY + "batches: {concurrency: 1}\n")
    with serve_in_thread(app_module.create_app(str(registry))) as url:
        yield url


def test_an_unhandled_error_is_one_500_and_one_log_record(
    served: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    models = httpx.get(f"{served}/v1/models", timeout=10)
    messages = httpx.post(
        f"{served}/v1/messages",
        json={"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    metrics = httpx.get(f"{served}/metrics", timeout=10).text

    assert models.status_code == 500
    assert models.json() == {
        "error": {
            "message": "internal server error",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert messages.status_code == 500
    assert messages.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "internal server error"},
    }
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert [record.getMessage() for record in errors] == [
        f"unhandled error on GET /v1/models (request {models.headers['x-request-id']})",
        f"unhandled error on POST /v1/messages (request {messages.headers['request-id']})",
    ]
    assert all(record.exc_info is not None for record in errors)
    assert 'status="500"' in metrics


def test_an_unhandled_error_after_routing_is_its_decision(
    served: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug once the request is routed: its 500 carries the decision's id, which the
    error's log record names, and the request is one request line, its decision's (500
    ``internal_error``); it was no decision at all, and a line with an id of its own."""
    caplog.set_level(logging.INFO)
    answer = httpx.post(
        f"{served}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hello there"}]},
        timeout=10,
    )
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    request_id = answer.headers["x-request-id"]
    lines = [r.__dict__["request"] for r in caplog.records if r.name == "llmroute.requests"]
    assert [line.get("decision_id", line.get("request_id")) for line in lines] == [request_id]
    assert (lines[0]["status"], lines[0]["error"], lines[0]["route"]) == (
        500,
        "internal_error",
        "chat",
    )
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"unhandled error on POST /v1/chat/completions (request {request_id})"]


def test_a_batch_lines_unhandled_error_after_routing_names_its_decision(
    served: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch line that a bug fails once routed: its answer's ``request_id`` is its
    decision's (it was a fresh ``req_`` one, and the line had no decision at all)."""
    caplog.set_level(logging.INFO)
    line = {
        "custom_id": "one",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]},
    }
    answer = one_failed_line(served, line, "/v1/chat/completions")
    assert answer["response"]["status_code"] == 500
    request_id = answer["response"]["request_id"]
    lines = [r.__dict__["request"] for r in caplog.records if r.name == "llmroute.requests"]
    (decided,) = [line for line in lines if line.get("decision_id") == request_id]
    assert (decided["status"], decided["error"]) == (500, "internal_error")
    assert any(
        f"a request failed (request {request_id})" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
    )


def test_a_bug_after_its_decision_was_logged_is_a_line_of_its_own(
    converting: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug once the decision's record was written (200: the model answered), converting
    the answer for its front: the 500 carries the decision's id, and is a request line
    naming it with the status the client got. The decision's record, the request's only
    line once routed, says 200, so the 500 was in no request line at all (only in the
    error's own log record)."""
    caplog.set_level(logging.INFO)
    answer = httpx.post(
        f"{converting}/v1/messages",
        json={"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert answer.status_code == 500 and answer.json()["type"] == "error"
    request_id = answer.headers["x-request-id"]
    assert answer.headers["request-id"] == request_id
    lines = [r.__dict__["request"] for r in caplog.records if r.name == "llmroute.requests"]
    (decided,) = [line for line in lines if line.get("decision_id") == request_id]
    assert decided["status"] == 200
    (errored,) = [line for line in lines if line.get("request_id") == request_id]
    assert (errored["status"], errored["error"], errored["path"]) == (
        500,
        "api_error",
        "/v1/messages",
    )


def test_a_bug_after_its_decision_was_logged_is_counted_as_the_500_the_client_got(
    converting: str,
) -> None:
    """The late 500's request is counted by its record (``requests_total``, the 200 the
    model answered) and its 500 as an error no record counts (``api_errors_total``),
    where a 5xx alert over both sees it; it was in neither, as the record had counted the
    request."""
    answer = httpx.post(
        f"{converting}/v1/messages",
        json={"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert answer.status_code == 500
    wanted = {
        ("llmroute_requests_total", "200"): 1.0,
        ("llmroute_api_errors_total", "500"): 1.0,
    }

    def counted() -> dict[tuple[str, str], float]:
        text = httpx.get(f"{converting}/metrics", timeout=10).text
        return {
            (sample.name, sample.labels["status"]): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in ("llmroute_requests_total", "llmroute_api_errors_total")
        }

    wait_for("the request counted", lambda: counted() == wanted, 10)
