"""Kept responses on ``/v1/responses`` end to end: `llmroute serve` with a
``stored_responses`` section as a subprocess, the official `openai` client in front,
the fake OpenAI and Anthropic upstreams behind. A response is kept and read back, continued by
``previous_response_id`` (the upstream receives the whole conversation), streamed and
continued at once, its tool call answered in the next request, listed, deleted; each
client key sees only its own; ``store: false`` keeps nothing; two gateways share the
responses kept in Redis. A ``background: true`` request is polled until made, cancelled
(its upstream call closed), kept failed when it fails or when its gateway stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from fake_anthropic import TOOL_ID, FakeAnthropic
from fake_upstream import FakeUpstream
from gateway_proc import BIN, Served, free_port, serve_text
from redis_service import REDIS_URL
from stall_proxy import stall_proxy

from llmroute.registry.schema import StoredResponsesSettings
from llmroute.server.background_stream import EventChunks
from llmroute.server.responses import _Kept
from llmroute.server.responses_background import _answer_in_background
from llmroute.state.conversations import ConversationStore
from llmroute.state.stored_responses import ResponseStore
from llmroute.state.stores import MemoryStore, RedisStore, StoreUnavailable, owner_group

TEAM_KEY = "sk-team-responses-0123"
OTHER_KEY = "sk-other-responses-4567"
REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
  patient: {kind: openai, base_url: "%(url)s", timeout_s: 60}
models:
  small: {provider: fake, model: up-small}
  large: {provider: fake, model: up-large}
  sonnet: {provider: claude, model: claude-x}
  slow: {provider: fake, model: "slow?delay=1.5"}
  slower: {provider: patient, model: "slower?delay=20"}
  leisurely: {provider: patient, model: "leisurely?delay=4"}
  down: {provider: fake, model: "down?status=500"}
  broken: {provider: fake, model: "broken?mid=1"}
  gappy: {provider: fake, model: "gappy?gap=0.2"}
  dead: {provider: fake, model: "dead?status=500"}  # its own breaker: down's stays closed
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: large
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
stored_responses: %(responses)s
auth:
  keys:
    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY}
    - {name: other, key_env: LLMROUTE_TEST_OTHER_KEY}
    - {name: ops, key_env: LLMROUTE_TEST_OPS_KEY, admin: true}
    - {name: untagged, key_env: LLMROUTE_TEST_UNTAGGED_KEY, header_tags: false}
    - {name: narrow, key_env: LLMROUTE_TEST_NARROW_KEY, models: [small]}
    - {name: pooled, key_env: LLMROUTE_TEST_POOLED_KEY, pool: [small]}
    - {name: frugal, key_env: LLMROUTE_TEST_FRUGAL_KEY, tpm: 500}
"""
OPS_KEY = "sk-ops-responses-8910"
UNTAGGED_KEY = "sk-untagged-responses-1213"
NARROW_KEY = "sk-narrow-responses-1415"
POOLED_KEY = "sk-pooled-responses-1617"
FRUGAL_KEY = "sk-frugal-responses-1819"
KEYS = {
    "LLMROUTE_TEST_NARROW_KEY": NARROW_KEY,
    "LLMROUTE_TEST_POOLED_KEY": POOLED_KEY,
    "LLMROUTE_TEST_FRUGAL_KEY": FRUGAL_KEY,
    "LLMROUTE_TEST_UNTAGGED_KEY": UNTAGGED_KEY,
    "LLMROUTE_TEST_TEAM_KEY": TEAM_KEY,
    "LLMROUTE_TEST_OTHER_KEY": OTHER_KEY,
    "LLMROUTE_TEST_OPS_KEY": OPS_KEY,
}
WEATHER = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    }
]


def _until(check: Callable[[], bool], within_s: float = 10.0) -> None:
    """Wait (bounded) until `check()` holds."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def _polled(client: openai.OpenAI, response_id: str) -> str:
    """The response's status once it has left queued / in_progress (bounded)."""
    status = ""

    def ended() -> bool:
        nonlocal status
        status = str(client.responses.retrieve(response_id).status)
        return status not in ("queued", "in_progress")

    _until(ended)
    return status


def _registry(upstream: FakeUpstream, claude: FakeAnthropic, responses: str) -> str:
    return REGISTRY % {"url": upstream.url, "anthropic": claude.url, "responses": responses}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, claude: FakeAnthropic
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("kept")
    text = _registry(upstream, claude, "{ttl_s: 600}")
    with serve_text(text, tmp, env={"LLMROUTE_TELEMETRY_URL": "off", **KEYS}) as served:
        yield served


