"""Claude on Amazon Bedrock end to end: `llmroute serve` as a subprocess with a provider
of kind ``bedrock`` signing with AWS keys (SigV4), a fake Bedrock runtime behind it
that checks each signature and streams AWS's event-stream framing, and the official
`openai` and `anthropic` clients in front."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from fake_anthropic import THOUGHT, TOOL_ID
from fake_bedrock import ACCESS_KEY, SECRET, FakeBedrock, fake_bedrock
from gateway_proc import Served, serve_refused, serve_text

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
REGISTRY = """
encoder: builtin:static
providers:
  aws: {kind: bedrock, region: us-east-1, base_url: "%(bedrock)s", timeout_s: 5}
models:
  sonnet:
    provider: aws
    model: "%(sonnet)s"
    reasoning: {effort: medium}
  busy: {provider: aws, model: "%(sonnet)s?throttle=1"}
  long: {provider: aws, model: "%(sonnet)s?too_long=1"}
  garbled: {provider: aws, model: "%(sonnet)s?bad_crc=1"}
routes:
  - name: careful
    examples: ["check this contract carefully"]
    target: busy
    policy: {fallback: [sonnet], retries: 0}
default: {target: sonnet}
"""
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with fake_bedrock() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, bedrock: FakeBedrock) -> Iterator[Served]:
    text = REGISTRY % {"bedrock": bedrock.url, "sonnet": SONNET}
    env = {
        "LLMROUTE_TELEMETRY_URL": "off",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": "",
        "AWS_BEARER_TOKEN_BEDROCK": "",  # whatever this machine has: sign with the keys
    }
    with serve_text(text, tmp_path_factory.mktemp("bedrock"), env=env) as served:
        yield served


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_a_chat_completion(client: openai.OpenAI, bedrock: FakeBedrock) -> None:
    answer = client.chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "hello bedrock"}], max_tokens=50
    )
    assert answer.choices[0].message.content == "echo: hello bedrock"
    assert answer.usage is not None and answer.usage.completion_tokens == 7
    sent = bedrock.last
    assert sent.path == f"/model/{SONNET}/invoke"
    assert sent.body["anthropic_version"] == "bedrock-2023-05-31" and "model" not in sent.body
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}")


def test_a_streamed_chat_completion(client: openai.OpenAI, bedrock: FakeBedrock) -> None:
    stream = client.chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": "stream it please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream it please"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert bedrock.last.path == f"/model/{SONNET}/invoke-with-response-stream"


def test_a_tool_call_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": "find llamas"}],
        tools=TOOLS,  # type: ignore[arg-type]
        stream=True,
    )
    calls = [
        call
        for chunk in stream
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
    ]
    assert calls[0].id == TOOL_ID
    arguments = "".join(c.function.arguments or "" for c in calls if c.function)
    assert json.loads(arguments) == {"query": "find llamas"}


def test_reasoning_effort_turns_on_claudes_thinking(
    client: openai.OpenAI, bedrock: FakeBedrock
) -> None:
    answer = client.chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": "think first"}],
        reasoning_effort="low",
    )
    sent = bedrock.last.body
    assert sent["thinking"]["type"] in ("enabled", "adaptive")
    message = answer.choices[0].message
    assert getattr(message, "reasoning_content", None) == THOUGHT
    assert message.content == "echo: think first"


def test_the_anthropic_client_on_v1_messages(gateway: Served, bedrock: FakeBedrock) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as claude:
        answer = claude.messages.create(
            model="sonnet",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi from anthropic"}],
        )
        assert answer.content[0].type == "text"
        assert answer.content[0].text == "echo: hi from anthropic"
        with claude.messages.stream(
            model="sonnet",
            max_tokens=100,
            messages=[{"role": "user", "content": "and streamed"}],
        ) as stream:
            text = "".join(stream.text_stream)
        assert text == "echo: and streamed"
    assert bedrock.last.path.endswith("/invoke-with-response-stream")


def test_throttling_goes_to_the_fallback(client: openai.OpenAI, bedrock: FakeBedrock) -> None:
    before = len(bedrock.requests)
    answer = client.chat.completions.create(
        model="careful", messages=[{"role": "user", "content": "check this"}]
    )
    assert answer.choices[0].message.content == "echo: check this"
    assert [r.model for r in bedrock.requests[before:]] == [f"{SONNET}?throttle=1", SONNET]


def test_a_too_long_input_is_the_context_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="long", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 400
    assert "context" in json.dumps(caught.value.body)


def test_a_corrupt_event_stream_is_a_502_with_the_reason_not_a_hang(gateway: Served) -> None:
    """The third frame's CRC is wrong, before any text: the stream has not begun, so the
    client gets the gateway's 502 (the fallback's chance), saying why."""
    body = {"model": "garbled", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=20) as r:
        raw = b"".join(r.iter_raw())
    assert r.status_code == 502, raw
    assert b"broken event stream: event-stream message CRC does not match" in raw


def test_keys_without_a_region_to_sign_for_stop_serve_with_one_line(tmp_path: Path) -> None:
    """A base_url that names no region (a proxy) and AWS keys: what to set, at the
    provider's line, before the server starts; not a startup traceback."""
    registry = """encoder: builtin:static
providers:
  aws: {kind: bedrock, base_url: "http://127.0.0.1:9"}
models:
  sonnet: {provider: aws, model: "SONNET"}
routes:
  - {name: a, examples: ["hello"], target: sonnet}
default: {target: sonnet}
""".replace("SONNET", SONNET)
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    done = serve_refused(registry, tmp_path, ["--port", "0"], env)
    assert done.returncode == 2, done.stderr
    said = done.stderr.strip()
    assert "Traceback" not in said and len(said.splitlines()) == 1, said
    assert said.endswith(
        "registry.yaml:3: providers.aws.region: provider 'aws' signs with AWS keys and needs "
        "the region they sign for; set region (its base_url does not say it)"
    )
    assert SECRET not in done.stdout + done.stderr
