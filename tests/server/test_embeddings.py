"""``POST /v1/embeddings`` end to end: `llmroute serve` as a subprocess, the official
`openai` client in front of it, a fake OpenAI-compatible upstream behind it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve

KEY_ENV = "LLMROUTE_TEST_UPSTREAM_KEY"
SECRET = "sk-test-SECRET-embed-1a2b3c4d5e6f"

REGISTRY = """\
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", api_key_env: %(key_env)s, timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  embed: {provider: fake, model: up-embed, kind: embedding}
  embed-down: {provider: fake, model: "emb-down?status=500", kind: embedding}
  embed-picky: {provider: fake, model: "emb-picky?status=400", kind: embedding}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {enabled: false}
"""


@dataclass
class Gateway:
    url: str
    upstream: FakeUpstream


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("embeddings")
    with fake_upstream() as upstream:
        registry = tmp / "registry.yaml"
        registry.write_text(REGISTRY % {"url": upstream.url, "key_env": KEY_ENV})
        log = tmp / "serve.log"
        with serve(registry, log, env={KEY_ENV: SECRET}) as served:
            yield Gateway(served.url, upstream)
        assert SECRET not in log.read_text()


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def _post(gateway: Gateway, body: Any) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/embeddings", json=body, timeout=10)


def test_the_openai_client_gets_embeddings(gateway: Gateway, client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="embed", input=["one", "two"])
    assert raw.headers["x-llmroute-model"] == "embed"
    result = raw.parse()
    assert result.model == "embed"  # the pool model, not the upstream's name
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 4 for d in result.data)
    sent = gateway.upstream.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.body["model"] == "up-embed"
    assert sent.body["input"] == ["one", "two"]


def test_a_single_string_and_token_arrays(gateway: Gateway, client: openai.OpenAI) -> None:
    assert len(client.embeddings.create(model="embed", input="hello").data) == 1
    for tokens in ([1, 2, 3], [[1, 2], [3]]):
        response = _post(gateway, {"model": "embed", "input": tokens})
        assert response.status_code == 200, response.text
        assert gateway.upstream.requests[-1].body["input"] == tokens


def test_the_openai_client_sees_model_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="nope", input="hi")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as chat:
        client.embeddings.create(model="small", input="hi")
    assert chat.value.code == "model_not_embedding"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "nope", "input": "hi"}, 404, "model"),
        ({"model": "auto", "input": "hi"}, 404, "model"),
        ({"model": "chitchat", "input": "hi"}, 404, "model"),
        ({"model": "small", "input": "hi"}, 400, "model"),
        ({"input": "hi"}, 400, "model"),
        ({"model": 3, "input": "hi"}, 400, "model"),
        ({"model": "embed"}, 400, "input"),
        ({"model": "embed", "input": ""}, 400, "input"),
        ({"model": "embed", "input": []}, 400, "input"),
        ({"model": "embed", "input": 12}, 400, "input"),
        ({"model": "embed", "input": [1.5]}, 400, "input"),
        ({"model": "embed", "input": [True]}, 400, "input"),
        ({"model": "embed", "input": ["a", 1]}, 400, "input"),
        ({"model": "embed", "input": [[]]}, 400, "input"),
        (["embed", "hi"], 400, None),
    ],
)
def test_bad_requests_are_openai_errors(
    gateway: Gateway, body: Any, status: int, param: str | None
) -> None:
    before = len(gateway.upstream.requests)
    response = _post(gateway, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert set(error) >= {"message", "type", "param", "code"}
    assert len(gateway.upstream.requests) == before  # nothing went upstream


def test_upstream_failures_map_to_gateway_errors(gateway: Gateway) -> None:
    down = _post(gateway, {"model": "embed-down", "input": "hi"})
    assert down.status_code == 502
    assert down.headers["x-llmroute-model"] == "embed-down"
    assert down.json()["error"]["code"] == "upstream_error"
    assert gateway.upstream.models_called()[-2:] == ["emb-down?status=500"] * 2  # one retry
    picky = _post(gateway, {"model": "embed-picky", "input": "hi"})
    assert picky.status_code == 400
    assert picky.json()["error"]["code"] == "upstream_rejected"
    assert "embed-picky" in picky.json()["error"]["message"]
    for response in (down, picky):
        assert SECRET not in response.text
