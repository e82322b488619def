"""A real ``uvicorn --factory llmroute.server.app:app_from_env`` on 127.0.0.1, without
``$LLMROUTE_BIND_HOST``: the DNS-rebinding Host check is on (it was off: the factory
does not know the address), decided by the address each request came in on; and
llmroute's own log lines are said, on uvicorn's handler, as ``serve`` says them (they
went unsaid: uvicorn configures its own loggers only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gateway_proc import free_port

REGISTRY = Path(__file__).resolve().parents[2] / "examples" / "echo.yaml"


@dataclass(frozen=True)
class Factory:
    url: str
    log: Path
    port: int


@contextmanager
def _factory(folder: Path, env: dict[str, str]) -> Iterator[Factory]:
    """``uvicorn --factory`` of the echo registry on a free port with the variables `env`,
    its stderr in FOLDER/stderr.log, once /health answers."""
    log = folder / "stderr.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMROUTE_")} | env
    env["LLMROUTE_REGISTRY"] = str(REGISTRY)
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    command = [uvicorn, "--factory", "llmroute.server.app:app_from_env"]
    with log.open("wb") as err:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # at most a minute: the first load embeds the examples
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        else:
            pytest.fail(f"uvicorn did not start: {log.read_text()}")
        yield Factory(url, log, port)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    env = {"LLMROUTE_ALLOWED_HOSTS": "proxy.test", "LLMROUTE_LOG_REQUESTS": "1"}
    with _factory(tmp_path_factory.mktemp("factory"), env) as started:
        yield started


def test_a_foreign_host_is_refused_and_loopback_and_allowed_ones_answered(
    factory: Factory,
) -> None:
    rebound = httpx.get(f"{factory.url}/v1/models", headers={"Host": "rebound.test"}, timeout=10)
    assert rebound.status_code == 400, rebound.text
    assert rebound.json()["error"]["code"] == "invalid_host"
    for host in (f"127.0.0.1:{factory.port}", f"localhost:{factory.port}", "proxy.test"):
        answered = httpx.get(f"{factory.url}/v1/models", headers={"Host": host}, timeout=10)
        assert answered.status_code == 200, (host, answered.text)


def _said(log: Path, text: str) -> str:
    """The log once it holds `text` (each line is flushed as written: a few tries)."""
    said = ""
    for _ in range(50):
        said = log.read_text(encoding="utf-8")
        if text in said:
            break
        time.sleep(0.1)
    return said


def test_llmroutes_own_lines_are_said_as_serve_says_them(factory: Factory) -> None:
    said = _said(factory.log, "INFO:     serving registry")
    assert f"INFO:     serving registry {REGISTRY}" in said, said
    assert "INFO:     decision log off" in said
    httpx.get(f"{factory.url}/v1/models", headers={"Host": "other.test"}, timeout=10)
    said = _said(factory.log, "'other.test'")
    assert "WARNING:  refused GET /v1/models from 127.0.0.1 (invalid_host 400)" in said, said
    ask = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
    answer = httpx.post(f"{factory.url}/v1/chat/completions", json=ask, timeout=30)
    decision = answer.headers["x-llmroute-decision-id"]
    said = _said(factory.log, decision)
    assert f"INFO:     {decision} route=" in said, said  # $LLMROUTE_LOG_REQUESTS


def test_logging_configured_before_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    """uvicorn's --log-config (or the program building the app) gave the root a handler:
    nothing is added, not even to llmroute's logger."""
    import logging

    from llmroute.server.logs import join_uvicorns_logging

    uvicorns = logging.getLogger("uvicorn")
    handler = logging.StreamHandler()
    uvicorns.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO):  # caplog's handler: on the root
            join_uvicorns_logging(requests=True)
        assert logging.getLogger("llmroute").handlers == []
        assert logging.getLogger("llmroute.requests").handlers == []
    finally:
        uvicorns.removeHandler(handler)


@pytest.mark.parametrize(
    ("server", "refused"),
    [
        (("127.0.0.1", 8000), True),
        (("::1", 8000), True),
        (("::ffff:127.0.0.1", 8000), True),  # loopback through a dual-stack socket
        (("192.168.1.20", 8000), False),  # a private address: as `serve --host` on one
        (None, False),  # a Unix socket, which no page reaches
    ],
)
def test_without_a_bind_host_the_address_a_request_came_in_on_decides(
    server: tuple[str, int] | None, refused: bool
) -> None:
    """The Host check's per-request verdict, ASGI ``server`` being what uvicorn fills
    with the socket's own address."""
    import asyncio

    from starlette.types import Message

    from llmroute.server.browsers import browser_middleware

    async def answered(scope: object, receive: object, send: object) -> None:
        sent.append({"type": "app"})

    sent: list[Message] = []
    (middleware,) = browser_middleware((), None, ())
    guard = middleware.cls(answered, *middleware.args, **middleware.kwargs)
    scope = {
        "type": "http", "method": "GET", "path": "/v1/models", "headers": [(b"host", b"a.test")],
        "server": server, "client": ("127.0.0.1", 5000), "query_string": b"",
    }  # fmt: skip

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    for _ in range(2):  # the second from the verdict kept
        sent.clear()
        asyncio.run(guard(scope, receive, send))
        status = next(m.get("status") for m in sent if m["type"] in ("app", "http.response.start"))
        assert (status == 400) is refused, sent


