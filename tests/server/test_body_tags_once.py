"""A chat body's tags (LiteLLM's ``tags`` / ``metadata.tags``: `body_tags`) are read
once a request: the body's checks read them (`require_messages`), and planning used to
read them again. The gateway runs in this process so the reads can be counted."""

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

    for module in (proxy_fields, chat_module):
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
