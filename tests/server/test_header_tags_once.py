"""A request's ``x-llmroute-tags`` is read once: planning checked it (a malformed one
refused before any work), then its decision log recorder read and parsed it again
(`recorder_of`). The gateway runs in this process, its log in a SQLite file, so the
reads can be counted and the tags the row holds checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_proc import ECHO_ONLY, serve_in_thread, wait_for

from llmroute.errors import TelemetryError
from llmroute.server import app as app_module
from llmroute.server import chat as chat_module
from llmroute.telemetry.store import open_store

TURN = [{"role": "user", "content": "hello there"}]
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "auto", "messages": TURN, "tags": ["team:a"]},
    "/v1/route": {"model": "auto", "messages": TURN, "tags": ["team:a"]},
    "/v1/completions": {"model": "auto", "prompt": "hello there", "tags": ["team:a"]},
    "/v1/messages": {"model": "auto", "max_tokens": 16, "messages": TURN, "tags": ["team:a"]},
    "/v1/responses": {"model": "auto", "input": "hello there", "tags": ["team:a"]},
}


@pytest.fixture
def counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str, list[str | None]]]:
    """The gateway's URL, its log's URL, and the headers parsed for tags."""
    parsed: list[str | None] = []
    parse = chat_module.parse_tags

    def parse_tags(raw: str | None) -> tuple[str, ...]:
        parsed.append(raw)
        return parse(raw)

    monkeypatch.setattr(chat_module, "parse_tags", parse_tags)
    store_url = f"sqlite:///{tmp_path / 'log.db'}"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", store_url)
    registry = tmp_path / "registry.yaml"
    registry.write_text(ECHO_ONLY.replace("{enabled: false}", "{flush_seconds: 0.05}"))
    with serve_in_thread(app_module.create_app(str(registry))) as url:
        yield url, store_url, parsed


def _logged_tags(store_url: str) -> tuple[str, ...]:
    store = open_store(store_url)
    found: list[tuple[str, ...]] = []

    def check() -> bool:
        try:
            found[:] = [d.tags for d in store.decisions(0)]
        except TelemetryError:  # the writer has not created the tables yet
            return False
        return bool(found)

    try:
        wait_for("the request's row", check, 10)
    finally:
        store.close()
    return found[0]


@pytest.mark.parametrize("path", BODIES)
def test_the_tags_header_is_read_once(
    counted: tuple[str, str, list[str | None]], path: str
) -> None:
    url, store_url, parsed = counted
    answer = httpx.post(
        url + path, json=BODIES[path], headers={"x-llmroute-tags": "h:1"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert _logged_tags(store_url) == ("h:1", "team:a")  # the header's first, as before
    assert parsed == ["h:1"]


def test_a_malformed_tags_header_is_still_a_400(counted: tuple[str, str, list[str | None]]) -> None:
    url, _, parsed = counted
    body = BODIES["/v1/chat/completions"]
    answer = httpx.post(
        url + "/v1/chat/completions", json=body, headers={"x-llmroute-tags": "a b"}, timeout=30
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "x-llmroute-tags"
    assert error["code"] == "invalid_value"  # as a body's malformed tags say it
    assert parsed == ["a b"]
