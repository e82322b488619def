"""Server-sent events from an upstream: framed whatever chunks they arrive in, then made
plain (one ``data:`` line an event) whatever valid form the server wrote them in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute import sse
from llmroute.providers._http import (
    EventTooLarge,
    checked_event,
    error_in_event,
    iter_sse_events,
    plain_event,
)
from llmroute.sse import DONE, choice_zero, chunk_of, event_of

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


def written(payload: object, *, indent: int | None, space: bool, eol: str, extra: bool) -> str:
    """`payload` as one server-sent event, written in one of the forms servers use."""
    text = json.dumps(payload, indent=indent)
    colon = ": " if space else ":"
    lines = [f"data{colon}{line}" for line in text.split("\n")]
    if extra:
        lines = [": keep-alive", "id: 42", "event: message", *lines, "retry: 1000"]
    return eol.join(lines) + eol + eol


async def _framed(chunks: list[bytes], max_bytes: int = 1 << 20) -> list[bytes]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [event async for event in iter_sse_events(source(), max_bytes)]


def test_a_plain_event_is_passed_on_as_it_is() -> None:
    event = b'data: {"choices":[]}\n\n'
    assert plain_event(event) is event
    assert plain_event(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"


def test_looser_forms_become_one_data_line() -> None:
    assert plain_event(b'data:{"a":1}\n\n') == b'data: {"a":1}\n\n'
    assert plain_event(b'id: 7\ndata: {"a":1}\n\n') == b'data: {"a":1}\n\n'
    assert plain_event(b'data: {\ndata:  "a": 1\ndata: }\n\n') == b'data: {  "a": 1 }\n\n'
    assert plain_event(b"data:  two spaces\n\n") == b"data:  two spaces\n\n"  # one is eaten
    assert plain_event(b"data\n\n") == b"data: \n\n"  # a bare field is empty data


def test_an_event_without_data_is_none() -> None:
    for event in (b": OPENROUTER PROCESSING\n\n", b"id: 3\n\n", b"retry: 10\n\n", b"\n\n"):
        assert plain_event(event) is None, event


def test_an_event_typed_error_reads_as_an_error() -> None:
    event = plain_event(b'event: error\ndata: {"message": "overloaded", "code": 503}\n\n')
    assert event is not None
    assert json.loads(event[6:]) == {"error": {"message": "overloaded", "code": 503}}
    failed = error_in_event("up", event)
    assert failed is not None and failed.status == 503
    said = b'event: error\ndata: {"error": {"message": "x"}}\n\n'
    assert plain_event(said) == b'data: {"error": {"message": "x"}}\n\n'  # not wrapped twice
    text = plain_event(b"event: error\ndata: the model fell over\n\n")
    assert text is not None
    assert json.loads(text[6:]) == {"error": {"message": "the model fell over"}}


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(JSON, min_size=1, max_size=4),
    indent=st.sampled_from([None, 1, 2]),
    space=st.booleans(),
    eol=st.sampled_from(["\n", "\r\n"]),
    extra=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=7), max_size=40),
)
def test_whatever_valid_form_and_chunking_the_payloads_come_through(
    payloads: list[object], indent: int | None, space: bool, eol: str, extra: bool, cuts: list[int]
) -> None:
    body = "".join(
        written(p, indent=indent, space=space, eol=eol, extra=extra) for p in payloads
    ).encode()
    chunks, at = [], 0
    for cut in cuts:  # the bytes split anywhere, even inside a CRLF or a character
        chunks.append(body[at : at + cut])
        at += cut
    chunks.append(body[at:])
    events = [plain_event(e) for e in asyncio.run(_framed(chunks))]
    plain = [e for e in events if e is not None]
    assert [json.loads(e[6:]) for e in plain] == payloads
    for event in plain:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        assert event.count(b"\n") == 2


@settings(max_examples=100, deadline=None)
@given(chunk=st.dictionaries(st.text(max_size=5), JSON, max_size=4))
def test_what_the_gateway_writes_it_reads_back_and_passes_on_as_it_is(
    chunk: dict[str, object],
) -> None:
    event = event_of(chunk)
    assert chunk_of(event) == chunk
    assert plain_event(event) is event  # nothing to make plain


def test_only_an_object_is_a_chunk() -> None:
    for event in (DONE, b": ping\n\n", b"data: [1, 2]\n\n", b"data: {oops\n\n"):
        assert chunk_of(event) is None, event


def test_choice_0_is_found_by_its_index_not_its_place() -> None:
    zero, one = {"index": 0, "delta": {"content": "uno"}}, {"index": 1, "delta": {}}
    assert choice_zero({"choices": [one, zero]}) is zero
    assert choice_zero({"choices": [{"delta": {}}]}) == {"delta": {}}  # no index: the only one
    for chunk in ({"choices": [one]}, {"choices": []}, {"usage": {}}, {"choices": {}}, None):
        assert choice_zero(chunk) is None, chunk
    # an index of another type is no choice the fronts relay (chunk_translation's _indexed):
    # `false` and `0.0` equal 0, but the client's answer left them out
    for index in (False, 0.0, "0", None):
        assert choice_zero({"choices": [{"index": index, "delta": {}}]}) is None, index


def test_an_event_that_grows_past_the_bound_is_refused() -> None:
    line = [b"data: " + b"x" * 100] * 20  # one line, in many chunks
    with pytest.raises(EventTooLarge):
        asyncio.run(_framed(line, max_bytes=1000))
    lines = [b"data: " + b"x" * 100 + b"\n"] * 20  # many lines, never a blank one
    with pytest.raises(EventTooLarge):
        asyncio.run(_framed(lines, max_bytes=1000))
    events = [b"data: " + b"x" * 100 + b"\n\n"] * 20  # as much, in events that end
    assert len(asyncio.run(_framed(events, max_bytes=1000))) == 20


def test_the_provider_s_parse_is_handed_to_the_meter_once() -> None:
    """`checked_event` parses every upstream event; the meter's `chunk_of` of that same
    event takes that object instead of parsing again (each event was parsed twice), once
    (it may change it), and never for another event, even one equal to it."""
    raw = b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'
    event = checked_event("p", raw)
    assert event is not None
    first = chunk_of(event)
    assert first == {"choices": [{"delta": {"content": "hi"}}]}
    first["usage"] = {"total_tokens": 1}  # the taker's to change
    again = chunk_of(event)
    assert again is not first and again == {"choices": [{"delta": {"content": "hi"}}]}
    checked_event("p", raw)
    assert chunk_of(bytes(bytearray(raw))) == again  # parsed: equal bytes, another object
    assert sse._parsed is not None and sse._parsed[0] is event  # equal bytes: not taken
    chunk_of(event)
    assert sse._parsed is None  # taken by the event it was parsed from
