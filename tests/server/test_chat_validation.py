"""``POST /v1/chat/completions`` refuses what OpenAI refuses, end to end: `llmroute
serve` as a subprocess, the official `openai` client (or httpx, for bodies it cannot
send) in front of it, the fake upstream behind it. A parameter of the wrong type, a
message with an unknown role or without its content, is a 400 ``invalid_request_error``
naming the field, before routing or any upstream call, where it used to be answered
200 (``"stream": "yes"`` served whole, ``"max_tokens": -5`` passed on). NaN, Infinity
and numbers beyond a double are refused when any front's body is parsed; a ``model``
that is not a string is named ``model``; a batch's chat line gets the same 400."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from batch_runs import batch_ended
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small, price: {input: 1, output: 2}}
  vectors: {provider: fake, model: up-embed, kind: embedding}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
batches: {concurrency: 2}
"""
HI = [{"role": "user", "content": "hi there!"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("chat-validation")
    text = REGISTRY % {"url": upstream.url}
    with serve_text(text, tmp, env={"LLMROUTE_TELEMETRY_URL": "off"}) as served:
        yield served


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def _refused(client: openai.OpenAI, upstream: FakeUpstream, **create: Any) -> dict[str, Any]:
    """The 400's error object for a chat request, checked to have reached no upstream."""
    before = len(upstream.requests)
    create.setdefault("model", "small")
    create.setdefault("messages", HI)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**create)
    assert len(upstream.requests) == before
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error"
    return body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", "ten"),
        ("max_tokens", -5),
        ("max_tokens", 0),
        ("max_tokens", True),
        ("max_tokens", 2.5),
        ("max_completion_tokens", "ten"),
        ("max_completion_tokens", -5),
        ("max_completion_tokens", True),
        ("n", -1),
        ("n", "x"),
        ("temperature", "hot"),
        ("temperature", True),
        ("top_p", [1]),
        ("presence_penalty", "0"),
        ("frequency_penalty", {}),
        ("stream", "yes"),
        ("stream", 1),
        ("stream_options", "include_usage"),
        ("tools", "x"),
        ("tools", {"type": "function"}),
        ("stop", 5),
        ("stop", ["END", 1]),
        ("model", 123),
        ("user", 42),
        ("user", {"id": "u1"}),
    ],
)
def test_a_parameter_of_the_wrong_type_is_a_400_naming_it(
    client: openai.OpenAI, upstream: FakeUpstream, field: str, value: Any
) -> None:
    error = _refused(client, upstream, extra_body={field: value})
    assert error["param"] == field
    assert field in error["message"]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([*HI, {"role": "bogus", "content": "x"}], "messages[1].role"),
        ([{"content": "hi"}], "messages[0].role"),
        ([{"role": ["user"], "content": "hi"}], "messages[0].role"),
        ([{"role": "system", "content": "be brief"}, {"role": "user"}], "messages[1].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "developer", "content": 5}, *HI], "messages[0].content"),
        ([*HI, {"role": "assistant", "content": {"text": "x"}}], "messages[1].content"),
        (["hi there!"], "messages[0]"),
        ([], "messages"),
        ([*HI, {"role": "tool", "content": "42"}], "messages[1].tool_call_id"),
        ([*HI, {"role": "tool", "tool_call_id": 7, "content": "42"}], "messages[1].tool_call_id"),
        (
            [{"role": "user", "content": [{"type": "text", "text": 5}]}],
            "messages[0].content[0].text",
        ),
        ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
        ([{"role": "user", "content": [{"text": {"t": "x"}}]}], "messages[0].content[0].text"),
        ([{"role": "user", "content": ["hi there!"]}], "messages[0].content[0]"),
    ],
)
def test_a_malformed_message_is_a_400_naming_it(
    client: openai.OpenAI, upstream: FakeUpstream, messages: list[Any], param: str
) -> None:
    error = _refused(client, upstream, messages=messages)
    assert error["param"] == param


_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("field", ["tool_choice", "parallel_tool_calls"])
@pytest.mark.parametrize("tools", [None, []], ids=["no-tools", "empty-tools"])
def test_a_tool_choice_without_tools_is_a_400_as_openai_answers(
    client: openai.OpenAI, upstream: FakeUpstream, field: str, tools: list[Any] | None
) -> None:
    """OpenAI refuses these two without tools; an OpenAI upstream would too (after
    routing, as the gateway's request), and an Anthropic one used to drop them unseen."""
    value: Any = "required" if field == "tool_choice" else False
    extra: dict[str, Any] = {field: value} if tools is None else {field: value, "tools": tools}
    error = _refused(client, upstream, extra_body=extra)
    assert error["param"] == field
    assert error["message"] == (
        f"Invalid value for '{field}': '{field}' is only allowed when 'tools' are specified."
    )


