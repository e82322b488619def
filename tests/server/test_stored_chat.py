"""OpenAI's stored chat completions (``chat.completions.list`` / ``retrieve`` / ...),
which the gateway does not keep: an error saying so, through the official client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: small}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
"""


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("stored_chat")
    env = {"LLMROUTE_TELEMETRY_URL": "off"}
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, env=env) as served:
        yield served


def test_the_stored_chat_completions_are_said_not_to_be_kept(gateway: Served) -> None:
    """Not a bare 405 / 404 (which reads as a wrong base_url), nor an empty list: a
    ``store: true`` went on to the model's provider, which may keep it."""
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.APIStatusError) as listed:
        client.chat.completions.list()
    assert listed.value.status_code == 405
    assert listed.value.response.headers["allow"] == "POST"
    assert listed.value.code == "chat_completions_not_stored"
    assert "keeps no chat completions" in listed.value.message
    assert "/v1/responses" in listed.value.message
    with pytest.raises(openai.NotFoundError) as retrieved:
        client.chat.completions.retrieve("chatcmpl-123")
    assert retrieved.value.code == "chat_completions_not_stored"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.messages.list("chatcmpl-123")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.delete("chatcmpl-123")
    # a stray trailing / is still named as such, not taken for an id
    slash = httpx.post(f"{gateway.url}/v1/chat/completions/", json={}, timeout=10)
    assert slash.status_code == 404 and "no trailing /" in slash.json()["error"]["message"]
