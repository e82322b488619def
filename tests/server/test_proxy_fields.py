"""What an app migrating from LiteLLM's proxy sends, through the official ``openai``
client against a real gateway and a fake upstream that records the body it got: its
tags (``tags``, ``metadata.tags``) are the request's tags and go to no model, a
``metadata`` OpenAI would refuse stays with the gateway (routing rules read it), and
the fields that steer LiteLLM itself are a 400 naming the gateway's way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text, wait_for

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: small}
  search: {provider: fake, model: search}
  vectors: {provider: fake, model: up-embed, kind: embedding}
  ranker: {provider: fake, model: up-rerank, kind: rerank}
rules:
  - {name: team, when: {metadata: {team: search}}, target: search}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
"""
HI = [{"role": "user", "content": "hello there"}]
LITELLM_METADATA = {"tags": ["team:a", "app=web"], "trace_id": "t-1", "session": {"id": 7}}


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("proxy_fields")
    args = ["--log-format", "json", "--log-requests", "--no-access-log"]
    env = {"LLMROUTE_TELEMETRY_URL": "off"}
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, args, env) as served:
        yield served


@pytest.fixture
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0) as made:
        yield made


def _request_line(served: Served, decision_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def check() -> bool:
        for line in served.log_text().splitlines():
            if decision_id in line and '"llmroute.requests"' in line:
                found.append(json.loads(line))
                return True
        return False

    wait_for(f"the request line of {decision_id}", check, 10, served.log)
    return found[0]


@pytest.mark.parametrize("stream", [False, True])
def test_litellm_tags_are_the_requests_and_its_metadata_stays_here(
    gateway: Served, client: openai.OpenAI, upstream: FakeUpstream, stream: bool
) -> None:
    """OpenAI refuses a metadata of non-string values, and any metadata sent without
    ``store: true``, on every model (no fallback helps): the gateway keeps it, and its
    tags (and the top-level ``tags``) are recorded as ``x-llmroute-tags`` are."""
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=HI,
        metadata=LITELLM_METADATA,  # type: ignore[arg-type]
        stream=stream,
        extra_body={"tags": ["app=web", "feature:chat"]},
        extra_headers={"x-llmroute-tags": "via-header"},
    )
    if stream:
        list(raw.parse())  # type: ignore[call-overload]
    else:
        assert raw.parse().choices  # type: ignore[union-attr]
    sent = upstream.requests[-1].body
    assert "metadata" not in sent and "tags" not in sent
    line = _request_line(gateway, raw.headers["x-llmroute-decision-id"])
    assert line["tags"] == ["via-header", "app=web", "feature:chat", "team:a"]


def test_openai_metadata_with_store_goes_on_and_without_it_does_not(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    client.chat.completions.create(model="auto", messages=HI, metadata={"k": "v"}, store=True)
    sent = upstream.requests[-1].body
    assert sent["metadata"] == {"k": "v"} and sent["store"] is True
    client.chat.completions.create(model="auto", messages=HI, metadata={"k": "v"})
    assert "metadata" not in upstream.requests[-1].body  # OpenAI: only when store is enabled


def test_routing_rules_still_read_a_metadata_not_sent(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    answer = client.chat.completions.create(
        model="auto",
        messages=HI,
        metadata={**LITELLM_METADATA, "team": "search"},  # type: ignore[dict-item]
    )
    assert answer.model == "search" and upstream.requests[-1].body["model"] == "search"
    assert "metadata" not in upstream.requests[-1].body


@pytest.mark.parametrize(
    ("extra", "param", "says"),
    [
        ({"fallbacks": ["gpt-4o-mini"]}, "fallbacks", "policy.fallback"),
        ({"num_retries": 3}, "num_retries", "dispatch.retries"),
        ({"mock_response": "hi"}, "mock_response", "echo provider"),
        ({"caching": True}, "caching", "cache section"),
        ({"api_key": "sk-secret-123456"}, "api_key", "Authorization header"),
        ({"metadata": "trace-1"}, "metadata", "must be an object"),
        ({"tags": "team:a"}, "tags", "list of strings"),
        ({"metadata": {"tags": ["team a"]}}, "metadata.tags", "letters, digits"),
    ],
)
def test_litellms_own_fields_are_refused_naming_the_gateways_way(
    client: openai.OpenAI, upstream: FakeUpstream, extra: dict[str, Any], param: str, says: str
) -> None:
    """Served without them, the request would quietly lose what the app asked for (an
    OpenAI upstream refused them anyway, after routing); nothing is dispatched."""
    before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="auto", messages=HI, extra_body=extra)
    assert refused.value.param == param and says in refused.value.message
    assert "sk-secret" not in refused.value.message
    assert len(upstream.requests) == before


def test_what_goes_on_is_what_openai_takes(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    """A LiteLLM field sent as ``null`` is one left out, not a key OpenAI refuses; tags
    riding in a ``store: true`` request's ``metadata`` leave the rest of it to go on."""
    client.chat.completions.create(
        model="auto",
        messages=HI,
        store=True,
        metadata={"trace": "t-1", "tags": ["team:a"]},  # type: ignore[dict-item]
        extra_body={"fallbacks": None, "num_retries": None},
    )
    sent = upstream.requests[-1].body
    assert sent["metadata"] == {"trace": "t-1"} and sent["store"] is True
    assert "fallbacks" not in sent and "num_retries" not in sent


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"fallbacks": ["gpt-4o-mini"]}, "fallbacks"),
        ({"api_key": "sk-secret-123456"}, "api_key"),
        ({"mock_response": "hi"}, "mock_response"),
        ({"metadata": "trace-1"}, "metadata"),
    ],
)
def test_completions_refuse_litellms_own_fields_as_chat_does(
    client: openai.OpenAI, upstream: FakeUpstream, extra: dict[str, Any], param: str
) -> None:
    """``/v1/completions`` is served by the chat path: it passed these fields on to the
    upstream (a key in the body to a third party; OpenAI answers 400 after routing)."""
    before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="auto", prompt="hello there", extra_body=extra)
    assert refused.value.param == param
    assert "sk-secret" not in refused.value.message
    assert len(upstream.requests) == before