LOG_CONFIG_THEN_JOIN = """
import logging, logging.config, sys
from llmroute.server.logs import join_uvicorns_logging

logging.config.dictConfig({  # as uvicorn applies a --log-config naming uvicorn's logger alone
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"f": {"format": "%(name)s %(message)s"}},
    "handlers": {"h": {"class": "logging.StreamHandler", "formatter": "f", "stream": "ext://sys.stdout"}},
    "loggers": {"uvicorn": {"handlers": ["h"], "level": "INFO"}},
})
join_uvicorns_logging()
logging.getLogger("uvicorn.error").info("started")
logging.getLogger("llmroute.server").info("serving")
"""


def test_a_log_config_whose_uvicorn_logger_propagates_says_each_line_once() -> None:
    """A ``--log-config`` without ``propagate: false`` (dictConfig's default: true): the
    root given uvicorn's handler too said each of uvicorn's lines twice."""
    said = subprocess.run(
        [sys.executable, "-c", LOG_CONFIG_THEN_JOIN],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert said == ["uvicorn.error started", "llmroute.server serving"], said


def test_log_format_json_makes_llmroutes_own_lines_json_once(tmp_path: Path) -> None:
    """``$LLMROUTE_LOG_FORMAT=json`` was ``serve``'s alone: under the factory llmroute's
    lines (its start, refusals, request lines) were text on uvicorn's handler. Now each
    is one JSON object, once; uvicorn's own lines stay its ``--log-config``'s."""
    env = {"LLMROUTE_LOG_FORMAT": "JSON", "LLMROUTE_LOG_REQUESTS": "1"}
    with _factory(tmp_path, env) as started:
        httpx.get(f"{started.url}/v1/models", headers={"Host": "other.test"}, timeout=10)
        ask = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
        answer = httpx.post(f"{started.url}/v1/chat/completions", json=ask, timeout=30)
        decision = answer.headers["x-llmroute-decision-id"]
        said = _said(started.log, decision).splitlines()
    ours = [json.loads(line) for line in said if line.startswith("{")]
    assert all(line.startswith(("{", "INFO:")) for line in said), said  # no bare text
    serving = [o for o in ours if o["message"].startswith("serving registry")]
    assert [o["logger"] for o in serving] == ["llmroute.server"], said
    refused = [o for o in ours if "refused GET /v1/models" in o["message"]]
    assert len(refused) == 1 and refused[0]["level"] == "warning", said
    request = [o for o in ours if o.get("decision_id") == decision]
    assert len(request) == 1 and request[0]["logger"] == "llmroute.requests", said
    assert any(line.startswith("INFO:     Uvicorn running") for line in said), said


LOG_FILE_THEN_JOIN = """
import logging, logging.config, sys
from llmroute.server.logs import join_uvicorns_logging

logging.config.dictConfig({  # a --log-config writing uvicorn's lines to a file it rotates
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"f": {"format": "%(name)s %(message)s"}},
    "handlers": {"h": {
        "class": "logging.handlers.RotatingFileHandler", "formatter": "f",
        "delay": sys.argv[2] == "delay", "filename": sys.argv[1], "maxBytes": 300,
        "backupCount": 20,
    }},
    "loggers": {"uvicorn": {"handlers": ["h"], "level": "INFO", "propagate": False}},
})
join_uvicorns_logging(fmt="json")
logging.getLogger("uvicorn.error").info("started")
for n in range(8):
    logging.getLogger("llmroute.server").info("serving %d", n)
logging.getLogger("uvicorn.error").info("rotated")  # past maxBytes: the file rotates
logging.getLogger("llmroute.server").info("serving 8")
"""


@pytest.mark.parametrize("opened", ["delay", "at_once"])
def test_log_format_json_goes_where_a_log_config_file_handler_writes(
    tmp_path: Path, opened: str
) -> None:
    """llmroute's JSON lines go through uvicorn's own handler: a copy of it writing to
    its stream wrote to stderr for a file not opened yet (``delay: true``), and to the
    closed file once uvicorn's handler rotated it (an error, the line lost)."""
    log = tmp_path / "uvicorn.log"
    ran = subprocess.run(
        [sys.executable, "-c", LOG_FILE_THEN_JOIN, str(log), opened],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert (ran.stdout, ran.stderr) == ("", ""), ran.stderr
    lines = [line for f in tmp_path.iterdir() for line in f.read_text().splitlines()]
    assert "uvicorn.error started" in lines, lines
    ours = sorted(json.loads(line)["message"] for line in lines if line.startswith("{"))
    assert ours == [f"serving {n}" for n in range(9)], lines
