"""`verbatim_json`: a large answer read as `json.loads` reads it, its named arrays kept
as the bytes that came, and written back as they came; any answer written as a
``JSONResponse`` writes it, a step at a time."""

from __future__ import annotations

import asyncio
import json
import sys
import tracemalloc
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loop_ticks import (
    joins_off_loop,
    longest_wait_share,
    ticks_while,
    while_default_executor_blocked,
)
from starlette.responses import JSONResponse

from llmroute import verbatim_json
from llmroute.untrusted_json import loads, loads_replacing
from llmroute.verbatim_json import (
    VERBATIM_BYTES,
    Verbatim,
    answer_json,
    answer_json_within,
    loads_answer,
    read_verbatim,
    request_json,
)

PAD = " " * VERBATIM_BYTES  # whitespace makes any body large enough to be read here


def answer_bytes(value: Any) -> bytes:
    return asyncio.run(answer_json(value))


def _read(text: str, names: tuple[str, ...] = ("data",)) -> dict[str, Any] | None:
    return asyncio.run(read_verbatim((text + PAD).encode(), names))


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.text(
        st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='\\"'), max_size=5
    )
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text("ab", max_size=2), inner),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["data", "model", "usage", "x"]), _values), st.integers(0, 2)
)
def test_it_reads_what_json_reads(value: dict[str, Any], indent: int) -> None:
    text = json.dumps(value, indent=indent or None)
    read = _read(text)
    assert read is not None
    assert read.keys() == value.keys()
    for key, got in read.items():
        if isinstance(got, Verbatim):  # (a list, unless it were not "data")
            assert key == "data" and isinstance(value[key], list)
            assert json.loads(bytes(got.raw)) == value[key] and got.items == len(value[key])
        else:
            assert got == value[key]
    assert json.loads(answer_bytes(read)) == value


_texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=5)
_unicode_values = st.recursive(
    st.none() | st.integers(-(10**6), 10**6) | _texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["data", "é", "x\u2028"]) | _texts, _unicode_values))
def test_a_body_not_ascii_reads_what_json_reads(value: dict[str, Any]) -> None:
    """Characters not ASCII, and escapes (``\\u00e9``, control characters) other than a
    surrogate's, are read here, each member named as it was."""
    for escaped in (False, True):  # each character not ASCII as it is, or as an escape
        text = json.dumps(value, ensure_ascii=escaped)
        read = _read(text)
        if escaped and read is None:  # a character past U+FFFF: a pair's escapes
            assert any(ord(c) > 0xFFFF for c in json.dumps(value, ensure_ascii=False))
            continue
        assert read is not None and read.keys() == value.keys()
        got = read.get("data")
        if isinstance(got, Verbatim):
            assert bytes(got.raw).decode() in text
            read["data"] = json.loads(bytes(got.raw))
        assert read == value


def test_the_array_is_written_as_it_came() -> None:
    read = _read('{ "data" : [ 1.50 , 2e3 ,"x", {"a": [1e-7, -0.0]} ] , "model": "m" }')
    assert read is not None
    assert read["data"] == Verbatim(memoryview(b'[ 1.50 , 2e3 ,"x", {"a": [1e-7, -0.0]} ]'), 4)
    read["model"] = "pool"
    assert answer_bytes(read) == b'{"data":[ 1.50 , 2e3 ,"x", {"a": [1e-7, -0.0]} ],"model":"pool"}'


NOT_JSON = [
    '{"data": [1,]}',
    '{"data": [1 2]}',
    '{"data": [NaN]}',
    '{"data": [1, Infinity]}',
    '{"data": [1]',
    '{"a": 1,}',
    '{"a" 1}',
    '{"a": 1} {}',
    "{} {}",  # an empty object is one too: what follows it is not JSON
    "{}[",
    '{ }"',
    '{"usage": {"prompt_tokens": 1e400}}',  # parsed, so finite, as any answer's
    # past a double, as any other answer's numbers: a batch wrote 1e400 as Infinity
    '{"data": [1e400]}',
    '{"data": [{"embedding": [0.5, -1e999, 0.25]}]}',
    '{"data": [{"embedding": [[1, 2], [3, -1e400]]}]}',
    '{"data": [{"n": ' + "9" * 309 + "}]}",
    '{"data": [[0.5, ' + "9" * 400 + "]]}",
    '{"data": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"data": ["\x01"]}',
]