def test_an_empty_tools_list_is_a_400_as_openai_answers(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """OpenAI refuses ``"tools": []``; the gateway passed it on for an OpenAI upstream to
    refuse after routing (a 400 about the gateway's request, or a fallback tried)."""
    error = _refused(client, upstream, tools=[])
    assert error["param"] == "tools" and error["code"] == "empty_array"
    assert error["message"] == (
        "Invalid 'tools': empty array. Expected an array with minimum length 1, "
        "but got an empty array instead."
    )


MAX_LOGIT_BIAS, MAX_TOOLS = 1024, 128  # OpenAI's bounds, the gateway's too


@pytest.mark.parametrize(
    ("field", "many", "code", "words"),
    [
        (
            "logit_bias",
            {str(token): -1 for token in range(MAX_LOGIT_BIAS + 1)},
            "object_above_max_properties",
            "Invalid 'logit_bias': too many properties. Expected an object with at most "
            "1024 properties, but got an object with 1025 properties instead.",
        ),
        (
            "tools",
            [_TOOL] * (MAX_TOOLS + 1),
            "array_above_max_length",
            "Invalid 'tools': array too long. Expected an array with maximum length 128, "
            "but got an array with length 129 instead.",
        ),
    ],
    ids=["logit_bias", "tools"],
)
def test_more_logit_bias_entries_or_tools_than_openai_takes_are_a_400_first(
    client: openai.OpenAI, upstream: FakeUpstream, field: str, many: Any, code: str, words: str
) -> None:
    """OpenAI's own 400, in its words, before anything else in the body is walked: a 4 MB
    body of 300,000 ``logit_bias`` entries was checked, estimated and written again for
    the upstream (which refuses past 1,024); a bad message later in the body does not
    win over it. At the bound, served."""
    bad_message = [*HI, {"role": "nobody"}]
    error = _refused(client, upstream, messages=bad_message, extra_body={field: many})
    assert (error["param"], error["code"], error["message"]) == (field, code, words)
    at_most = dict(list(many.items())[:MAX_LOGIT_BIAS]) if isinstance(many, dict) else many[:-1]
    client.chat.completions.create(model="small", messages=HI, extra_body={field: at_most})
    assert len(upstream.requests[-1].body[field]) == len(at_most)


@pytest.mark.parametrize("stream", [None, False], ids=["no-stream", "stream-false"])
def test_stream_options_without_a_stream_is_a_400_as_openai_answers(
    client: openai.OpenAI, upstream: FakeUpstream, stream: bool | None
) -> None:
    """OpenAI refuses stream options on a request that is not streamed; the gateway
    passed them on for an OpenAI upstream to refuse after routing."""
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}}
    if stream is not None:
        extra["stream"] = stream
    error = _refused(client, upstream, extra_body=extra)
    assert error["param"] == "stream_options"
    assert "'stream_options' is only allowed when 'stream' is true" in error["message"]