def _client(served: Served, key: str = TEAM_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with _client(gateway) as c:
        yield c


def test_a_response_is_kept_read_back_and_continued(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    first = client.responses.create(
        model="auto", instructions="You are terse.", input="write a Python function to parse YAML"
    )
    assert first.store is True and first.id.startswith("resp_") and len(first.id) > 40
    again = client.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == first.output_text
    assert again.model == "large"

    second = client.responses.create(
        model="large",
        instructions="Answer in French.",
        input="and now for TOML?",
        previous_response_id=first.id,
    )
    assert second.previous_response_id == first.id and second.store is True
    sent = upstream.requests[-1].body["messages"]
    assert sent == [
        {"role": "system", "content": "Answer in French."},  # the earlier instructions: not
        {"role": "user", "content": "write a Python function to parse YAML"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "and now for TOML?"},
    ]
    third = client.responses.create(model="large", input="and INI?", previous_response_id=second.id)
    assert [m["content"] for m in upstream.requests[-1].body["messages"]] == [
        "write a Python function to parse YAML",
        first.output_text,
        "and now for TOML?",
        second.output_text,
        "and INI?",
    ]
    assert third.output_text == "echo: and INI?"


def test_an_item_reference_names_an_item_of_the_conversation(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    first = client.responses.create(model="small", input="say hello")
    answer = first.output[0].id
    client.responses.create(
        model="small",
        previous_response_id=first.id,
        input=[{"type": "item_reference", "id": answer}, {"role": "user", "content": "again"}],
    )
    sent = [m["content"] for m in upstream.requests[-1].body["messages"]]
    assert sent == ["say hello", first.output_text, first.output_text, "again"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="small",
            previous_response_id=first.id,
            input=[{"type": "item_reference", "id": "msg_nowhere"}],
        )
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "input[0]"


def test_a_streamed_response_is_kept_before_it_is_told_complete(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    with client.responses.stream(model="chitchat", input="hi there!") as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[-1] == "response.completed" and final.store is True
    # continued the moment the stream said completed: it must be there already
    with client.responses.stream(
        model="chitchat", input="how are you?", previous_response_id=final.id
    ) as stream:
        list(stream)
        second = stream.get_final_response()
    assert [m["content"] for m in upstream.requests[-1].body["messages"]] == [
        "hi there!",
        final.output_text,
        "how are you?",
    ]
    assert client.responses.retrieve(second.id).output_text == second.output_text


def test_a_tool_call_is_answered_in_the_next_request(
    client: openai.OpenAI, claude: FakeAnthropic
) -> None:
    ask = "what is the weather in Paris?"
    first = client.responses.create(model="sonnet", input=ask, tools=WEATHER)  # type: ignore[arg-type]
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.call_id == TOOL_ID
    client.responses.create(
        model="sonnet",
        tools=WEATHER,  # type: ignore[arg-type]
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": TOOL_ID, "output": "sunny, 21 C"}],
    )
    sent = claude.requests[-1].body["messages"]
    assert sent[0]["role"] == "user" and sent[0]["content"][0]["text"] == ask
    assert sent[1]["role"] == "assistant"
    # the earlier answer whole: its words and its call, as one assistant turn
    assert [b["type"] for b in sent[1]["content"]] == ["text", "tool_use"]
    assert sent[1]["content"][1]["id"] == TOOL_ID
    assert sent[2]["content"][0]["type"] == "tool_result"
    assert sent[2]["content"][0]["tool_use_id"] == TOOL_ID


def test_input_items_are_listed_newest_first_by_pages(client: openai.OpenAI) -> None:
    first = client.responses.create(model="small", input="one")
    second = client.responses.create(
        model="small",
        previous_response_id=first.id,
        input=[{"role": "user", "content": "two"}, {"role": "user", "content": "three"}],
    )
    page = client.responses.input_items.list(second.id, limit=2)
    texts = [item.content[0].text for item in page.data]  # type: ignore[union-attr]
    assert texts == ["three", "two"] and page.has_more is True
    everything = list(client.responses.input_items.list(second.id, order="asc"))
    texts = [item.content[0].text for item in everything]  # type: ignore[union-attr]
    assert texts == ["one", first.output_text, "two", "three"]
    assert len({item.id for item in everything}) == 4


def test_store_false_keeps_nothing_and_an_unknown_id_is_a_400(client: openai.OpenAI) -> None:
    response = client.responses.create(model="small", input="hi there!", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="small", input="again", previous_response_id=response.id)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "previous_response_not_found"
    assert error["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as bad:
        client.post(
            "/responses", body={"model": "small", "input": "x", "store": "yes"}, cast_to=object
        )
    assert isinstance(bad.value.body, dict) and bad.value.body["param"] == "store"


def _outcomes(gateway: Served, metric: str) -> dict[str, float]:
    """`metric`'s count for each outcome, as the gateway's /metrics says them now."""
    headers = {"authorization": f"Bearer {OPS_KEY}"}
    text = httpx.get(f"{gateway.url}/metrics", headers=headers, timeout=5).text
    return {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(metric + "{")
    }


@pytest.mark.parametrize(
    ("fault", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"model": 5}, "model"),
        ({"background": True, "store": False}, "store"),
        (
            {"input": [{"type": "item_reference", "id": "msg_x"}, {"role": "tool"}]},
            "input[1].role",
        ),
    ],
)
def test_a_malformed_body_is_answered_for_its_fault_before_the_store_is_read(
    gateway: Served, client: openai.OpenAI, fault: dict[str, Any], param: str
) -> None:
    conv = client.conversations.create()
    client.conversations.delete(conv.id)
    kept = _outcomes(gateway, "llmroute_stored_responses_total")
    conversations = _outcomes(gateway, "llmroute_conversations_total")
    body = {"model": "small", "input": "hi", **fault}
    for continues in ({"previous_response_id": "resp_nowhere"}, {"conversation": conv.id}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.post("/responses", body={**body, **continues}, cast_to=object)
        assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param
    assert _outcomes(gateway, "llmroute_stored_responses_total") == kept  # nothing read
    assert _outcomes(gateway, "llmroute_conversations_total") == conversations


def test_a_deleted_response_is_gone(client: openai.OpenAI) -> None:
    response = client.responses.create(model="small", input="forget me")
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(response.id)
    assert caught.value.body["code"] == "response_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="small", input="x", previous_response_id=response.id)


def test_a_conversation_whose_earlier_turn_was_deleted_cannot_go_on(
    client: openai.OpenAI,
) -> None:
    first = client.responses.create(model="small", input="one")
    second = client.responses.create(model="small", input="two", previous_response_id=first.id)
    client.responses.delete(first.id)
    assert client.responses.retrieve(second.id).id == second.id  # itself still there
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="small", input="three", previous_response_id=second.id)
    assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    assert first.id in caught.value.message


def test_a_response_is_its_client_keys_alone(gateway: Served, client: openai.OpenAI) -> None:
    mine = client.responses.create(model="small", input="my secret plan")
    with _client(gateway, OTHER_KEY) as other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(mine.id)
        with pytest.raises(openai.BadRequestError) as caught:
            other.responses.create(model="small", input="tell me", previous_response_id=mine.id)
        assert "my secret plan" not in str(caught.value.body)
    assert client.responses.retrieve(mine.id).id == mine.id  # still there for its owner


def test_cancel_is_refused_and_nothing_is_logged_amiss(
    client: openai.OpenAI, gateway: Served
) -> None:
    response = client.responses.create(model="small", input="hi there!")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.cancel(response.id)
    assert "background" in caught.value.message
    headers = {"authorization": f"Bearer {TEAM_KEY}"}
    listed = httpx.get(
        f"{gateway.url}/v1/responses/{response.id}/input_items?limit=500", headers=headers
    )
    assert listed.status_code == 400 and listed.json()["error"]["param"] == "limit"
    assert "Traceback" not in gateway.log_text()
    assert TEAM_KEY not in gateway.log_text()


def test_a_stream_that_breaks_is_kept_failed_and_joins_no_conversation(
    client: openai.OpenAI,
) -> None:
    conv = client.conversations.create(items=[{"role": "user", "content": "hello"}])
    events = list(
        client.responses.create(model="broken", input="go on", conversation=conv.id, stream=True)
    )
    assert events[-1].type == "response.failed"
    failed_id = events[-1].response.id  # type: ignore[union-attr]
    kept = client.responses.retrieve(failed_id)
    assert kept.status == "failed" and kept.error is not None
    assert kept.error.message == "the upstream stream broke off"
    assert len(list(client.conversations.items.list(conv.id))) == 1  # not a finished turn


def test_input_tokens_count_the_turns_a_request_continues(client: openai.OpenAI) -> None:
    first = client.responses.create(model="small", input="remember the number 42, please")
    alone = client.responses.input_tokens.count(input="what was it?")
    continued = client.responses.input_tokens.count(
        input="what was it?", previous_response_id=first.id
    )
    assert alone.input_tokens < continued.input_tokens
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.input_tokens.count(input="x", previous_response_id="resp_nothing")
    assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):  # not a kept response's id
        client.responses.retrieve("input_tokens")


def test_a_background_response_is_polled_until_it_is_made(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    started = client.responses.create(model="slow", input="think it over", background=True)
    assert started.status == "in_progress" and started.background is True
    assert started.output == [] and started.store is True
    assert client.responses.retrieve(started.id).status == "in_progress"
    with pytest.raises(openai.BadRequestError) as caught:  # not before it is made
        client.responses.create(model="small", input="and?", previous_response_id=started.id)
    assert "still in progress" in caught.value.message
    assert _polled(client, started.id) == "completed"
    made = client.responses.retrieve(started.id)
    assert made.output_text == "echo: think it over" and made.background is True
    # when it was made, by the gateway's clock: not the upstream's `created` (1 here)
    assert made.created_at == started.created_at and abs(made.created_at - time.time()) < 60
    assert made.usage is not None and made.usage.total_tokens > 0
    later = client.responses.create(model="small", input="and?", previous_response_id=made.id)
    sent = [m["content"] for m in upstream.requests[-1].body["messages"]]
    assert sent == ["think it over", "echo: think it over", "and?"]
    assert later.status == "completed"
    # cancelling what has ended changes nothing: it is returned as it is
    assert client.responses.cancel(made.id).status == "completed"
    with pytest.raises(openai.BadRequestError) as refused:  # no replay as a stream
        client.responses.retrieve(made.id, stream=True)
    assert refused.value.body["param"] == "stream"  # type: ignore[index]


def test_a_background_turn_joins_its_conversation_when_made(client: openai.OpenAI) -> None:
    conv = client.conversations.create(items=[{"role": "user", "content": "remember 7"}])
    started = client.responses.create(
        model="slow", input="what number?", conversation=conv.id, background=True
    )
    assert len(list(client.conversations.items.list(conv.id))) == 1  # not before it is made
    assert _polled(client, started.id) == "completed"
    items = list(client.conversations.items.list(conv.id, order="asc"))
    assert [i.type for i in items] == ["message"] * 3
    assert items[-1].content[0].text == "echo: what number?"  # type: ignore[union-attr]


def test_a_background_response_is_cancelled_and_its_upstream_call_closed(
    client: openai.OpenAI, upstream: FakeUpstream, gateway: Served
) -> None:
    called, cut = upstream.counts["slower?delay=20"], len(upstream.cut)
    started = client.responses.create(model="slower", input="take your time", background=True)
    _until(lambda: upstream.counts["slower?delay=20"] > called)  # its upstream call is open
    cancelled = client.responses.cancel(started.id)
    assert cancelled.status == "cancelled" and cancelled.id == started.id
    _until(lambda: ("slower?delay=20", 0) in upstream.cut[cut:])  # the call was closed
    assert client.responses.retrieve(started.id).status == "cancelled"
    assert client.responses.cancel(started.id).status == "cancelled"  # again: the same
    assert "Traceback" not in gateway.log_text()


def test_a_background_stream_is_followed_and_resumed(
    client: openai.OpenAI, gateway: Served
) -> None:
    """``background`` with ``stream``: the events come as made; the response is kept;
    ``GET …?stream=true&starting_after=N`` gives the events after N again (OpenAI's
    resumable stream), from the store once the run has ended."""
    events = list(
        client.responses.create(model="gappy", input="one two three", background=True, stream=True)
    )
    created = events[0]
    assert created.type == "response.created" and created.response.background is True
    assert created.response.status == "in_progress"
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.strip() == "echo: one two three"
    kept = client.responses.retrieve(created.response.id)
    assert kept.status == "completed" and kept.background is True
    assert kept.output_text.strip() == "echo: one two three"
    again = list(client.responses.retrieve(kept.id, stream=True, starting_after=3))
    assert [(e.sequence_number, e.type) for e in again] == [
        (e.sequence_number, e.type) for e in events[4:]
    ]
    headers = {"authorization": f"Bearer {TEAM_KEY}"}
    url = f"{gateway.url}/v1/responses/{kept.id}"
    bad = httpx.get(url, params={"stream": "true", "starting_after": "-1"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "starting_after"
    client.responses.delete(kept.id)  # its events go with it
    gone = httpx.get(url, params={"stream": "true"}, headers=headers)
    assert gone.status_code == 404
    plain = client.responses.create(model="slow", input="no stream", background=True)
    assert _polled(client, plain.id) == "completed"
    with pytest.raises(openai.BadRequestError) as caught:  # no events were kept for it
        client.responses.retrieve(plain.id, stream=True)
    assert caught.value.body["param"] == "stream"  # type: ignore[index]


def test_a_background_stream_that_fails_first_ends_with_response_failed(
    client: openai.OpenAI,
) -> None:
    events = list(client.responses.create(model="dead", input="hi", background=True, stream=True))
    kinds = ["response.created", "response.in_progress", "response.failed"]
    assert [e.type for e in events] == kinds
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None
    assert "500" in failed.error.message


def test_a_failing_background_response_is_kept_failed(client: openai.OpenAI) -> None:
    started = client.responses.create(model="down", input="hello", background=True)
    assert _polled(client, started.id) == "failed"
    failed = client.responses.retrieve(started.id)
    assert failed.error is not None and failed.error.code == "server_error"
    assert "500" in failed.error.message and failed.output == []


@pytest.mark.parametrize(
    ("key", "extra", "status"),
    [
        (UNTAGGED_KEY, {"extra_body": {"tags": ["team:x"]}}, 403),
        (UNTAGGED_KEY, {"extra_headers": {"x-llmroute-tags": "team:x"}}, 403),
        (TEAM_KEY, {"extra_headers": {"x-llmroute-tags": "no spaces"}}, 400),
    ],
)
def test_a_background_response_refused_for_its_tags_is_refused_at_once(
    gateway: Served, key: str, extra: dict[str, Any], status: int
) -> None:
    """As chat refuses it, rather than answered ``in_progress`` and kept failed."""
    with _client(gateway, key) as client, pytest.raises(openai.APIStatusError) as refused:
        client.responses.create(model="small", input="hello", background=True, **extra)
    assert refused.value.status_code == status


@pytest.mark.parametrize(
    ("key", "model", "status"),
    [
        (TEAM_KEY, "nowhere", 404),  # no such model
        (TEAM_KEY, "router-nope-0.5", 404),  # no such difficulty router
        (NARROW_KEY, "large", 403),  # outside the key's models
        (POOLED_KEY, "large", 403),  # outside the key's pool
    ],
)
def test_a_background_response_refused_before_dispatch_is_refused_at_once(
    gateway: Served, key: str, model: str, status: int
) -> None:
    """As a foreground request is refused, rather than answered ``in_progress``, queued
    and kept failed; the same request in the foreground gets the same status."""
    with _client(gateway, key) as client:
        for background in (False, True):
            with pytest.raises(openai.APIStatusError) as refused:
                client.responses.create(model=model, input="hello", background=background)
            assert refused.value.status_code == status, (background, refused.value.message)


def test_a_background_response_past_its_keys_tpm_is_refused_at_once(gateway: Served) -> None:
    """tpm 500, and prompts of about 380 tokens: a background response holds its prompt
    from the moment it is answered ``in_progress``, so the next one is refused at once,
    as it is in the foreground, rather than kept failed."""
    prompt = "word " * 300
    with _client(gateway, FRUGAL_KEY) as client:
        first = client.responses.create(model="slow", input=prompt, background=True)
        for background in (True, False):
            with pytest.raises(openai.RateLimitError):
                client.responses.create(model="small", input=prompt, background=background)
        assert _polled(client, first.id) == "completed"


def test_what_is_kept_validates_as_the_sdks_typed_models(gateway: Served) -> None:
    """The client builds its objects leniently: a missing required field reads None
    (`part.annotations`, `usage.input_tokens_details.cache_write_tokens`). Strictly
    validated, each object the API returns is what OpenAI's would be."""
    from openai.types.conversations import ConversationItem
    from openai.types.responses import Response, ResponseItem
    from pydantic import TypeAdapter

    headers = {"authorization": f"Bearer {TEAM_KEY}"}
    given = [
        {"role": "user", "content": "hi there!"},
        {"role": "assistant", "content": "hello"},
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"role": "user", "content": "thanks"},
    ]
    made = httpx.post(
        f"{gateway.url}/v1/responses", json={"model": "small", "input": given}, headers=headers
    ).json()
    response = Response.model_validate(made)
    assert response.completed_at is not None and response.usage is not None
    items = httpx.get(
        f"{gateway.url}/v1/responses/{response.id}/input_items", headers=headers
    ).json()["data"]
    TypeAdapter(list[ResponseItem]).validate_python(items)
    conversation = httpx.post(
        f"{gateway.url}/v1/conversations", json={"items": given}, headers=headers
    ).json()
    listed = httpx.get(
        f"{gateway.url}/v1/conversations/{conversation['id']}/items", headers=headers
    ).json()["data"]
    TypeAdapter(list[ConversationItem]).validate_python(listed)


def test_a_background_answer_too_large_to_keep_fails_at_once_saying_why(
    tmp_path: Path, upstream: FakeUpstream, claude: FakeAnthropic
) -> None:
    """Its request fitted, its answer did not: it stayed in_progress until its lease
    lapsed, then failed as if its process had died."""
    text = _registry(upstream, claude, "{ttl_s: 600, max_bytes: 10000}")
    with (
        serve_text(text, tmp_path, env={"LLMROUTE_TELEMETRY_URL": "off", **KEYS}) as served,
        _client(served) as client,
    ):
        started = client.responses.create(model="small", input="w " * 3000, background=True)
        assert _polled(client, started.id) == "failed"
        error = client.responses.retrieve(started.id).error
        assert error is not None and "could not be kept" in error.message


def test_what_cannot_be_made_in_the_background_is_refused(client: openai.OpenAI) -> None:
    refusals = [
        ({"store": False}, "store"),
        ({"background": "yes"}, "background"),
    ]
    for extra, param in refusals:
        body = {"model": "small", "input": "hi", "background": True, **extra}
        with pytest.raises(openai.BadRequestError) as caught:
            client.post("/responses", cast_to=object, body=body)
        assert caught.value.body["param"] == param, extra  # type: ignore[index]


def test_a_conversation_gathers_its_turns(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    conv = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "my name is Ada"}],
        metadata={"topic": "names"},
    )
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "names"}
    first = client.responses.create(model="small", input="what is my name?", conversation=conv.id)
    assert first.conversation is not None and first.conversation.id == conv.id
    assert [m["content"] for m in upstream.requests[-1].body["messages"]] == [
        "my name is Ada",
        "what is my name?",
    ]
    with client.responses.stream(
        model="small", input="and again?", conversation={"id": conv.id}
    ) as stream:
        list(stream)
        second = stream.get_final_response()
    assert [m["content"] for m in upstream.requests[-1].body["messages"]] == [
        "my name is Ada",
        "what is my name?",
        first.output_text,
        "and again?",
    ]
    listed = list(client.conversations.items.list(conv.id, order="asc"))
    texts = [item.content[0].text for item in listed]  # type: ignore[union-attr]
    assert texts == [
        "my name is Ada",
        "what is my name?",
        first.output_text,
        "and again?",
        second.output_text,
    ]
    assert all(item.status == "completed" for item in listed)  # type: ignore[union-attr]
    added = client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": "note this"}]
    )
    (note,) = added.data
    assert client.conversations.items.retrieve(note.id, conversation_id=conv.id).id == note.id
    assert client.conversations.items.delete(note.id, conversation_id=conv.id).id == conv.id
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(note.id, conversation_id=conv.id)
    renamed = client.conversations.update(conv.id, metadata={"topic": "people"})
    assert client.conversations.retrieve(conv.id).metadata == renamed.metadata
    with pytest.raises(openai.BadRequestError) as both:
        client.responses.create(
            model="small", input="x", conversation=conv.id, previous_response_id=first.id
        )
    assert isinstance(both.value.body, dict) and both.value.body["param"] == "conversation"
    with pytest.raises(openai.BadRequestError) as bad:
        client.conversations.items.create(conv.id, items=[{"role": "tool", "content": "x"}])
    assert isinstance(bad.value.body, dict) and bad.value.body["param"] == "items[0].role"
    assert client.conversations.delete(conv.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="small", input="hello?", conversation=conv.id)