SECRET = {"api_key": "sk-secret-123456"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (SECRET, "api_key"),
        ({"user_api_key": "sk-secret-123456"}, "user_api_key"),
        ({"api_base": "http://elsewhere.invalid"}, "api_base"),
        ({"fallbacks": ["other-embed"]}, "fallbacks"),
        ({"metadata": "trace-1"}, "metadata"),
        ({"tags": "team:a"}, "tags"),
    ],
)
def test_embeddings_refuse_litellms_own_fields_as_chat_does(
    client: openai.OpenAI, upstream: FakeUpstream, extra: dict[str, Any], param: str
) -> None:
    """Embeddings went upstream as sent: a body's ``api_key`` reached the provider."""
    before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="vectors", input="hello", extra_body=extra)
    assert refused.value.param == param
    assert "sk-secret" not in refused.value.message
    assert len(upstream.requests) == before


def test_embeddings_tags_are_the_requests_and_go_to_no_model(
    gateway: Served, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """Nor does the rest of a LiteLLM ``metadata``: OpenAI's embeddings API has none,
    and refused the request (400, on every model) when it came."""
    raw = client.embeddings.with_raw_response.create(
        model="vectors",
        input="hello",
        extra_body={
            "tags": ["app=web"],
            "metadata": {"tags": ["team:a"], "trace": "t-1"},
            "num_retries": None,
        },
    )
    assert raw.parse().data
    sent = upstream.requests[-1].body
    assert "tags" not in sent and "num_retries" not in sent and "metadata" not in sent
    line = _request_line(gateway, raw.headers["x-request-id"])
    assert line["tags"] == ["app=web", "team:a"]


def test_rerank_refuses_a_key_in_its_body_and_takes_its_tags(
    gateway: Served, upstream: FakeUpstream
) -> None:
    body = {"model": "ranker", "query": "q", "documents": ["a", "b"]}
    before = len(upstream.requests)
    refused = httpx.post(f"{gateway.url}/v1/rerank", json={**body, **SECRET}, timeout=10)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "api_key"
    assert "sk-secret" not in refused.text and len(upstream.requests) == before
    tagged = {**body, "tags": ["team:a"], "metadata": {"trace": "t-1"}}
    served = httpx.post(f"{gateway.url}/v1/rerank", json=tagged, timeout=10)
    assert served.status_code == 200, served.text
    assert "tags" not in upstream.requests[-1].body
    assert "metadata" not in upstream.requests[-1].body  # no rerank API takes one
    assert _request_line(gateway, served.headers["x-request-id"])["tags"] == ["team:a"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"metadata": 7}, "metadata"),
        ({"fallbacks": ["gpt-4o-mini"]}, "fallbacks"),
        (SECRET, "api_key"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"messages": [{"role": "nobody", "content": "hi"}]}, "messages[0].role"),
    ],
)
def test_route_only_refuses_what_chat_refuses(
    gateway: Served, upstream: FakeUpstream, extra: dict[str, Any], param: str
) -> None:
    """A decision for a body ``/v1/chat/completions`` refuses is one it cannot serve:
    the same check, the same error."""
    body = {"model": "auto", "messages": HI, **extra}
    before = len(upstream.requests)
    routed = httpx.post(f"{gateway.url}/v1/route", json=body, timeout=10)
    chat = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=10)
    assert routed.status_code == chat.status_code == 400, routed.text
    assert routed.json() == chat.json() and routed.json()["error"]["param"] == param
    assert "sk-secret" not in routed.text and len(upstream.requests) == before


