"""The official `anthropic` client's helper methods against the gateway, where they
broke: ``models.list`` / ``models.retrieve`` (Anthropic's shapes, checked strictly
here), a call the gateway does not serve (message batches), and errors outside
``/v1/messages`` in Anthropic's shape."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime

import anthropic
import httpx
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
  vectors: {provider: fake, model: up-embed, kind: embedding}
  ranker: {provider: fake, model: up-rerank, kind: rerank}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
auth:
  keys:
    - {name: user, sha256: "USER_SHA"}
aliases:
  claude-sonnet-4-5: sonnet
  text-embedding-3-small: vectors
""".replace("USER_SHA", hashlib.sha256(USER_KEY.encode()).hexdigest())
IDS = ["auto", "chitchat", "small", "large", "sonnet", "claude-sonnet-4-5"]
NOT_CHAT = ["vectors", "ranker", "text-embedding-3-small"]  # in OpenAI's list only


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[anthropic.Anthropic]:
    """A client that validates every answer against its models (a missing field raises)."""
    with anthropic.Anthropic(
        base_url=gateway.url, api_key=USER_KEY, max_retries=0, _strict_response_validation=True
    ) as c:
        yield c


def test_models_are_listed_in_anthropics_shape(
    client: anthropic.Anthropic, gateway: Served
) -> None:
    """The ids OpenAI's clients see (in OpenAI's list, as before), as Anthropic's
    ``ModelInfo``s, a page at a time, but for embedding and rerank models (and their
    aliases): Claude-facing tools would offer those as chat models."""
    key = {"authorization": f"Bearer {USER_KEY}"}
    listed = httpx.get(f"{gateway.url}/v1/models", headers=key, timeout=10).json()
    openai_ids = ["auto", "chitchat", "small", "large", "sonnet", "vectors", "ranker"]
    openai_ids += ["claude-sonnet-4-5", "text-embedding-3-small"]
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == openai_ids
    assert listed["data"][2] == {"id": "small", "object": "model", "created": 0, "owned_by": "fake"}
    page = client.models.list(limit=4)
    assert [m.id for m in page.data] == IDS[:4]
    assert (page.has_more, page.first_id, page.last_id) == (True, "auto", "large")
    first = page.data[0]
    assert (first.type, first.display_name, first.lifecycle) == ("model", "auto", "active")
    assert first.created_at == datetime(1970, 1, 1, tzinfo=UTC)  # no release date known
    assert [m.id for m in client.models.list(limit=2)] == IDS  # follows after_id
    assert [m.id for m in client.models.list(limit=1000).data] == IDS
    before = client.models.list(before_id="sonnet", limit=2)
    assert ([m.id for m in before.data], before.has_more) == (["small", "large"], True)
    info = client.models.retrieve("claude-sonnet-4-5")
    assert (info.id, info.type, info.display_name) == (
        "claude-sonnet-4-5",
        "model",
        "claude-sonnet-4-5",
    )


def test_models_errors_come_in_anthropics_shape(
    client: anthropic.Anthropic, gateway: Served
) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.models.retrieve("claude-nonexistent")
    assert missing.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "the model 'claude-nonexistent' does not exist: GET /v1/models lists "
            "what you may use",
        },
    }
    for not_chat in NOT_CHAT:  # as the list it sees holds them: not at all
        with pytest.raises(anthropic.NotFoundError) as embedder:
            client.models.retrieve(not_chat)
        assert embedder.value.body == {
            "type": "error",
            "error": {
                "type": "not_found_error",
                "message": f"the model {not_chat!r} does not exist: GET /v1/models lists "
                "what you may use",
            },
        }
    key = {"authorization": f"Bearer {USER_KEY}"}
    for not_chat in NOT_CHAT:  # OpenAI's client still finds them
        found = httpx.get(f"{gateway.url}/v1/models/{not_chat}", headers=key, timeout=10)
        assert found.status_code == 200 and found.json()["id"] == not_chat
    with pytest.raises(anthropic.BadRequestError, match="limit: must be an integer from 1 to 1000"):
        client.models.list(limit=0)
    with pytest.raises(anthropic.BadRequestError, match="after_id: 'gpt-x' is not a model"):
        client.models.list(after_id="gpt-x")


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
