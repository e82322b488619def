"""``aliases`` on `llmroute serve` (a real process on 127.0.0.1, the fake OpenAI upstream
behind it): clients that hard-code a model name — the official ``openai`` and
``anthropic`` clients here — are routed as the alias says, listed by ``/v1/models``, and
held to a key's allow-list by the alias or its target."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

KEY = "sk-alias-test-1234567890"
OPEN_KEY = "sk-alias-open-0987654321"

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  large: {provider: fake, model: up-large}
  embed: {provider: fake, model: up-embed, kind: embedding}
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: large
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
aliases:
  gpt-4o: auto
  gpt-4o-mini: chitchat
  text-embedding-3-small: embed
  "claude-*": auto
auth:
  keys:
    - {name: tool, key_env: LLMROUTE_TEST_ALIAS_KEY, models: [auto, embed]}
    - {name: open, key_env: LLMROUTE_TEST_ALIAS_OPEN}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("aliases")
    env = {
        "LLMROUTE_TEST_ALIAS_KEY": KEY,
        "LLMROUTE_TEST_ALIAS_OPEN": OPEN_KEY,
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, env=env) as served:
        yield served


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0) as c:
        yield c


def test_an_alias_of_auto_is_routed(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "write a Python function to sort"}]
    )
    assert raw.headers["x-llmroute-route"] == "code"
    assert raw.headers["x-llmroute-model"] == "large"
    assert upstream.requests[-1].body["model"] == "up-large"


def _route(gateway: Served, key: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "debug this SQL query"}]}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.url}/v1/route", json=body, headers=headers, timeout=10)


def test_an_alias_of_a_route_pins_it_and_says_so(gateway: Served) -> None:
    decision = _route(gateway, OPEN_KEY, "gpt-4o-mini").json()
    assert decision["route"] == "chitchat" and decision["model"] == "small"
    assert decision["reason"] == (
        "pinned by the request's model 'gpt-4o-mini' (an alias of 'chitchat')"
    )
    # the other key may send auto and embed: a route's alias is neither, nor its target
    refused = _route(gateway, KEY, "gpt-4o-mini")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"


def test_a_glob_alias_serves_an_anthropic_client(gateway: Served) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0) as claude:
        raw = claude.messages.with_raw_response.create(
            model="claude-sonnet-4-5-20250929",
            max_tokens=32,
            messages=[{"role": "user", "content": "hi there!"}],
        )
    assert raw.headers["x-llmroute-route"] == "chitchat"
    assert raw.parse().model == "small"


def test_aliases_are_listed_and_embeddings_follow_them(
    gateway: Served, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    ids = [m.id for m in client.models.list()]
    # the key may send auto and embed: so the aliases of those, not chitchat's
    assert ids == ["auto", "embed", "gpt-4o", "text-embedding-3-small"]
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    embedded = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert embedded.data and upstream.requests[-1].body["model"] == "up-embed"


def test_an_unknown_name_is_still_a_404(gateway: Served) -> None:
    missing = _route(gateway, OPEN_KEY, "mistral-large")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("key", [KEY, OPEN_KEY])
def test_an_embeddings_404_names_the_aliases_the_key_may_send_too(
    gateway: Served, key: str
) -> None:
    """What an embeddings 404 lists is what ``/v1/models`` lists for the key: the
    aliases of an embedding model (``text-embedding-3-small``) with it."""
    headers = {"authorization": f"Bearer {key}"}
    refused = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": "auto", "input": "hi"},
        headers=headers,
        timeout=10,
    )
    assert refused.status_code == 404, refused.text
    message = refused.json()["error"]["message"]
    assert message.endswith("embedding models you may use: embed, text-embedding-3-small")
    listed = httpx.get(f"{gateway.url}/v1/models", headers=headers, timeout=10).json()
    assert {"embed", "text-embedding-3-small"} <= {m["id"] for m in listed["data"]}