@pytest.fixture
def claude(gateway: Served) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key="none", max_retries=0) as made:
        yield made


@pytest.mark.parametrize("extra", [{"fallbacks": ["claude-3"]}, SECRET, {"num_retries": 2}])
def test_messages_refuse_litellms_own_fields_and_keep_their_metadata(
    claude: anthropic.Anthropic, upstream: FakeUpstream, extra: dict[str, Any]
) -> None:
    """``/v1/messages`` dropped them unsaid; Anthropic's own ``metadata.user_id`` still
    works."""
    before = len(upstream.requests)
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="auto", max_tokens=16, messages=HI, extra_body=extra)  # type: ignore[arg-type]
    assert next(iter(extra)) in refused.value.message and "sk-secret" not in str(refused.value)
    assert len(upstream.requests) == before
    answer = claude.messages.create(
        model="auto",
        max_tokens=16,
        messages=HI,  # type: ignore[arg-type]
        metadata={"user_id": "u-1"},
        extra_body={"fallbacks": None},
    )
    assert answer.content and len(upstream.requests) == before + 1


@pytest.mark.parametrize("extra", [{"fallbacks": ["gpt-4o-mini"]}, SECRET, {"caching": True}])
def test_responses_refuse_litellms_own_fields_and_keep_their_metadata(
    client: openai.OpenAI, upstream: FakeUpstream, extra: dict[str, Any]
) -> None:
    before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="auto", input="hello there", extra_body=extra)
    assert refused.value.param == next(iter(extra))
    assert "sk-secret" not in refused.value.message and len(upstream.requests) == before
    answer = client.responses.create(
        model="auto", input="hello there", metadata={"trace": "t-1"}, extra_body={"api_key": None}
    )
    assert answer.output_text and len(upstream.requests) == before + 1


def test_messages_tags_are_the_requests_beside_anthropics_metadata(
    gateway: Served, claude: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    """A top-level ``tags`` list, or one in ``metadata`` (Anthropic's holds only
    ``user_id``, which is still the end user), is the request's, as a chat's is."""
    raw = claude.messages.with_raw_response.create(
        model="auto",
        max_tokens=16,
        messages=HI,  # type: ignore[arg-type]
        extra_body={"tags": ["app=web"], "metadata": {"user_id": "u-1", "tags": ["team:a"]}},
    )
    assert raw.parse().content
    sent = upstream.requests[-1].body
    assert "tags" not in sent and "metadata" not in sent and sent["user"] == "u-1"
    line = _request_line(gateway, raw.headers["x-llmroute-decision-id"])
    assert line["tags"] == ["app=web", "team:a"]
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model="auto",
            max_tokens=16,
            messages=HI,  # type: ignore[arg-type]
            extra_body={"tags": ["team a"]},
        )
    assert "'tags'" in refused.value.message


def test_responses_tags_are_the_requests_and_their_metadata_openais(
    gateway: Served, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """A top-level ``tags`` list is the request's; ``metadata`` is OpenAI's string
    pairs, echoed with the response, so a list in it is refused naming ``metadata.tags``."""
    raw = client.responses.with_raw_response.create(
        model="auto", input="hello there", metadata={"tags": "t"}, extra_body={"tags": ["app=web"]}
    )
    assert raw.parse().metadata == {"tags": "t"}
    assert "tags" not in upstream.requests[-1].body
    assert _request_line(gateway, raw.headers["x-llmroute-decision-id"])["tags"] == ["app=web"]
    before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="auto",
            input="hello there",
            metadata={"tags": ["team:a"]},  # type: ignore[dict-item]
        )
    assert refused.value.param == "metadata.tags" and "top-level 'tags'" in refused.value.message
    assert len(upstream.requests) == before


@pytest.mark.parametrize("tags", [["team:a"], [], 5, None, True, {"team": "a"}])
def test_a_responses_metadata_tags_not_a_string_is_a_400_naming_it(
    gateway: Served, upstream: FakeUpstream, tags: object
) -> None:
    """Whatever its type, a ``metadata.tags`` that is not a string is refused as a list
    is (the param chat names for it too), saying where the request's tags go: a number
    or null was a 400 naming ``metadata`` whose message named ``metadata.tags``."""
    body = {"model": "auto", "input": "hello there", "metadata": {"tags": tags}}
    before = len(upstream.requests)
    refused = httpx.post(f"{gateway.url}/v1/responses", json=body, timeout=10)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "metadata.tags" and "top-level 'tags'" in error["message"]
    assert len(upstream.requests) == before


_TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"metadata": {"team": "search", "tags": ["team:a"]}},  # a rule reads it
        {"tags": ["app=web"], "user": "u-1", "fallbacks": None, "api_key": None},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"tools": [_TOOL], "tool_choice": "auto", "max_tokens": 8, "metadata": {"n": 1}},
    ],
)
def test_route_and_chat_take_the_same_bodies(gateway: Served, extra: dict[str, Any]) -> None:
    """A guard: what chat serves, ``/v1/route`` decides, naming the model chat answers
    with (the check it runs is chat's, not a stricter one)."""
    body = {"model": "auto", "messages": HI, **extra}
    routed = httpx.post(f"{gateway.url}/v1/route", json=body, timeout=10)
    chat = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=10)
    assert routed.status_code == chat.status_code == 200, (routed.text, chat.text)
    assert routed.json()["model"] == chat.headers["x-llmroute-model"]


def test_each_apis_own_fields_are_not_litellms(
    gateway: Served, client: openai.OpenAI, claude: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    """A guard: the fields OpenAI, Anthropic, Cohere and Voyage name as their own are
    served and, for embeddings and rerank, sent on as they came."""
    client.embeddings.create(
        model="vectors",
        input=["a", "b"],
        user="u-1",
        dimensions=8,
        encoding_format="float",
        extra_body={"input_type": "query"},
    )
    sent = upstream.requests[-1].body
    assert (sent["user"], sent["dimensions"], sent["encoding_format"]) == ("u-1", 8, "float")
    assert sent["input_type"] == "query"
    own = {"top_n": 1, "return_documents": True, "rank_fields": ["text"]}
    docs = [{"text": "a"}, {"text": "b"}]
    body = {"model": "ranker", "query": "q", "documents": docs, **own}
    reranked = httpx.post(f"{gateway.url}/v1/rerank", json=body, timeout=10)
    assert reranked.status_code == 200, reranked.text
    assert {k: upstream.requests[-1].body[k] for k in own} == own
    answer = claude.messages.create(
        model="auto",
        max_tokens=16,
        messages=HI,  # type: ignore[arg-type]
        metadata={"user_id": "u-1"},
        stop_sequences=["END"],
        tools=[{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "auto"},
    )
    assert answer.content
    response = client.responses.create(
        model="auto",
        input="hello there",
        metadata={"k": "v"},
        store=False,
        include=["reasoning.encrypted_content"],
        truncation="auto",
        user="u-1",
        safety_identifier="s-1",
        prompt_cache_key="c-1",
    )
    assert response.output_text


_EVERY_API = {
    "/v1/chat/completions": {"model": "auto", "messages": HI},
    "/v1/completions": {"model": "auto", "prompt": "hello there"},
    "/v1/messages": {"model": "auto", "max_tokens": 16, "messages": HI},
    "/v1/responses": {"model": "auto", "input": "hello there"},
    "/v1/embeddings": {"model": "vectors", "input": "hello"},
    "/v1/rerank": {"model": "ranker", "query": "q", "documents": ["a", "b"]},
}


@pytest.mark.parametrize("path", list(_EVERY_API))
def test_litellm_metadata_tags_are_the_requests_and_the_rest_goes_to_no_model(
    gateway: Served, upstream: FakeUpstream, path: str
) -> None:
    """LiteLLM's ``litellm_metadata`` (where it reads tags when ``metadata`` is the
    API's own): its tags count as ``metadata.tags`` do, on every API, and none of it
    reaches a model (OpenAI refuses a field it does not know, on every model)."""
    body = {**_EVERY_API[path], "litellm_metadata": LITELLM_METADATA, "tags": ["app=web"]}
    served = httpx.post(f"{gateway.url}{path}", json=body, timeout=10)
    assert served.status_code == 200, served.text
    assert "litellm_metadata" not in upstream.requests[-1].body
    assert "t-1" not in json.dumps(upstream.requests[-1].body)
    assert _request_line(gateway, served.headers["x-request-id"])["tags"] == ["app=web", "team:a"]


@pytest.mark.parametrize("path", [*_EVERY_API, "/v1/route"])
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"litellm_metadata": "t-1"}, "litellm_metadata"),
        ({"litellm_metadata": {"tags": "team:a"}}, "litellm_metadata.tags"),
        ({"litellm_metadata": {"tags": ["team a"]}}, "litellm_metadata.tags"),
    ],
)
def test_a_malformed_litellm_metadata_is_a_400_naming_it(
    gateway: Served, upstream: FakeUpstream, path: str, extra: dict[str, Any], param: str
) -> None:
    body = {**_EVERY_API.get(path, _EVERY_API["/v1/chat/completions"]), **extra}
    before = len(upstream.requests)
    refused = httpx.post(f"{gateway.url}{path}", json=body, timeout=10)
    assert refused.status_code == 400, refused.text
    assert f"'{param}'" in refused.text and len(upstream.requests) == before
    if path != "/v1/messages":  # Anthropic's error names no param
        assert refused.json()["error"]["param"] == param