def test_a_conversation_is_its_client_keys_alone(gateway: Served, client: openai.OpenAI) -> None:
    conv = client.conversations.create(items=[{"role": "user", "content": "a secret"}])
    with _client(gateway, OTHER_KEY) as other:
        with pytest.raises(openai.NotFoundError):
            other.conversations.retrieve(conv.id)
        with pytest.raises(openai.NotFoundError):
            other.conversations.items.list(conv.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model="small", input="tell me", conversation=conv.id)
    assert client.conversations.retrieve(conv.id).id == conv.id


def test_the_metrics_count_what_came_of_them(
    gateway: Served, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    # a background response of each outcome, made here: run alone (-k), it passes too
    made = client.responses.create(model="slow", input="count it", background=True)
    assert _polled(client, made.id) == "completed"
    failed = client.responses.create(model="down", input="count it", background=True)
    assert _polled(client, failed.id) == "failed"
    before = upstream.counts["slower?delay=20"]
    stopped = client.responses.create(model="slower", input="count it", background=True)
    _until(lambda: upstream.counts["slower?delay=20"] > before)
    assert client.responses.cancel(stopped.id).status == "cancelled"
    first = client.responses.create(model="small", input="count me")
    client.responses.create(model="small", input="again", previous_response_id=first.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="small", input="x", previous_response_id="resp_nope")
    headers = {"authorization": f"Bearer {OPS_KEY}"}
    text = httpx.get(f"{gateway.url}/metrics", headers=headers, timeout=5).text
    counts = {
        outcome: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("llmroute_stored_responses_total{")
        for outcome in [line.split('outcome="')[1].split('"')[0]]
    }
    assert counts["kept"] >= 2 and counts["continued"] >= 1 and counts["not_found"] >= 1
    conv = client.conversations.create()
    client.responses.create(model="small", input="count this", conversation=conv.id)
    text = httpx.get(f"{gateway.url}/metrics", headers=headers, timeout=5).text
    assert 'llmroute_conversations_total{outcome="created"}' in text
    assert 'llmroute_conversations_total{outcome="turn_added"}' in text
    for outcome in ("started", "completed", "failed", "cancelled"):
        assert f'llmroute_background_responses_total{{outcome="{outcome}"}}' in text, outcome


def test_two_gateways_share_responses_kept_in_redis(
    tmp_path: Path, upstream: FakeUpstream, claude: FakeAnthropic, redis_namespace: str
) -> None:
    kept = json.dumps({"url": REDIS_URL, "namespace": redis_namespace, "ttl_s": 60})
    text = _registry(upstream, claude, kept)
    env = {"LLMROUTE_TELEMETRY_URL": "off", **KEYS}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        serve_text(text, tmp_path / "a", env=env) as one,
        serve_text(text, tmp_path / "b", env=env) as two,
        _client(one) as first_client,
        _client(two) as second_client,
    ):
        first = first_client.responses.create(model="small", input="remember 42")
        second = second_client.responses.create(
            model="small", input="what did I say?", previous_response_id=first.id
        )
        assert [m["content"] for m in upstream.requests[-1].body["messages"]] == [
            "remember 42",
            first.output_text,
            "what did I say?",
        ]
        assert first_client.responses.retrieve(second.id).output_text == second.output_text
        # a client key's kept responses erased at once, from the command line
        with _client(two, OTHER_KEY) as theirs:
            other = theirs.responses.create(model="small", input="not mine")
            done = _forget(tmp_path / "a" / "registry.yaml", "--client", "team")
            assert done.returncode == 0, done.stderr
            erased = "2 records (kept responses and conversations) of client 'team' erased"
            assert done.stdout.startswith(erased)
            with pytest.raises(openai.NotFoundError):
                first_client.responses.retrieve(second.id)
            assert theirs.responses.retrieve(other.id).id == other.id  # not theirs to lose
    refused = _forget(tmp_path / "a" / "registry.yaml", "--client", "nobody")
    assert refused.returncode == 2 and "no client key 'nobody'" in refused.stderr