def test_a_tool_choice_with_tools_or_null_is_served(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    client.chat.completions.create(
        model="small", messages=HI, tools=[_TOOL], tool_choice="none", parallel_tool_calls=False
    )
    sent = upstream.requests[-1].body
    assert sent["tool_choice"] == "none" and sent["parallel_tool_calls"] is False
    client.chat.completions.create(
        model="small", messages=HI, extra_body={"tool_choice": None, "parallel_tool_calls": None}
    )


def test_what_openai_accepts_is_served(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    """Nulls for left-out fields, an assistant turn of tool calls alone, a tool's answer,
    a developer message of parts, ints where numbers are asked for."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages: list[Any] = [
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": "hi there!"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "user", "content": "thanks"},
    ]
    completion = client.chat.completions.create(
        model="small",
        messages=messages,
        temperature=0,
        top_p=1,
        stop=["END"],
        n=1,
        max_completion_tokens=5,
        extra_body={"max_tokens": None, "presence_penalty": None, "stream": None},
    )
    assert completion.choices[0].message.content
    sent = upstream.requests[-1].body
    assert sent["messages"][2] == {"role": "assistant", "tool_calls": [call]}
    assert client.chat.completions.create(model="small", messages=HI, stop="END").choices


def test_a_stream_asked_with_a_non_boolean_is_refused_not_served_whole(
    gateway: Served, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    body = {"model": "small", "messages": HI, "stream": "yes"}
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "stream"
    assert len(upstream.requests) == before


_CHAT = '{"model": "small", "messages": [{"role": "user", "content": "hi there!"}], %s}'


_NOT_JSON = {
    "chat-nan": ("/v1/chat/completions", _CHAT % '"temperature": NaN'),
    "chat-infinity": ("/v1/chat/completions", _CHAT % '"temperature": Infinity'),
    "chat-nested": ("/v1/chat/completions", _CHAT % '"logit_bias": {"50256": -Infinity}'),
    "chat-1e400": ("/v1/chat/completions", _CHAT % '"max_tokens": 1e400'),
    "chat-minus-1e309": ("/v1/chat/completions", _CHAT % '"top_p": -1E+309'),
    "chat-tool-schema": (
        "/v1/chat/completions",
        _CHAT % '"tools": [{"type": "function", "function": {"name": "f", '
        '"parameters": {"type": "object", "properties": {"x": {"maximum": NaN}}}}}]',
    ),
    "completions": ("/v1/completions", '{"model": "small", "prompt": "hi", "temperature": NaN}'),
    "responses": ("/v1/responses", '{"model": "small", "input": "hi", "top_p": Infinity}'),
    "messages": (
        "/v1/messages",
        '{"model": "small", "max_tokens": 5, "temperature": 1e999, '
        '"messages": [{"role": "user", "content": "hi"}]}',
    ),
    "route": ("/v1/route", _CHAT % '"temperature": NaN'),
    "embeddings": ("/v1/embeddings", '{"model": "vectors", "input": "hi", "dimensions": Infinity}'),
}


@pytest.mark.parametrize(("path", "body"), list(_NOT_JSON.values()), ids=list(_NOT_JSON))
def test_nan_infinity_and_overflowing_numbers_are_not_json(
    gateway: Served, upstream: FakeUpstream, path: str, body: str
) -> None:
    before = len(upstream.requests)
    answer = httpx.post(
        f"{gateway.url}{path}",
        content=body.encode(),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    assert "not valid JSON" in answer.text
    assert len(upstream.requests) == before


_LATIN_1 = {
    "chat": (
        "/v1/chat/completions",
        '{"model": "small", "messages": [{"role": "user", "content": "café"}]}',
    ),
    "completions": ("/v1/completions", '{"model": "small", "prompt": "café"}'),
    "responses": ("/v1/responses", '{"model": "small", "input": "café"}'),
    "messages": (
        "/v1/messages",
        '{"model": "small", "max_tokens": 5, "messages": [{"role": "user", "content": "café"}]}',
    ),
    "embeddings": ("/v1/embeddings", '{"model": "vectors", "input": "café"}'),
}


@pytest.mark.parametrize(("path", "body"), list(_LATIN_1.values()), ids=list(_LATIN_1))
def test_a_body_in_another_charset_is_said_to_be_no_utf8(
    gateway: Served, upstream: FakeUpstream, path: str, body: str
) -> None:
    """A client that sends latin-1 (and says so) was told only "not valid JSON": the JSON
    was fine, its encoding was not."""
    before = len(upstream.requests)
    answer = httpx.post(
        f"{gateway.url}{path}",
        content=body.encode("latin-1"),
        headers={"content-type": "application/json; charset=latin-1"},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    assert "not UTF-8" in answer.text
    assert len(upstream.requests) == before
    utf8 = httpx.post(f"{gateway.url}{path}", content=body.encode(), timeout=10)
    assert utf8.status_code == 200, utf8.text  # the same body in UTF-8 is answered


@pytest.mark.parametrize(("path", "body"), list(_LATIN_1.values()), ids=list(_LATIN_1))
def test_a_compressed_body_is_a_415_that_says_so(
    gateway: Served, upstream: FakeUpstream, path: str, body: str
) -> None:
    """A gzip-compressed body was told it is not UTF-8 "whatever charset the content type
    names": the charset was not what was wrong with it."""
    before = len(upstream.requests)
    answer = httpx.post(
        f"{gateway.url}{path}",
        content=gzip.compress(body.encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
        timeout=10,
    )
    assert answer.status_code == 415, answer.text
    assert answer.headers["accept-encoding"] == "identity"
    assert "Content-Encoding: 'gzip', which this gateway does not decode" in answer.text
    assert "UTF-8" not in answer.text
    assert len(upstream.requests) == before
    plain = {"content-encoding": "identity"}
    assert httpx.post(f"{gateway.url}{path}", content=body, headers=plain).status_code == 200


def test_numbers_a_double_holds_still_parse(gateway: Served) -> None:
    """1e308 is a number; 1e-400 rounds to 0 (no overflow); "NaN" in a string is text."""
    body = _CHAT % '"temperature": 1e-400, "top_p": 1.0E0, "user": "NaN Infinity 1e400"'
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=body.encode(),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    routed = httpx.post(
        f"{gateway.url}/v1/route",
        content=(_CHAT % '"frequency_penalty": 1e308').encode(),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert routed.status_code == 200, routed.text


def test_a_model_that_is_not_a_string_is_named_model_on_route(gateway: Served) -> None:
    answer = httpx.post(f"{gateway.url}/v1/route", json={"model": 123, "messages": HI}, timeout=10)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "model" and "'model' must be a string" in error["message"]
    # the messages' own errors still name them
    body = {"model": "auto", "messages": "hi"}
    bad = httpx.post(f"{gateway.url}/v1/route", json=body, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"


def test_a_null_model_is_left_out_routed_as_auto(gateway: Served) -> None:
    """``null`` counts as left out (docs/gateway.md), and a chat body without ``model`` is
    routed as ``auto``: so is one whose ``model`` is null, on chat and on ``/v1/route``
    (it used to be a 400 "'model' must be a string")."""
    for path in ("/v1/chat/completions", "/v1/route"):
        for body in ({"messages": HI}, {"model": None, "messages": HI}):
            answer = httpx.post(f"{gateway.url}{path}", json=body, timeout=10)
            assert answer.status_code == 200, (path, body, answer.text)
            assert answer.headers["x-llmroute-route"] == "chitchat", answer.headers
            assert answer.headers["x-llmroute-layer"] != "pinned"


def test_a_batch_chat_line_gets_the_same_400(client: openai.OpenAI) -> None:
    bodies: dict[str, dict[str, Any]] = {
        "ok": {"model": "small", "messages": HI},
        "ten": {"model": "small", "messages": HI, "max_tokens": "ten"},
        "role": {"model": "small", "messages": [*HI, {"role": "bogus", "content": "x"}]},
        "stream": {"model": "small", "messages": HI, "stream": "yes"},
    }
    lines = b"".join(
        json.dumps(
            {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}
        ).encode()
        + b"\n"
        for cid, body in bodies.items()
    )
    upload = client.files.create(file=("lines.jsonl", lines), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = batch_ended(client, batch.id, 30)
    assert batch.status == "completed", batch
    assert batch.output_file_id and batch.error_file_id
    answered = client.files.content(batch.output_file_id).text.splitlines()
    assert [json.loads(line)["custom_id"] for line in answered] == ["ok"]
    failed = {
        line["custom_id"]: line["response"]
        for line in map(json.loads, client.files.content(batch.error_file_id).text.splitlines())
    }
    params = {cid: r["body"]["error"]["param"] for cid, r in failed.items()}
    assert params == {"ten": "max_tokens", "role": "messages[1].role", "stream": "stream"}
    assert {r["status_code"] for r in failed.values()} == {400}
    # a line holding NaN is not JSON: the file is refused when the batch is made, naming it
    nan = {"model": "small", "messages": HI, "temperature": float("nan")}
    line = {"custom_id": "nan", "method": "POST", "url": "/v1/chat/completions", "body": nan}
    upload = client.files.create(file=("nan.jsonl", json.dumps(line).encode()), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 30
    while (batch := client.batches.retrieve(batch.id)).status == "validating":
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
    assert batch.status == "failed" and batch.errors is not None and batch.errors.data
    assert [(e.line, e.code) for e in batch.errors.data] == [(1, "invalid_json_line")]


def test_feedback_with_the_log_off_says_where_it_was_turned_off(gateway: Served) -> None:
    """The log is off here by ``LLMROUTE_TELEMETRY_URL=off``, not by the registry: the
    503 names both places (it named only ``telemetry.url``), and says how to turn it on
    (it did not name ``telemetry.enabled``, which examples/echo.yaml sets false)."""
    answer = httpx.post(
        f"{gateway.url}/v1/feedback", json={"decision_id": "x", "thumbs": "up"}, timeout=10
    )
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "telemetry_disabled"
    assert "telemetry.enabled is false" in error["message"]
    assert "$LLMROUTE_TELEMETRY_URL is off" in error["message"]
    assert "telemetry: {enabled: true}" in error["message"]


@pytest.mark.parametrize(
    ("create", "param", "code"),
    [
        ({"messages": openai.NOT_GIVEN}, "messages", "missing_required_parameter"),
        ({"messages": []}, "messages", "empty_array"),
        ({"messages": "hi there!"}, "messages", "invalid_type"),
        ({"messages": ["hi there!"]}, "messages[0]", "invalid_type"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role", "missing_required_parameter"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "messages[0].role", "invalid_value"),
        ({"messages": [{"role": 1, "content": "hi"}]}, "messages[0].role", "invalid_type"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
        (
            {"messages": [*HI, {"role": "tool", "content": "42"}]},
            "messages[1].tool_call_id",
            "missing_required_parameter",
        ),
        ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
        ({"n": -1}, "n", "integer_below_min_value"),
        ({"max_completion_tokens": "ten"}, "max_completion_tokens", "invalid_type"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"model": 5}, "model", "invalid_type"),
    ],
)
def test_a_refused_body_carries_openais_code(
    client: openai.OpenAI, upstream: FakeUpstream, create: dict[str, Any], param: str, code: str
) -> None:
    """OpenAI's 400s say what is wrong in ``code`` as well as ``param``
    (``missing_required_parameter``, ``empty_array``, ``invalid_type``, ``invalid_value``,
    ``integer_below_min_value``), which clients and proxies branch on; the gateway's had
    none."""
    error = _refused(client, upstream, **create)
    assert (error["param"], error["code"]) == (param, code)


_SCHEMA = {"name": "w", "strict": True, "schema": {"type": "object", "properties": {}}}


@pytest.mark.parametrize(
    ("create", "param", "code"),
    [
        ({"seed": "7"}, "seed", "invalid_type"),
        ({"seed": 1.5}, "seed", "invalid_type"),
        ({"logprobs": "yes"}, "logprobs", "invalid_type"),
        ({"logprobs": True, "top_logprobs": "2"}, "top_logprobs", "invalid_type"),
        ({"store": "yes"}, "store", "invalid_type"),
        ({"logit_bias": [1]}, "logit_bias", "invalid_type"),
        ({"service_tier": 5}, "service_tier", "invalid_type"),
        ({"tools": [_TOOL], "parallel_tool_calls": "no"}, "parallel_tool_calls", "invalid_type"),
        ({"tools": [_TOOL], "tool_choice": 5}, "tool_choice", "invalid_type"),
        ({"response_format": "json"}, "response_format", "invalid_type"),
        (
            {"response_format": {"json_schema": _SCHEMA}},
            "response_format.type",
            "missing_required_parameter",
        ),
        ({"response_format": {"type": 5}}, "response_format.type", "invalid_type"),
        (
            {"response_format": {"type": "json_schema"}},
            "response_format.json_schema",
            "missing_required_parameter",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": "w"}},
            "response_format.json_schema",
            "invalid_type",
        ),
    ],
)
def test_a_field_openai_types_strictly_is_checked_before_routing(
    client: openai.OpenAI, upstream: FakeUpstream, create: dict[str, Any], param: str, code: str
) -> None:
    """These went on as sent: an OpenAI upstream refused them after routing (a 400 about
    the gateway's request, or a fallback tried), while an Anthropic model's conversion
    dropped them unseen (``"response_format": "json"`` answered as free text), so the
    same mistake failed or passed by the model routing chose."""
    error = _refused(client, upstream, extra_body=create)
    assert (error["param"], error["code"]) == (param, code)


@pytest.mark.parametrize(
    "create",
    [
        {"seed": 7, "logprobs": True, "top_logprobs": 2, "store": False, "logit_bias": {"50": -1}},
        {"service_tier": "auto", "tools": [_TOOL], "tool_choice": "auto"},
        {"tools": [_TOOL], "parallel_tool_calls": False, "tool_choice": {"type": "function"}},
        {"response_format": {"type": "json_schema", "json_schema": _SCHEMA}},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "structural_tag", "structures": []}},  # vLLM's own
    ],
)
def test_those_fields_well_formed_go_on_as_sent(
    client: openai.OpenAI, upstream: FakeUpstream, create: dict[str, Any]
) -> None:
    before = len(upstream.requests)
    client.chat.completions.create(model="small", messages=HI, extra_body=create)
    assert len(upstream.requests) == before + 1
    sent = upstream.requests[-1].body
    assert {key: sent[key] for key in create} == create