@pytest.mark.parametrize("text", NOT_JSON)
def test_what_is_not_json_raises(text: str) -> None:
    with pytest.raises(ValueError):
        _read(text)


# an integer just past a double's largest (309 digits) that `float()` still rounds down
# to it rather than overflowing: a sum of its list is finite all the same
_PAST_MAX = str(int(sys.float_info.max) + 1)


@pytest.mark.parametrize(
    "text",
    [
        '{"data": [[0.5, ' + _PAST_MAX + "]]}",
        '{"data": [{"embedding": [' + _PAST_MAX + ", -1e308, 0.25]}]}",  # the sum cancels
        '{"data": [[-' + _PAST_MAX + "]]}",
    ],
)
def test_an_integer_just_past_a_double_is_refused_as_any_answers(text: str) -> None:
    """`untrusted_json.loads` refuses it in a smaller answer; the verbatim check summed
    its list, which `float()` rounds to a finite number."""
    with pytest.raises(ValueError):
        loads(text, finite=True)
    with pytest.raises(ValueError):
        _read(text)


_window_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["data", "model", "é", "x"]), _window_values),
    st.sampled_from([1, 2, 3, 7, 64]),
    st.integers(0, 2),
    st.booleans(),
)
def test_a_body_read_a_window_at_a_time_reads_what_json_reads(
    value: dict[str, Any], window: int, indent: int, escaped: bool
) -> None:
    """A value cut by a window's end (a number's exponent, an escape, a literal, the
    whitespace before its comma) is read again in a larger window, as it is whole."""
    body = json.dumps(value, indent=indent or None, ensure_ascii=escaped).encode()
    with (
        patch.object(verbatim_json, "VERBATIM_BYTES", 0),
        patch.object(verbatim_json, "_WINDOW", window),
    ):
        read = asyncio.run(read_verbatim(body, ("data",)))
    if escaped and read is None:  # a character past U+FFFF: a pair's escapes
        assert any(ord(c) > 0xFFFF for c in json.dumps(value, ensure_ascii=False))
        return
    assert read is not None and read.keys() == value.keys()
    got = read.get("data")
    if isinstance(got, Verbatim):
        assert got.items == len(value["data"])
        read["data"] = json.loads(bytes(got.raw))
    assert read == value


@pytest.mark.parametrize("window", [1, 5, 64])
def test_what_is_not_json_raises_a_window_at_a_time(window: int) -> None:
    with (
        patch.object(verbatim_json, "VERBATIM_BYTES", 0),
        patch.object(verbatim_json, "_WINDOW", window),
    ):
        for text in NOT_JSON:
            with pytest.raises(ValueError):
                asyncio.run(read_verbatim(text.encode(), ("data",)))