def test_a_background_response_is_shared_and_stopped_across_gateways(
    tmp_path: Path, upstream: FakeUpstream, claude: FakeAnthropic, redis_namespace: str
) -> None:
    """Kept in Redis, a background response made by one gateway is polled and cancelled
    through another; one cut short by its gateway stopping is kept failed."""
    kept = json.dumps({"url": REDIS_URL, "namespace": redis_namespace, "ttl_s": 60})
    text = _registry(upstream, claude, kept)
    env = {"LLMROUTE_TELEMETRY_URL": "off", **KEYS}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serve_text(text, tmp_path / "b", env=env) as two, _client(two) as second:
        with serve_text(text, tmp_path / "a", env=env) as one, _client(one) as first:
            made = first.responses.create(model="slow", input="shared", background=True)
            assert _polled(second, made.id) == "completed"
            assert second.responses.retrieve(made.id).output_text == "echo: shared"

            cut = len(upstream.cut)
            long = first.responses.create(model="slower", input="stop me", background=True)
            assert second.responses.cancel(long.id).status == "cancelled"
            _until(lambda: ("slower?delay=20", 0) in upstream.cut[cut:])  # stopped by one
            assert first.responses.retrieve(long.id).status == "cancelled"

            left = first.responses.create(model="slower", input="never made", background=True)
        # `one` has stopped (SIGTERM) while making `left`
        failed = second.responses.retrieve(left.id)
        assert failed.status == "failed" and failed.error is not None
        assert "stopped" in failed.error.message
        log = (tmp_path / "a" / "serve.log").read_text()
    assert "background response(s) cut short" in log and "Traceback" not in log


