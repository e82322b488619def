"""``POST /v1/responses`` end to end: `llmroute serve` as a subprocess, the official
`openai` client's ``responses`` API in front of it, the fake OpenAI and Anthropic
upstreams behind it: the same routing, response objects and Responses event streams
back (text and function calls), a tool round trip, and OpenAI's error format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fake_anthropic import TOOL_ID, FakeAnthropic
from fake_upstream import FakeUpstream
from gateway_proc import Served

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  large: {provider: fake, model: up-large}
  cut: {provider: fake, model: "up-cut?finish=length"}
  broken: {provider: fake, model: "up-broken?mid=1"}
  several: {provider: fake, model: "up-several?multi=1&vary=1", params: {n: 2}}
  sonnet: {provider: claude, model: claude-x}
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: large
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
"""

WEATHER = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    }
]


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_a_response_is_routed_and_answered(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.responses.with_raw_response.create(
        model="auto",
        instructions="You are terse.",
        input="write a Python function to parse YAML",
        max_output_tokens=64,
    )
    assert raw.headers["x-llmroute-route"] == "code"
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.model == "large" and response.store is False
    assert "parse YAML" in response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )
    sent = upstream.requests[-1].body
    assert sent["model"] == "up-large" and sent["max_tokens"] == 64
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "write a Python function to parse YAML"},
    ]


def test_a_stream_arrives_as_responses_events(client: openai.OpenAI) -> None:
    with client.responses.stream(model="chitchat", input="hi there!") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and final.output_text == text and final.model == "small"
    assert final.usage is not None and final.usage.output_tokens > 0


def test_a_stream_that_breaks_ends_failed_not_completed(client: openai.OpenAI) -> None:
    """The upstream stream breaks after its first words: the client hears
    ``response.failed``, not a ``response.completed`` holding half an answer."""
    events = list(client.responses.create(model="broken", input="hello", stream=True))
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.message == "the upstream stream broke off"


def test_a_model_asked_for_several_choices_answers_choice_0(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """Responses has no ``n``: a client's is not sent, but a registry's ``params: {n:
    2}`` asks the upstream for two choices all the same. The response is choice 0's,
    whole or streamed: a stream read every choice's deltas into one message, the words
    of both interleaved ("echo: echo: hello hello")."""
    client.responses.create(model="small", input="hello", extra_body={"n": 3})
    assert "n" not in upstream.requests[-1].body
    response = client.responses.create(model="several", input="hello")
    assert upstream.requests[-1].body["n"] == 2
    assert len(response.output) == 1 and response.output_text.startswith("echo: hello #")
    with client.responses.stream(model="several", input="hello") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert upstream.requests[-1].body["n"] == 2
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("echo: hello #") and text.count("echo") == 1
    assert len(final.output) == 1 and final.output_text == text
    assert final.status == "completed" and final.usage is not None


def test_input_tokens_are_counted_without_calling_upstream(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    plain = client.responses.input_tokens.count(input="write a Python function to parse YAML")
    longer = client.responses.input_tokens.count(
        model="auto",
        instructions="You are a careful senior engineer who explains every step.",
        input="write a Python function to parse YAML",
        tools=WEATHER,  # type: ignore[arg-type]
    )
    assert plain.object == "response.input_tokens"
    assert 0 < plain.input_tokens < longer.input_tokens
    assert len(upstream.requests) == before
    with pytest.raises(openai.BadRequestError) as caught:  # nothing kept to continue here
        client.responses.input_tokens.count(input="and?", previous_response_id="resp_x")
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):  # OpenAI's own encrypted state: not served
        client.post("/responses/compact", cast_to=object, body={"model": "auto", "input": "x"})


def test_a_cut_answer_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model="cut", input="tell me a long story")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize("stream", [False, True])
def test_a_function_call_and_its_output_cross_both_ways(
    client: openai.OpenAI, claude: FakeAnthropic, stream: bool
) -> None:
    ask = "what is the weather in Paris?"
    if stream:
        with client.responses.stream(model="sonnet", input=ask, tools=WEATHER) as events:
            kinds = [e.type for e in events]
            first = events.get_final_response()
        assert "response.function_call_arguments.delta" in kinds
    else:
        first = client.responses.create(model="sonnet", input=ask, tools=WEATHER)  # type: ignore[arg-type]
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].call_id == TOOL_ID and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"query": ask}
    sent = claude.requests[-1].body
    assert sent["tools"][0]["name"] == "get_weather"

    followup = client.responses.create(
        model="sonnet",
        tools=WEATHER,  # type: ignore[arg-type]
        input=[
            {"role": "user", "content": ask},
            {
                "type": "function_call",
                "call_id": TOOL_ID,
                "name": "get_weather",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": TOOL_ID, "output": "sunny, 21 C"},
        ],
    )
    assert followup.status == "completed"
    turns = claude.requests[-1].body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][-1]["type"] == "tool_use"
    result = turns[2]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == TOOL_ID
    assert result["content"] == "sunny, 21 C"


def test_a_custom_tool_call_streams_to_the_official_client(client: openai.OpenAI) -> None:
    patch = {"type": "custom", "name": "apply_patch", "description": "Apply a patch."}
    ask = "fix the typo in README"
    with client.responses.stream(model="sonnet", input=ask, tools=[patch]) as stream:  # type: ignore[list-item]
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.custom_tool_call_input.done" in kinds
    (call,) = [item for item in final.output if item.type == "custom_tool_call"]
    assert call.name == "apply_patch" and call.call_id == TOOL_ID
    # the fake upstream answers with its own JSON, not {"input": ...}: passed on as it came
    assert json.loads(call.input) == {"query": ask}


def test_what_cannot_be_carried_is_a_400_naming_the_field(client: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
    ]
    for change, param in cases:
        body: dict[str, object] = {"model": "auto", "input": "hi", **change}
        with pytest.raises(openai.BadRequestError) as caught:
            client.post("/responses", body=body, cast_to=object)
        error = caught.value.body
        assert isinstance(error, dict) and error["param"] == param, (change, error)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")


def test_nothing_is_stored_to_retrieve(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve("resp_123")
    assert "stores no responses" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_123")
    with pytest.raises(openai.NotFoundError) as unknown:  # an endpoint this gateway lacks
        client.post("/responses/compact", body={"model": "auto", "input": "x"}, cast_to=object)
    assert "is not an endpoint of this gateway" in unknown.value.message
    with pytest.raises(openai.NotFoundError) as none:
        client.conversations.create()
    assert "keeps no conversations" in none.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="auto", input="hi", conversation="conv_1")
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "conversation"


def test_the_serve_log_holds_no_traceback(gateway: Served, tmp_path: Path) -> None:
    assert "Traceback" not in gateway.log.read_text()
