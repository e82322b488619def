"""The gateway's log lines: ``--log-format json`` (one object a line, access lines with
their fields, llmroute's own warnings among them, no secret), ``--log-level`` and
``--no-access-log``, end to end with `llmroute serve` as a subprocess in front of a fake
upstream; and the JSON formatter's fields on their own."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import FAIL_500, FakeUpstream, fake_upstream
from gateway_proc import serve_text, wait_for

from llmroute.server.logs import JsonFormatter, log_config

KEY_ENV = "LLMROUTE_TEST_UPSTREAM_KEY"
SECRET = "sk-test-SECRET-logs-9f8e7d6c5b4a"

REGISTRY = """\
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", api_key_env: %(key_env)s, timeout_s: 5}
models:
  broken: {provider: fake, model: %(fail)s}
  small: {provider: fake, model: up-small}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: broken
    policy: {fallback: [small]}
default: {target: small}
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
telemetry: {enabled: false}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def _requests(url: str) -> None:
    """A routed request whose first model fails (a WARNING from llmroute, then the
    fallback answers) and a body that is not JSON (400)."""
    chat = f"{url}/v1/chat/completions"
    ask = {"model": "auto", "messages": [{"role": "user", "content": "hi there!"}]}
    assert httpx.post(chat, json=ask, timeout=10).status_code == 200
    assert httpx.post(chat, content=b"{bad", timeout=10).status_code == 400


def _lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.strip()]


def test_json_lines_carry_the_access_fields_and_llmroute_warnings(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    text = REGISTRY % {"url": upstream.url, "key_env": KEY_ENV, "fail": FAIL_500}
    env = {KEY_ENV: SECRET}
    with serve_text(text, tmp_path, ["--log-format", "json"], env) as served:
        _requests(served.url)
        wait_for("the access lines", lambda: "/v1/chat/completions" in served.log_text(), 10)
    lines = _lines(served.log)
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]  # every line parses
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert all(r["time"].endswith("Z") and r["level"] in {"info", "warning"} for r in records)
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    posts = [(r["method"], r["path"], r["status"]) for r in access if r["method"] == "POST"]
    assert posts == [("POST", "/v1/chat/completions", 200), ("POST", "/v1/chat/completions", 400)]
    (serving,) = [r for r in records if r["message"].startswith("serving registry")]
    assert serving["logger"] == "llmroute.server"
    assert "1 route, 2 models, 0 rules, encoder builtin:static" in serving["message"]
    failed = [r for r in records if r["logger"].startswith("llmroute") and "broken" in r["message"]]
    assert failed and failed[0]["level"] == "warning"
    assert SECRET not in served.log.read_text()


