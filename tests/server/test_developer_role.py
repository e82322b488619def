"""OpenAI's ``developer`` messages reach an OpenAI-compatible server that is not OpenAI's
as ``system`` ones, end to end: `llmroute serve` in front of the fake upstream, the
official `openai` client sending what an app written for OpenAI's models sends. DeepSeek,
DeepInfra and servers that check roles refuse ``developer`` (a 400 the app could not
have avoided, as routing chose the model, and one no fallback follows), and chat
templates that do not know it drop the instructions. OpenAI and Azure OpenAI keep it."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served

from llmroute.providers.openai_compat import developer_as_system, takes_developer_role

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
routes:
  - {name: chitchat, examples: ["hi there!", "how are you today?"], target: small}
default: {target: small}
"""
RULES = "Answer in French."


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_requests_developer_message_is_sent_as_system(
    client: openai.OpenAI, upstream: FakeUpstream, stream: bool
) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "developer", "content": RULES},
        {"role": "user", "content": "hi there!"},
    ]
    answer = client.chat.completions.create(model="auto", messages=messages, stream=stream)
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices)  # type: ignore[union-attr]
    sent = upstream.requests[-1].body["messages"]
    assert sent == [{"role": "system", "content": RULES}, {"role": "user", "content": "hi there!"}]


def test_a_responses_developer_item_is_sent_as_system(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    response = client.responses.create(
        model="auto",
        input=[
            {"role": "developer", "content": RULES},
            {"role": "user", "content": "hi there!"},
        ],
    )
    assert response.output_text
    roles = [m["role"] for m in upstream.requests[-1].body["messages"]]
    assert roles == ["system", "user"]


@pytest.mark.parametrize(
    ("url", "takes"),
    [
        ("https://api.openai.com/v1", True),
        ("https://API.OpenAI.com/v1", True),
        ("https://acme.openai.azure.com/openai/v1", True),
        ("https://acme.cognitiveservices.azure.com/openai/v1", True),
        ("https://api.deepseek.com/v1", False),
        ("https://api.deepinfra.com/v1/openai", False),
        ("https://openrouter.ai/api/v1", False),
        ("http://127.0.0.1:8001/v1", False),
        ("https://api.openai.com.evil.example/v1", False),
    ],
)
def test_only_openai_and_azure_openai_take_the_developer_role(url: str, takes: bool) -> None:
    assert takes_developer_role(url) is takes


def test_a_body_without_developer_messages_is_sent_as_it_is() -> None:
    body = {"messages": [{"role": "system", "content": RULES}, {"role": "user", "content": "x"}]}
    assert developer_as_system(body) is body
    mixed = {"messages": [{"role": "developer", "content": RULES, "name": "ops"}, "junk"]}
    assert developer_as_system(mixed)["messages"] == [
        {"role": "system", "content": RULES, "name": "ops"},
        "junk",
    ]
    assert mixed["messages"][0]["role"] == "developer"  # not mutated
