"""Kind ``echo``: examples/echo.yaml served by a real `llmroute serve`, driven by the
official openai and anthropic clients as a user would try the gateway before any model
server exists; the same registry through the SDK; and the provider's own rules (word
streams, max_tokens, n, embeddings, delay)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import numpy as np
import openai
import pytest
from gateway_proc import Served, serve

from llmroute import Router
from llmroute.errors import UpstreamRejected
from llmroute.providers.base import Timeouts
from llmroute.providers.echo import ECHO_DIMENSIONS, EchoProvider
from llmroute.registry import parse_registry
from llmroute.registry.schema import Provider

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "examples" / "echo.yaml"
CODE = "write a Python function that reverses a string"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("echo")
    with serve(ECHO, tmp / "serve.log") as served:
        yield served


def test_the_example_answers_through_the_openai_client(gateway: Served) -> None:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": CODE}]
        )
        reply = raw.parse()
        assert raw.headers["x-llmroute-route"] == "code"
        assert raw.headers["x-llmroute-model"] == "large"
        assert reply.choices[0].message.content == CODE
        assert reply.model == "echo-large" and reply.system_fingerprint == "llmroute-echo"
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        started = time.perf_counter()
        stream = c.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": CODE}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        elapsed = time.perf_counter() - started
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == CODE
        assert chunks[-1].usage is not None and chunks[-1].choices == []
        assert elapsed >= 0.05 * len(CODE.split())  # the slow provider: 50 ms a word
        cut = c.chat.completions.create(
            model="chitchat", messages=[{"role": "user", "content": "hi there friend"}],
            max_tokens=2, n=2,
        )  # fmt: skip
        assert [ch.message.content for ch in cut.choices] == ["hi there", "hi there"]
        assert {ch.finish_reason for ch in cut.choices} == {"length"}
        vectors = c.embeddings.create(model="embed", input=["a", "b", "a"])
        assert [len(v.embedding) for v in vectors.data] == [ECHO_DIMENSIONS] * 3
        assert vectors.data[0].embedding == vectors.data[2].embedding
        assert vectors.data[0].embedding != vectors.data[1].embedding
        short = c.embeddings.create(model="embed", input="a", dimensions=8)
        assert len(short.data[0].embedding) == 8
        for dimensions in (10**30, 0, 100_000):  # a huge ask once allocated, then a 500
            with pytest.raises(openai.BadRequestError, match="dimensions"):
                c.embeddings.create(model="embed", input="a", dimensions=dimensions)


def test_a_raw_completion_shows_the_prompt_the_model_would_get(gateway: Served) -> None:
    """The example's ``coder`` continues raw text: a fill-in-the-middle request is said
    back as its fim_template wrote it, streamed too; a chat model is skipped for it."""
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        fim = c.completions.create(model="coder", prompt="def add(a, b):", suffix="return c")
        assert fim.choices[0].text == (
            "<|fim_prefix|>def add(a, b):<|fim_suffix|>return c<|fim_middle|>"
        )
        assert fim.id.startswith("cmpl-echo-") and fim.usage is not None
        chunks = list(c.completions.create(model="coder", prompt="x = 1", echo=True, stream=True))
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "x = 1x = 1"
        with pytest.raises(openai.BadRequestError):
            c.completions.create(model="small", prompt="def", suffix="pass")


def test_what_is_said_back_keeps_its_newlines_and_indentation(gateway: Served) -> None:
    """Code and JSON come back as sent, streamed or not (the words were joined by single
    spaces: a fill-in-the-middle prompt lost the suffix's newline and indentation)."""
    code = "def add(a, b):\n    return a + b\n\n\tprint(add(1,  2))"
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        said = c.chat.completions.create(
            model="small", messages=[{"role": "user", "content": code}]
        )
        assert said.choices[0].message.content == code
        stream = c.chat.completions.create(
            model="small", messages=[{"role": "user", "content": code}], stream=True
        )
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == code
        cut = c.chat.completions.create(
            model="small", messages=[{"role": "user", "content": code}], max_tokens=4
        )
        assert cut.choices[0].message.content == "def add(a, b):\n    return"
        fim = c.completions.create(model="coder", prompt="def f():", suffix="\n    return c")
        assert fim.choices[0].text == (
            "<|fim_prefix|>def f():<|fim_suffix|>\n    return c<|fim_middle|>"
        )


def test_the_anthropic_client_is_answered_too(gateway: Served) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as c:
        message = c.messages.create(
            model="auto", max_tokens=50, messages=[{"role": "user", "content": "hello there"}]
        )
    assert message.content[0].type == "text" and message.content[0].text == "hello there"


def test_the_sdk_serves_the_same_registry_in_process() -> None:
    with Router.from_yaml(ECHO) as router:
        reply = router.chat.completions.create(messages=[{"role": "user", "content": CODE}])
    assert reply.llmroute["route"] == "code"
    assert reply.choices[0].message.content == CODE


def _provider(**settings: object) -> EchoProvider:
    return EchoProvider("e", Provider.model_validate({"kind": "echo", **settings}))


def test_a_fixed_reply_and_the_delay() -> None:
    provider = _provider(reply="It is sunny.", delay_s=0.2)
    body = {"messages": [{"role": "user", "content": "weather?"}]}
    started = time.perf_counter()
    data = asyncio.run(provider.complete("m", body, timeouts=Timeouts()))
    assert time.perf_counter() - started >= 0.2
    assert data["choices"][0]["message"]["content"] == "It is sunny."
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a b"}]}]}
    no_delay = _provider()
    assert (
        asyncio.run(no_delay.complete("m", parts, timeouts=Timeouts()))["choices"][0]["message"][
            "content"
        ]
        == "a b"
    )
    with pytest.raises(UpstreamRejected):
        asyncio.run(no_delay.embed("m", {"input": [1, 2]}, timeouts=Timeouts()))


def test_echo_settings_belong_to_echo_providers() -> None:
    with pytest.raises(ValueError, match="'reply' is not used by an openai provider"):
        Provider.model_validate({"kind": "openai", "reply": "x"})
    with pytest.raises(ValueError, match="'base_url' is not used by an echo provider"):
        Provider.model_validate({"kind": "echo", "base_url": "http://127.0.0.1:9/v1"})
    loaded = parse_registry(ECHO.read_text(), source="echo.yaml")
    assert loaded.registry.providers["slow"].delay_s == 0.05


def test_streams_give_every_choice_and_n_has_openais_bound() -> None:
    provider = _provider()
    body = {"messages": [{"role": "user", "content": "a b"}], "n": 3}

    async def events() -> list[bytes]:
        return [e async for e in provider.stream("m", body, timeouts=Timeouts())]

    texts: dict[int, str] = {}
    for event in asyncio.run(events())[:-1]:
        for choice in json.loads(event.removeprefix(b"data: "))["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + (
                choice["delta"].get("content") or ""
            )
    assert texts == {0: "a b", 1: "a b", 2: "a b"}
    with pytest.raises(UpstreamRejected, match="at most 128"):
        asyncio.run(provider.complete("m", {**body, "n": 129}, timeouts=Timeouts()))


def test_embeddings_in_base64_as_the_openai_client_asks(gateway: Served) -> None:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        floats = c.embeddings.create(model="embed", input="hi", encoding_format="float")
        packed = c.embeddings.create(model="embed", input="hi")  # base64 by default
    assert packed.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    raw = _provider()
    data = asyncio.run(
        raw.embed("m", {"input": "hi", "encoding_format": "base64"}, timeouts=Timeouts())
    )
    vector = np.frombuffer(base64.b64decode(data["data"][0]["embedding"]), dtype="<f4")
    assert vector.shape == (64,) and float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)


def test_a_completion_from_a_chat_model_keeps_the_fingerprint(gateway: Served) -> None:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        completion = c.completions.create(model="small", prompt="hello there")
    assert completion.choices[0].text == "hello there"
    assert completion.system_fingerprint == "llmroute-echo"
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        chunks = list(c.completions.create(model="small", prompt="hello there", stream=True))
    assert chunks and {chunk.system_fingerprint for chunk in chunks} == {"llmroute-echo"}
