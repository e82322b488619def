"""A body's tags (LiteLLM's ``tags`` / ``metadata.tags`` / ``litellm_metadata.tags``:
`body_tags`) are read once a request, on every API that routes: the body's checks read
them (`require_messages`; a front's own, for Messages, Responses and text completions),
and planning used to read them again (the converted chat body's, for a front). The
gateway runs in this process so the reads can be counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_proc import ECHO_ONLY, serve_in_thread

from llmroute import proxy_fields
from llmroute.server import app as app_module
from llmroute.server import chat as chat_module
from llmroute.server import messages_checks, responses_checks


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[Any]]]:
    """The gateway's URL, and a list that gets each body read for tags and each
    request's tags as planning has them."""
    seen: list[Any] = []
    read, tagged = proxy_fields.body_tags, chat_module.request_tags

    def body_tags(body: Any, **kwargs: Any) -> tuple[str, ...]:
        seen.append("read")
        return read(body, **kwargs)

    def request_tags(request: Any) -> tuple[str, ...]:
        tags = tagged(request)
        seen.append(tags)
        return tags

    for module in (proxy_fields, chat_module, messages_checks, responses_checks):
        monkeypatch.setattr(module, "body_tags", body_tags)
    monkeypatch.setattr(chat_module, "request_tags", request_tags)
    registry = tmp_path / "registry.yaml"
    registry.write_text(ECHO_ONLY)
    with serve_in_thread(app_module.create_app(str(registry))) as url:
        yield url, seen


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
def test_a_chat_bodys_tags_are_read_once(counted: tuple[str, list[Any]], path: str) -> None:
    url, seen = counted
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hello there"}],
        "tags": ["team:a"],
        "metadata": {"tags": ["env:prod"]},
    }
    answer = httpx.post(url + path, json=body, headers={"x-llmroute-tags": "h:1"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert seen.count("read") == 1, seen
    assert ("h:1", "team:a", "env:prod") in seen  # the header's first, as before


def test_malformed_body_tags_are_still_a_400(counted: tuple[str, list[Any]]) -> None:
    url, _ = counted
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tags": [1]}
    answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "tags"


TURN = [{"role": "user", "content": "hello there"}]
FRONTS: dict[str, dict[str, Any]] = {
    "/v1/completions": {
        "model": "auto",
        "prompt": "hello there",
        "metadata": {"tags": ["env:prod"]},
    },
    "/v1/messages": {
        "model": "auto",
        "max_tokens": 16,
        "messages": TURN,
        "metadata": {"user_id": "u-1", "tags": ["env:prod"]},
    },
    "/v1/responses": {
        "model": "auto",
        "input": "hello there",
        "litellm_metadata": {"tags": ["env:prod"]},
    },
}


@pytest.mark.parametrize("path", FRONTS)
def test_a_converted_bodys_tags_are_read_once(counted: tuple[str, list[Any]], path: str) -> None:
    """Messages, Responses and text completions: the front's checks read the body's tags,
    and planning took them from the converted chat body again."""
    url, seen = counted
    body = {**FRONTS[path], "tags": ["team:a", " team:a "]}
    answer = httpx.post(url + path, json=body, headers={"x-llmroute-tags": "h:1"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert seen.count("read") == 1, seen
    assert ("h:1", "team:a", "env:prod") in seen  # all of them, in the same order


@pytest.mark.parametrize("path", FRONTS)
def test_a_converted_bodys_malformed_tags_are_still_a_400(
    counted: tuple[str, list[Any]], path: str
) -> None:
    url, _ = counted
    answer = httpx.post(url + path, json={**FRONTS[path], "tags": [1]}, timeout=30)
    assert answer.status_code == 400, answer.text
    assert "'tags' must be a list of strings" in answer.text