def test_a_running_background_response_outlasts_its_keys_bound(
    tmp_path: Path, upstream: FakeUpstream, claude: FakeAnthropic, redis_namespace: str
) -> None:
    """``max_key_responses: 2`` in Redis: the key's later responses evict each other, not
    its background response still being made (polled, it was a 404 and its answer was
    dropped); made, it is kept as the key's most recent."""
    bound = {"url": REDIS_URL, "namespace": redis_namespace, "ttl_s": 60, "max_key_responses": 2}
    text = _registry(upstream, claude, json.dumps(bound))
    with (
        serve_text(text, tmp_path, env={"LLMROUTE_TELEMETRY_URL": "off", **KEYS}) as served,
        _client(served) as client,
    ):
        started = client.responses.create(model="leisurely", input="a while", background=True)
        later = [client.responses.create(model="small", input=f"quick {i}") for i in range(3)]
        assert client.responses.retrieve(started.id).status in ("queued", "in_progress")
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(later[0].id)
        assert _polled(client, started.id) == "completed"
        assert client.responses.retrieve(started.id).output_text == "echo: a while"
        with pytest.raises(openai.NotFoundError):  # the answer counts: the oldest went
            client.responses.retrieve(later[1].id)


def test_a_background_stream_left_on_one_gateway_is_resumed_on_another(
    tmp_path: Path, upstream: FakeUpstream, claude: FakeAnthropic, redis_namespace: str
) -> None:
    """Kept in Redis: a client reads the first events of a background stream from one
    gateway and hangs up; the run goes on; the client resumes through another gateway
    after the last event it had, and gets the rest, to the end. A cancelled one's
    follower ends."""
    kept = json.dumps({"url": REDIS_URL, "namespace": redis_namespace, "ttl_s": 60})
    text = _registry(upstream, claude, kept)
    env = {"LLMROUTE_TELEMETRY_URL": "off", **KEYS}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    words = "one two three four five six seven eight"
    with (
        serve_text(text, tmp_path / "a", env=env) as one,
        serve_text(text, tmp_path / "b", env=env) as two,
        _client(one) as first,
        _client(two) as second,
    ):
        stream = first.responses.create(model="gappy", input=words, background=True, stream=True)
        had = []
        for event in stream:
            had.append(event)
            if len(had) == 6:
                break
        stream.close()  # the client hangs up: the run goes on
        response_id = had[0].response.id  # type: ignore[union-attr]
        rest = list(second.responses.retrieve(response_id, stream=True, starting_after=5))
        assert rest[0].sequence_number == 6 and rest[-1].type == "response.completed"
        text_deltas = [e.delta for e in [*had, *rest] if e.type == "response.output_text.delta"]
        assert "".join(text_deltas).strip() == f"echo: {words}"
        assert second.responses.retrieve(response_id).status == "completed"
        chunks = (redis_namespace, "team", response_id)
        assert asyncio.run(_chunk_count(*chunks)) > 1  # the events, kept in batches
        second.responses.delete(response_id)
        assert asyncio.run(_chunk_count(*chunks)) == 0  # gone with it: they hold its text

        cut = len(upstream.cut)
        long = first.responses.create(model="slower", input="stop me", background=True, stream=True)
        opened = next(iter(long))  # response.created: the run has begun
        follower = second.responses.retrieve(opened.response.id, stream=True)  # type: ignore[union-attr]
        assert second.responses.cancel(opened.response.id).status == "cancelled"  # type: ignore[union-attr]
        assert [e.type for e in follower] == ["response.created", "response.in_progress"]
        assert [e.type for e in long] == ["response.in_progress"]  # its own follower ends too
        _until(lambda: ("slower?delay=20", 0) in upstream.cut[cut:])  # the call was closed
        assert "Traceback" not in one.log_text() + two.log_text()