def test_what_the_first_build_logs_is_in_the_configured_format(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The router is built before uvicorn starts (so a registry that cannot be served is
    one line); a warning it logged then was plain text among the JSON lines."""
    cache = tmp_path / "cache"
    text = REGISTRY % {"url": upstream.url, "key_env": KEY_ENV, "fail": FAIL_500}
    env = {KEY_ENV: SECRET, "LLMROUTE_CACHE_DIR": str(cache)}
    with serve_text(text, tmp_path, ["--log-format", "json"], env):
        pass
    for shard in cache.glob("embeddings/*/shard-*.npz"):
        shard.write_bytes(b"cut short")  # the next build drops it, with a warning
    (tmp_path / "again").mkdir()
    with serve_text(text, tmp_path / "again", ["--log-format", "json"], env) as served:
        pass
    records = [json.loads(line) for line in _lines(served.log)]  # every line parses
    dropped = [r for r in records if "dropping corrupt shard" in r["message"]]
    assert dropped and dropped[0]["level"] == "warning"


def test_a_warning_level_without_access_lines_keeps_only_warnings(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    text = REGISTRY % {"url": upstream.url, "key_env": KEY_ENV, "fail": FAIL_500}
    args = ["--log-level", "warning", "--no-access-log"]
    with serve_text(text, tmp_path, args, {KEY_ENV: SECRET}) as served:
        _requests(served.url)
        wait_for("the fallback's warning", lambda: "broken" in served.log_text(), 10)
    lines = _lines(served.log)
    assert lines and all(line.startswith("WARNING") for line in lines), lines
    assert not any("/v1/chat/completions" in line for line in lines)  # no access line


def test_the_environment_sets_the_format(upstream: FakeUpstream, tmp_path: Path) -> None:
    """``LLMROUTE_LOG_FORMAT`` / ``LLMROUTE_LOG_LEVEL`` for containers, any case."""
    text = REGISTRY % {"url": upstream.url, "key_env": KEY_ENV, "fail": FAIL_500}
    env = {KEY_ENV: SECRET, "LLMROUTE_LOG_FORMAT": "JSON", "LLMROUTE_LOG_LEVEL": "Error"}
    with serve_text(text, tmp_path, (), env) as served:
        _requests(served.url)
    assert _lines(served.log) == []  # nothing at error level happened


def _record(name: str, msg: str, args: Any = (), exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad value")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, exc_info)


def test_the_json_formatter_fields() -> None:
    formatter = JsonFormatter()
    access = json.loads(
        formatter.format(
            _record(
                "uvicorn.access",
                '%s - "%s %s HTTP/%s" %d',
                ("10.0.0.1:5000", "GET", "/v1/models", "1.1", 200),
            )
        )
    )
    assert access["message"] == '10.0.0.1:5000 - "GET /v1/models HTTP/1.1" 200'
    assert (access["client"], access["method"], access["path"], access["status"]) == (
        "10.0.0.1:5000",
        "GET",
        "/v1/models",
        200,
    )
    failed = json.loads(formatter.format(_record("llmroute.server", "café %s", ("ü",), True)))
    assert failed["message"] == "café ü" and failed["level"] == "error"
    assert failed["pid"] == access["pid"] == os.getpid()
    assert "ValueError: bad value" in failed["exception"] and "client" not in failed


def test_log_config_refuses_unknown_levels_and_formats() -> None:
    with pytest.raises(ValueError, match="log level must be one of"):
        log_config({}, level="loud")
    with pytest.raises(ValueError, match="log format must be one of"):
        log_config({}, fmt="xml")


def test_log_requests_writes_one_line_a_request_with_its_decision(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """``--log-requests``: the decision and outcome as fields of one JSON line a request
    (the decision id is the response's), never the prompt; off by default (above)."""
    text = REGISTRY % {"url": upstream.url, "key_env": KEY_ENV, "fail": FAIL_500}
    args = ["--log-format", "json", "--log-requests", "--no-access-log"]
    secret_prompt = "hi there! my locker code is mauve-otter-4417"
    ask = {"model": "auto", "messages": [{"role": "user", "content": secret_prompt}]}
    with serve_text(text, tmp_path, args, {KEY_ENV: SECRET}) as served:
        reply = httpx.post(f"{served.url}/v1/chat/completions", json=ask, timeout=10)
        assert reply.status_code == 200
        routed = httpx.post(f"{served.url}/v1/route", json=ask, timeout=10)
        assert routed.status_code == 200
        wait_for("two request lines", lambda: served.log_text().count("llmroute.requests") == 2, 10)
    records = [json.loads(line) for line in _lines(served.log)]
    line, route_only = [r for r in records if r["logger"] == "llmroute.requests"]
    assert route_only["route_only"] is True and route_only["served_model"] is None
    assert route_only["decision_id"] == routed.json()["id"] and line["route_only"] is False
    assert line["decision_id"] == reply.headers["x-llmroute-decision-id"]
    assert (line["route"], line["model"], line["served_model"]) == ("chitchat", "broken", "small")
    assert line["status"] == 200 and line["error"] is None and line["attempts"] == 1
    assert line["tokens_in"] and line["latency_ms"] > 0 and line["stream"] is False
    # no prompt text (a word no pid, port or time holds: "4417" was in pid 24417)
    assert "mauve-otter" not in served.log.read_text()


def test_without_log_requests_no_request_line_is_written(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    text = REGISTRY % {"url": upstream.url, "key_env": KEY_ENV, "fail": FAIL_500}
    with serve_text(text, tmp_path, ["--log-format", "json"], {KEY_ENV: SECRET}) as served:
        _requests(served.url)
        wait_for("the access lines", lambda: "/v1/chat/completions" in served.log_text(), 10)
    assert "llmroute.requests" not in served.log.read_text()


def test_a_malformed_upload_writes_no_bare_line(upstream: FakeUpstream, tmp_path: Path) -> None:
    """python-multipart warns of each malformed upload before it raises (the client's
    400); those warnings went to Python's last-resort handler, bare text among the JSON
    lines, so any client could write them. Other libraries' warnings come formatted."""
    text = REGISTRY % {"url": upstream.url, "key_env": KEY_ENV, "fail": FAIL_500}
    broken = b'--b\r\ncontent-disposition: form-data; name="file"\r\n\r\nx\r\n--b--\r\n'
    with serve_text(text + "batches: {}\n", tmp_path, ["--log-format", "json"]) as served:
        upload = httpx.post(
            f"{served.url}/v1/files",
            content=broken,
            headers={"content-type": "multipart/form-data; boundary=other"},
            timeout=10,
        )
        assert upload.status_code == 400 and "multipart" in upload.json()["error"]["message"]
        wait_for("the access line", lambda: "/v1/files" in served.log_text(), 10)
    records = [json.loads(line) for line in _lines(served.log)]  # every line parses
    assert not any("boundary" in r["message"] for r in records)


def test_text_lines_name_the_worker_that_wrote_them(upstream: FakeUpstream, tmp_path: Path) -> None:
    """With `--workers 2` every worker loads (and reloads) the registry and says so, its
    warnings too: each start line came twice in text, with no way to tell the workers'
    apart (`--log-format json` has `pid`). Each text line now carries its process's pid
    (``[pid 1234]``), the supervisor's and each worker's; one process, none."""
    import re

    text = REGISTRY % {"url": upstream.url, "key_env": KEY_ENV, "fail": FAIL_500}
    env = {KEY_ENV: SECRET}
    with serve_text(text, tmp_path, ["--workers", "2"], env) as served:
        _requests(served.url)
    lines = _lines(served.log)
    tagged = [re.match(r"\w+: +\[pid (\d+)\] ", line) for line in lines]
    assert all(tagged), [line for line, m in zip(lines, tagged, strict=True) if not m]
    loaded = {
        m.group(1)
        for line, m in zip(lines, tagged, strict=True)
        if m and "Application startup complete" in line
    }
    assert len(loaded) == 2, lines  # one a worker
    (tmp_path / "one").mkdir()
    with serve_text(text, tmp_path / "one", (), env) as served:
        pass
    assert not any("[pid " in line for line in _lines(served.log))