@pytest.mark.parametrize("model", ["m", "modèle"])
def test_a_large_body_is_not_decoded_whole(model: str) -> None:
    """The body's text is decoded a window at a time: decoded whole (one copy of it),
    a 43 MB answer held the event loop 20-60 ms, the longest stretch its read had left."""
    vectors = [{"embedding": [0.123456789] * 1536}] * 300
    body = (f'{{"model": "{model}", "data": ' + json.dumps(vectors) + "}").encode()
    tracemalloc.start()
    try:
        read = asyncio.run(read_verbatim(body, ("data",)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read is not None and read["data"].items == 300
    # (6 MB; a window, and a step's copies where the body is looked at: ~1-3 MB)
    assert peak < len(body) * 2 // 3


def test_large_finite_numbers_are_kept() -> None:
    text = '{"data": [[1e308, 1e308, -1e308], {"n": ' + "1" * 308 + "}, [true, 1, 2.5]]}"
    read = _read(text)
    assert read is not None and read["data"].items == 3


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": []}',  # small: parsed whole, as before
        ('{"data": ["\\ud800"]}' + PAD).encode(),  # an unpaired surrogate's escape
        ('{"data": ["\\uDE00"]}' + PAD).encode(),
        ('{"data": ["\\ud83d\\ude00"]}' + PAD).encode(),  # a pair: left all the same
        # one cut by the end of a step of the search
        ('{"data": [], "pad": "' + "x" * ((1 << 20) - 23) + '\\ud800"}' + PAD).encode(),
        b'{"data": ["\xff"]}' + PAD.encode(),  # not UTF-8
        b'{"data": ["\xed\xa0\x80"]}' + PAD.encode(),  # a surrogate's bytes
        b'{"data": [], "model": "\xe9"}' + PAD.encode(),
        PAD.encode() + b'{"data": ["\xc3"]}',  # a character cut at the end
        ("[1]" + PAD).encode(),  # not an object: said so as before
        # UTF-16 and UTF-32, which json (so the usual parse) reads by their first bytes;
        # here '{' then a NUL byte was no member's name
        ('{"data": [1]}' + PAD).encode("utf-16-le"),
        ('{"data": [1]}' + PAD).encode("utf-32-le"),
        ('{"data": [1]}' + PAD).encode("utf-16"),  # with its byte order mark
    ],
)
def test_other_bodies_are_left_to_the_usual_parse(body: bytes) -> None:
    assert asyncio.run(read_verbatim(body, ("data",))) is None
    assert loads_replacing(body, finite=True)[0] is not None  # (what the caller does then)
    assert asyncio.run(read_verbatim(b'{"data": []}' + PAD.encode(), ())) is None


@pytest.mark.parametrize("model", ["m", "modèle", "mod\\u00e8le"])
def test_the_event_loop_runs_while_a_large_array_is_checked(model: str) -> None:
    """Whether the body is plain ASCII or not: one that was not was parsed whole."""
    vectors = [{"embedding": [0.123456789] * 1536}] * 200
    body = (f'{{"model": "{model}", "data": ' + json.dumps(vectors) + "}").encode()
    read, ticks = ticks_while(lambda: read_verbatim(body, ("data",)))
    assert read is not None and read["data"].items == 200
    assert ticks > 10  # 5 MB: a step each 128 kB


_any_values = st.recursive(
    _scalars | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=40)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), inner, max_size=5)
    ),
    max_leaves=120,
)


@settings(max_examples=60, deadline=None)
@given(_any_values)
def test_answers_are_written_as_a_json_response_writes_them(value: Any) -> None:
    written = JSONResponse(value).body
    assert answer_bytes(value) == written
    with patch.object(verbatim_json, "_SMALL_ITEMS", 0):  # a step at a time
        assert answer_bytes(value) == written


def test_a_large_answer_is_written_as_a_json_response_writes_it() -> None:
    entry = {"token": " é", "logprob": -0.25, "bytes": [32, 195, 169]}
    content = [{**entry, "top_logprobs": [entry] * 20} for _ in range(3000)]
    value = {"choices": [{"index": 0, "logprobs": {"content": content}}], "n": [1] * 40}
    assert answer_bytes(value) == JSONResponse(value).body
    with pytest.raises(ValueError):
        answer_bytes({"x": [float("nan")] * 100})  # as JSONResponse refuses it


def test_the_event_loop_runs_while_a_large_answer_is_written() -> None:
    entry = {"token": "x", "logprob": -0.25, "bytes": [120]}
    value = {
        "choices": [{"logprobs": {"content": [{**entry, "top_logprobs": [entry] * 20}] * 4000}}]
    }
    written, ticks = ticks_while(lambda: answer_json(value))
    assert len(written) > 2_000_000
    assert ticks > 10  # a step each 128 kB


