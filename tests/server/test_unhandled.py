"""An error no handler expected is one 500 in the front's error shape and one log record
with its traceback: Starlette's last resort re-raised it after answering, so uvicorn
logged each one a second time."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from gateway_proc import ECHO_ONLY, free_port, wait_for
from starlette.requests import Request
from starlette.responses import Response

from llmroute.server import app as app_module


async def _fails(request: Request) -> Response:
    raise RuntimeError("the handler's own bug")


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(app_module, "list_models", _fails)
    monkeypatch.setattr(app_module, "messages", _fails)
    registry = tmp_path / "registry.yaml"
    registry.write_text(ECHO_ONLY)
    port = free_port()
    config = uvicorn.Config(
        app_module.create_app(str(registry)), port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()))
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for("the gateway ready", ready, 60)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


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