async def _chunk_count(namespace: str, owner: str, response_id: str) -> int:
    """How many batches of a background stream's events the store holds (of the first 8)."""
    settings = StoredResponsesSettings(url=REDIS_URL, namespace=namespace)
    store = ResponseStore(settings, RedisStore(REDIS_URL, timeout_s=2))
    try:
        return len(await EventChunks(store, owner, response_id).read(0))
    finally:
        await store.aclose()


def test_a_background_response_whose_gateway_died_is_kept_failed(
    tmp_path: Path, upstream: FakeUpstream, claude: FakeAnthropic, redis_namespace: str
) -> None:
    """A gateway killed while it makes a background response (no chance to mark it)
    stops renewing its lease: a read through another gateway, once the lease has lapsed,
    finds it failed; a run that goes on renews its lease and stays in progress."""
    kept = {"url": REDIS_URL, "namespace": redis_namespace, "ttl_s": 60, "lease_s": 1.5}
    text = _registry(upstream, claude, json.dumps(kept))
    env = {"LLMROUTE_TELEMETRY_URL": "off", **KEYS}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serve_text(text, tmp_path / "b", env=env) as two, _client(two) as second:
        with serve_text(text, tmp_path / "a", env=env) as one, _client(one) as first:
            lost = first.responses.create(model="slower", input="lost", background=True)
            alive = second.responses.create(model="slower", input="alive", background=True)
            one.proc.kill()  # SIGKILL: nothing is marked on the way out
            one.proc.wait(timeout=10)
        killed_at = time.monotonic()
        assert _polled(second, lost.id) == "failed"
        assert time.monotonic() - killed_at > 0.5  # not before its lease lapsed
        failed = second.responses.retrieve(lost.id)
        assert failed.error is not None and failed.error.code == "server_error"
        assert "lease" in failed.error.message
        with pytest.raises(openai.BadRequestError) as caught:  # the live one: still running
            second.responses.create(model="small", input="and?", previous_response_id=alive.id)
        assert "still in progress" in caught.value.message
        time.sleep(2 * 1.5)  # two leases: renewed, not lapsed
        assert second.responses.retrieve(alive.id).status == "in_progress"
        assert second.responses.cancel(alive.id).status == "cancelled"
        metrics = httpx.get(
            f"{two.url}/metrics", headers={"authorization": f"Bearer {OPS_KEY}"}
        ).text
        assert 'llmroute_background_responses_total{outcome="abandoned"} 1.0' in metrics
        assert "Traceback" not in two.log_text()