def test_a_verbatim_answer_is_joined_off_the_event_loop() -> None:
    """The 43 MB embeddings answer's final join held the event loop ~35 ms: its vectors,
    a `memoryview` of the upstream's body, kept ``bytes.join`` from letting go of the
    GIL (in a worker thread too)."""
    vectors = "[" + ",".join(["[0.5,-0.25]"] * 200_000) + "]"
    body = ('{"object":"list","data":' + vectors + ',"model":"m"}').encode()
    read = asyncio.run(read_verbatim(body, ("data",)))
    assert read is not None and isinstance(read["data"], Verbatim)
    written, joins = joins_off_loop(lambda: answer_json(read))
    assert written == body
    assert joins == [(len(body), True)]
    assert joins_off_loop(lambda: answer_json_within(read, len(body)))[1] == joins


def test_an_answer_is_read_again_as_written() -> None:
    small = {"a": [1, 2.5, "é"]}
    large = {"a": [{"logprob": -0.5, "n": 3}] * 100_000}
    for value in (small, large):
        assert asyncio.run(loads_answer(JSONResponse(value).body)) == value


def test_a_large_answer_is_read_again_beside_the_default_executors_blocking_calls() -> None:
    """Read in the default executor, a large answer (a chat answer's logprobs, to
    convert it for a front) waited behind a remote encoder's blocking calls there."""
    large = {"a": [{"logprob": -0.5, "n": 3}] * 100_000}
    body = JSONResponse(large).body
    assert while_default_executor_blocked(lambda: loads_answer(body)) == large


def test_an_answer_is_written_within_a_bound_or_not_at_all() -> None:
    """`answer_json_within`: `answer_json`'s bytes when they fit in `most`; None once
    past it, small or large (logprobs), a long text not written to find it so."""
    small = {"id": "c", "choices": [{"message": {"content": "hi"}}]}
    items = [{"token": "t", "logprob": -0.5, "top_logprobs": [1.5] * 20} for _ in range(2000)]
    large = {"choices": [{"logprobs": {"content": items}}], "usage": {"total_tokens": 2}}
    text = {"choices": [{"message": {"content": "é" * 300_000}}]}
    for value in (small, large, text):
        whole = asyncio.run(answer_json(value))
        assert asyncio.run(answer_json_within(value, len(whole))) == whole
        assert asyncio.run(answer_json_within(value, len(whole) - 1)) is None


