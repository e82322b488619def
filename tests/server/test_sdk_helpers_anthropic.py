"""The official `anthropic` client's helper methods against the gateway, where they
broke: a call the gateway does not serve (message batches), and errors outside
``/v1/messages`` in Anthropic's shape."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import anthropic
import pytest
from gateway_proc import Served

USER_KEY = "sk-sdk-user-14142135"
REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  large: {provider: fake, model: up-large}
  sonnet: {provider: claude, model: claude-x}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
auth:
  keys:
    - {name: user, sha256: "USER_SHA"}
""".replace("USER_SHA", hashlib.sha256(USER_KEY.encode()).hexdigest())


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[anthropic.Anthropic]:
    """A client that validates every answer against its models (a missing field raises)."""
    with anthropic.Anthropic(
        base_url=gateway.url, api_key=USER_KEY, max_retries=0, _strict_response_validation=True
    ) as c:
        yield c


def test_a_call_the_gateway_does_not_serve_is_named_in_the_404(
    client: anthropic.Anthropic,
) -> None:
    """Message batches are not served (`/v1/batches` is OpenAI's Batch API here)."""
    ask = {"model": "small", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.batches.create(requests=[{"custom_id": "a", "params": ask}])  # type: ignore[typeddict-item]
    assert missing.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "POST /v1/messages/batches is not an endpoint of this gateway",
        },
    }


def test_a_key_refused_outside_messages_is_told_in_anthropics_shape(gateway: Served) -> None:
    """The key check answers an Anthropic client (its ``anthropic-version``) as such on
    any path, not only under ``/v1/messages``."""
    with (
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-wrong", max_retries=0) as stranger,
        pytest.raises(anthropic.AuthenticationError) as refused,
    ):
        stranger.models.list()
    assert refused.value.body["type"] == "error"  # type: ignore[index]
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