def _forget(registry: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "llmroute"), "responses", "forget", "-r", str(registry), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=_ENV)


_ENV = {**os.environ, **KEYS, "COLUMNS": "200"}


def test_forget_says_what_it_cannot_do(
    tmp_path: Path, upstream: FakeUpstream, claude: FakeAnthropic
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(_registry(upstream, claude, "{}"))
    in_memory = _forget(registry, "--all")
    assert in_memory.returncode == 2 and "only that process can forget them" in in_memory.stderr
    neither = _forget(registry)
    assert neither.returncode == 2 and "--client NAME, or pass --all" in neither.stderr


def test_a_store_that_does_not_answer_costs_the_keeping_not_the_answer(
    tmp_path: Path, upstream: FakeUpstream, claude: FakeAnthropic
) -> None:
    down = json.dumps({"url": f"redis://:hunter2@127.0.0.1:{free_port()}/0", "timeout_s": 0.2})
    text = _registry(upstream, claude, down)
    with (
        serve_text(text, tmp_path, env={"LLMROUTE_TELEMETRY_URL": "off", **KEYS}) as served,
        _client(served) as client,
    ):
        answered = client.responses.create(model="small", input="hi there!")
        assert answered.output_text == "echo: hi there!" and answered.store is False
        with client.responses.stream(model="small", input="hi there!") as stream:
            list(stream)
            final = stream.get_final_response()
        assert final.output_text.strip() == "echo: hi there!" and final.store is False
        with pytest.raises(openai.InternalServerError) as caught:
            client.responses.create(model="small", input="more", previous_response_id=final.id)
        assert caught.value.status_code == 503
        assert caught.value.body["code"] == "store_unavailable"  # type: ignore[index]
        with pytest.raises(openai.InternalServerError):
            client.responses.retrieve(final.id)
        log = served.log_text()
    assert "not kept" in log and "hunter2" not in log and "Traceback" not in log


def test_a_store_that_hangs_costs_one_wait_a_second_not_one_a_request(
    tmp_path: Path, upstream: FakeUpstream, claude: FakeAnthropic, redis_namespace: str
) -> None:
    """A Redis that keeps its connections and stops answering (the `StallProxy`) made
    every request with ``store: true`` wait the store's whole ``timeout_s`` before it
    was answered ``store: false`` (each continuation too, before its 503): the store
    had no pause after a failure, as the cache and limits have. Now the requests after
    a failure are answered without asking it, and once it answers again responses are
    kept and continued as before."""
    with stall_proxy(REDIS_URL) as (proxy, url):
        settings = {"url": url, "timeout_s": 0.5, "namespace": redis_namespace}
        text = _registry(upstream, claude, json.dumps(settings))
        with (
            serve_text(text, tmp_path, env={"LLMROUTE_TELEMETRY_URL": "off", **KEYS}) as served,
            _client(served) as client,
        ):
            kept = client.responses.create(model="small", input="hi there!")
            assert kept.store is True
            proxy.stall()
            for _ in range(3):
                answered = client.responses.create(model="small", input="hi there!")
                assert answered.output_text == "echo: hi there!" and answered.store is False
            with pytest.raises(openai.InternalServerError) as caught:
                client.responses.create(model="small", input="more", previous_response_id=kept.id)
            assert caught.value.body["code"] == "store_unavailable"  # type: ignore[index]
            log = served.log_text()
            assert "not asked for" in log  # answered in the pause, Redis left alone
            proxy.resume()

            def kept_again() -> bool:
                return client.responses.create(model="small", input="hi there!").store is True

            _until(kept_again)  # past the pause: bounded
            follow = client.responses.create(
                model="small", input="more", previous_response_id=kept.id
            )
            assert follow.output_text.startswith("echo")
            log = served.log_text()
    assert "Traceback" not in log


def test_a_background_response_not_kept_counts_one_error() -> None:
    """A background response's keeping waits out the pause after a failure and asks
    once more (`asked`): the pause's refusal and the failure after it were each told
    ``error``, so one keeping counted two in ``llmroute_stored_responses_total``."""
    told: list[str] = []
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = ResponseStore(StoredResponsesSettings(url=url), RedisStore(url, 0.2), told.append)
    front = _Kept(store, "team")
    front.background = True

    async def go() -> bool:
        with pytest.raises(StoreUnavailable):
            await store.get("team", "resp_x")  # fails: the store pauses
        try:
            return await front._put({"id": front.id, "object": "response", "output": []})
        finally:
            await store.aclose()

    assert asyncio.run(go()) is False
    assert told == ["error"]


class _HiccupAfterAppend(RedisStore):
    """A Redis store whose first ``APPEND`` is followed by another request's call that
    fails (a Redis that hiccups just then): the store pauses."""

    def __init__(self, url: str, proxy: Any) -> None:
        super().__init__(url, 0.2)
        self._proxy = proxy
        self._hiccups = 1

    async def append(self, key: str, data: bytes, ttl_s: float) -> None:
        await super().append(key, data, ttl_s)
        if self._hiccups:
            self._hiccups -= 1
            self._proxy.stall()
            try:
                with pytest.raises(StoreUnavailable):
                    await self.get("another request's key")
            finally:
                self._proxy.resume()


def test_a_background_response_adds_its_turn_to_its_conversation_once(
    redis_namespace: str,
) -> None:
    """A background response's turn is added to its conversation asked of the store
    itself (`asked`). When a call after its ``APPEND`` was refused in the pause another
    call's failure began, the whole addition was made again: a second part with the
    same items, so the conversation read the turn twice."""

    async def go(url: str, proxy: Any) -> list[str]:
        settings = StoredResponsesSettings(url=url, namespace=redis_namespace, ttl_s=60)
        store = ResponseStore(settings, _HiccupAfterAppend(url, proxy))
        conversations = ConversationStore(store)
        try:
            conv = await conversations.create("team", {}, [])
            front = _Kept(store, "team")
            front.background = True
            front._conversation = conv.id
            front._input = [{"id": "msg_q", "type": "message", "role": "user", "content": "q"}]
            answer = {"id": "msg_a", "type": "message", "role": "assistant", "content": []}
            await front._add_to_conversation({"output": [answer]})
            return [item["id"] for item in await conversations.items("team", conv.id)]
        finally:
            await store.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(url, proxy)) == ["msg_q", "msg_a"]


def test_a_background_run_releases_its_lease_when_it_ends() -> None:
    """Its lease is pinned in a memory store, as the response is while it runs
    (`ResponseStore.hold`): left after the run, it held a place in the store that the
    key's own responses went before, until a read found it expired."""
    memory = MemoryStore(100, 1 << 20, owner_of=owner_group)
    store = ResponseStore(StoredResponsesSettings(), memory)
    front = _Kept(store, "team")
    front.background = True
    outcomes: list[str] = []

    async def answer() -> Any:
        await front._put({**front.queued({"model": "small"}), "status": "completed"})

    async def go() -> None:
        assert await store.put("team", front.record(front.queued({"model": "small"})))
        await store.hold("team", front.id)
        gateway = SimpleNamespace(inflight=contextlib.nullcontext())
        await _answer_in_background(answer, gateway, front, outcomes.append)  # type: ignore[arg-type]
        assert not await store.held("team", front.id)

    asyncio.run(go())
    assert outcomes == ["completed"] and len(memory) == 1