def _sent(value: Any) -> bytes:
    """An upstream request's body as the transport always wrote it, in one call."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(
    "value",
    [
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5},
        {"model": "e", "input": [[1234, -5] * 250] * 1000},
        {"messages": [{"role": "user", "content": 'é"\\\n\x01😀 ' * 300_000}]},
        {"input": ["ünï " * 40_000, "x"] * 20 + [[1.5, None, True]] * 3000},
        {"x": [float("nan"), float("inf")] * 3000, "y": {1: "int key"}},
    ],
    ids=["small", "token-ids", "long-text", "texts-and-lists", "nan"],
)
def test_an_upstream_request_body_is_written_as_json_dumps_writes_it(value: Any) -> None:
    """A large body is written a step at a time, a long text a slice at a time (each
    character escaped alone): the bytes are those of one call, NaN written as before."""
    assert asyncio.run(request_json(value)) == _sent(value)


@pytest.mark.parametrize(
    "value",
    [
        {"model": "e", "input": [[1234] * 500] * 1000},  # 2.5 MB of token ids
        {"messages": [{"role": "user", "content": "long text " * 400_000}]},  # a 4 MB prompt
        {"messages": [{"role": "user", "content": "turn " * 20_000}] * 40},  # 40 long turns
    ],
    ids=["token-ids", "one-long-prompt", "long-turns"],
)
def test_the_event_loop_runs_while_a_large_request_body_is_written(value: Any) -> None:
    """In one call (``json.dumps``) such a body held the event loop 36-110 ms; in a worker
    thread as long, the C encoder keeping the GIL (the loop's longest wait: ~0.95 of
    the call). Written in steps, the longest is a step (~1-3 ms of 40-100)."""
    written, ticks = ticks_while(lambda: request_json(value))
    assert written == _sent(value)
    assert ticks > 10  # a step each 128 K characters
    assert min(longest_wait_share(lambda: request_json(value))[1] for _ in range(3)) < 0.5


_request_values = st.recursive(
    _scalars
    | st.floats()  # NaN and infinities: written as json.dumps writes them
    | st.integers()
    | st.text(max_size=3)
    | st.text(min_size=20, max_size=120),  # longer than a (patched) step
    lambda inner: (
        st.lists(inner, max_size=60)
        | st.lists(st.integers(-(10**12), 10**12), min_size=17, max_size=120)
        | st.lists(st.text(max_size=90) | st.integers(), min_size=17, max_size=80)
        | st.dictionaries(st.text(max_size=3), inner, max_size=5)
    ),
    max_leaves=200,
)


@settings(max_examples=80, deadline=None)
@given(_request_values)
def test_request_bodies_are_written_as_json_dumps_writes_them(value: Any) -> None:
    """Any shape, with steps patched small enough for a test's values to be cut: lists
    of integers past the item budget, long strings in slices of short items."""
    sent = _sent(value)
    assert asyncio.run(request_json(value)) == sent
    with (
        patch.object(verbatim_json, "_SMALL_ITEMS", 0),
        patch.object(verbatim_json, "_STEP_CHARS", 64),
        patch.object(verbatim_json, "_STEP_ITEMS", 8),
        patch.object(verbatim_json, "_FEW", 2),
    ):
        assert asyncio.run(request_json(value)) == sent
        assert asyncio.run(answer_json(value)) == sent if _no_nan(value) else True


def _no_nan(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def _calls(value: Any) -> tuple[bytes, list[bytes]]:
    """`request_json(value)`, and what each of its ``json.dumps`` calls wrote."""
    written: list[bytes] = []
    dumps = verbatim_json._dumps

    def recorded(part: Any, *, nan: bool = False) -> bytes:
        written.append(dumps(part, nan=nan))
        return written[-1]

    with patch.object(verbatim_json, "_dumps", recorded):
        return asyncio.run(request_json(value)), written


def test_a_step_of_integers_holds_a_bounded_number_of_them() -> None:
    """A slice was sized by its characters alone: 128 K characters of token ids are
    ~26,000 integers, ~3.5 ms to write where as many characters of text take ~0.6."""
    value = {"model": "e", "input": list(range(100_000, 400_000))}
    body, calls = _calls(value)
    assert body == _sent(value)
    assert max(call.count(b",") + 1 for call in calls) <= 2 * 4096
    _, ticks = ticks_while(lambda: request_json(value))
    assert ticks >= 300_000 // 4096 - 2  # a step each 4,096 items


@pytest.mark.parametrize(
    "value",
    [
        {"input": ["x"] * 20 + ["long text " * 100_000] + ["x"] * 20},
        {"input": [["x", 1]] * 40 + ["é" * 500_000, 5] + [123] * 40},
        {"messages": [{"role": "user", "content": "hi"}] * 30 + [{"content": "é " * 400_000}]},
    ],
    ids=["text-among-texts", "text-among-lists", "long-turn-among-short-ones"],
)
def test_a_long_string_in_a_long_list_is_written_a_step_at_a_time(value: Any) -> None:
    """A slice sized by short items took in the long text after them, written in one call
    (1 MB: ~5 ms). (Not looked for after a slice with no string: a list of numbers.)"""
    body, calls = _calls(value)
    assert body == _sent(value)
    assert max(len(call) for call in calls) <= 2 * verbatim_json._STEP_CHARS + 16


def test_a_small_request_body_is_written_in_one_call() -> None:
    """Under 256 items and 128 K characters: no step, no turn of the loop."""
    value = {"model": "m", "messages": [{"role": "user", "content": "x" * 100_000}] * 1}
    written, ticks = ticks_while(lambda: request_json(value))
    assert written == _sent(value) and ticks == 1
