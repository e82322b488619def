"""A batch's input file read and checked (`read_lines`): requests found with their
bodies, blank lines skipped, every kind of bad line reported with its number as OpenAI
reports it, the error list bounded, an empty or too long file refused."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmroute.server.batch_lines import MAX_ERRORS, read_lines, read_lines_yielding

CHAT = "/v1/chat/completions"


def _line(custom_id: str, **changes: Any) -> bytes:
    line = {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": "auto", "messages": [{"role": "user", "content": custom_id}]},
        **changes,
    }
    return json.dumps(line).encode()


def test_requests_are_found_with_their_bodies() -> None:
    content = b"\n".join([_line("a"), b"", b"   ", _line("b")]) + b"\n"
    lines, errors = read_lines(content, CHAT, 10)
    assert errors == []
    assert [line.custom_id for line in lines] == ["a", "b"]
    assert lines[1].body(content)["messages"][0]["content"] == "b"


def test_each_bad_line_is_named() -> None:
    content = b"\n".join(
        [
            _line("ok"),
            b"[1, 2]",
            _line(""),
            _line("ok"),
            _line("m", method="GET"),
            _line("u", url="/v1/embeddings"),
            _line("b", body="hello"),
            _line("n", body={"messages": []}),
            _line("s", body={"model": "auto", "stream": True}),
            b'{"custom_id": "x", "body": "\xff"}',
        ]
    )
    lines, errors = read_lines(content, CHAT, 100)
    assert len(lines) == 0  # a batch runs whole or not at all
    assert [(e["line"], e["code"], e["param"]) for e in errors] == [
        (2, "invalid_request", None),
        (3, "missing_required_parameter", "custom_id"),
        (4, "duplicate_custom_id", "custom_id"),
        (5, "invalid_request", "method"),
        (6, "invalid_url", "url"),
        (7, "invalid_request", "body"),
        (8, "missing_required_parameter", "body.model"),
        (9, "invalid_request", "body.stream"),
        (10, "invalid_json_line", None),
    ]
    assert all(e["message"] for e in errors)


def test_the_errors_are_bounded_and_the_count_checked() -> None:
    content = b"\n".join(b"nope" for _ in range(MAX_ERRORS * 3))
    _, errors = read_lines(content, CHAT, 10)
    assert len(errors) == MAX_ERRORS
    _, errors = read_lines(b"\n \n", CHAT, 10)
    assert [e["code"] for e in errors] == ["empty_file"]
    many = b"\n".join(_line(f"n{i}") for i in range(11))
    lines, errors = read_lines(many, CHAT, 10)
    assert len(lines) == 0 and [e["code"] for e in errors] == ["too_many_requests"]
    assert "batches.max_requests (10)" in errors[0]["message"]


def test_a_line_past_the_request_limit_is_a_bad_line() -> None:
    content = b"\n".join([_line("short"), _line("long" * 100)])
    lines, errors = read_lines(content, CHAT, 10, longest=300)
    assert len(lines) == 0
    assert [(e["line"], e["code"]) for e in errors] == [(2, "request_too_large")]
    assert "300 bytes" in errors[0]["message"]
    assert len(read_lines(content, CHAT, 10, longest=1000)[0]) == 2


def test_a_deeply_nested_body_is_a_bad_line() -> None:
    deep = b'{"custom_id": "d", "method": "POST", "url": "' + CHAT.encode() + b'", "body": '
    deep += b"[" * 200 + b"]" * 200 + b"}"
    _, errors = read_lines(deep, CHAT, 10)
    assert [e["code"] for e in errors] == ["invalid_json_line"]


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_a_number_json_cannot_write_is_a_bad_line(number: bytes) -> None:
    line = b'{"custom_id": "n", "method": "POST", "url": "' + CHAT.encode() + b'", "body": '
    line += b'{"messages": [{"role": "user", "content": "hi"}], "seed": ' + number + b"}}"
    _, errors = read_lines(line, CHAT, 10)
    assert [e["code"] for e in errors] == ["invalid_json_line"]
    assert "not valid JSON" in errors[0]["message"]


@pytest.mark.parametrize("text", [b"\\ud800", b"x\\udc00y", b"\xed\xa0\x80"])
def test_an_unpaired_surrogate_is_said_to_be_no_unicode(text: bytes) -> None:
    """Valid JSON, but no UTF-8 encoder takes the string: the line is named for what it
    is, not as "not valid JSON"."""
    line = b'{"custom_id": "s", "method": "POST", "url": "' + CHAT.encode() + b'", "body": '
    line += b'{"messages": [{"role": "user", "content": "' + text + b'"}]}}'
    _, errors = read_lines(line, CHAT, 10)
    assert [e["code"] for e in errors] == ["invalid_json_line"]
    assert "unpaired UTF-16 surrogate" in errors[0]["message"]


@given(st.binary(max_size=400))
def test_any_bytes_give_requests_or_errors_never_an_exception(content: bytes) -> None:
    lines, errors = read_lines(content, CHAT, 50)
    assert bool(lines) != bool(errors)


def _many(count: int) -> bytes:
    return b"\n".join(_line(f"r{number}") for number in range(count))


def test_a_files_requests_are_held_flat_not_one_object_a_line() -> None:
    """One object a request (a 95 MB file: 700,000) made each of the garbage collector's
    full passes walk them all while the file was read, holding every thread, the event
    loop's too, up to 0.5 s a pass (``/health`` waited as long). Held flat, reading adds
    no object the collector tracks a line."""
    content = _many(20_000)
    gc.collect()
    before = len(gc.get_objects())
    lines, errors = read_lines(content, CHAT, 50_000)
    added = len(gc.get_objects()) - before
    assert errors == [] and len(lines) == 20_000
    assert added < 100, added  # 20,002 before
    assert [line.custom_id for line in lines][-1] == "r19999" and lines[-1].custom_id == "r19999"
    assert lines[7].body(content)["messages"][0]["content"] == "r7"
    left = lines.without({"r0", "r5"})
    assert len(left) == 19_998 and left[0].custom_id == "r1" and left[4].custom_id == "r6"
    with pytest.raises(IndexError):
        lines[20_000]


def test_a_file_is_read_on_the_event_loop_in_slices_that_let_it_turn() -> None:
    """`read_lines_yielding` gives the loop back every few milliseconds (in a thread the
    read held the GIL as long as the interpreter let it, and each full collector pass
    whole): the longest the loop waited is a small share of the read. A ratio within one
    run, not a time. Same answer as `read_lines`."""
    content = _many(20_000) + b"\n[1]"

    async def read() -> tuple[float, float, Any]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                start = time.perf_counter()
                await asyncio.sleep(0)
                gaps.append(time.perf_counter() - start)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = time.perf_counter()
        read = await read_lines_yielding(content, CHAT, 50_000)
        took = time.perf_counter() - start
        done.set()
        await task
        return took, max(gaps), read

    took, longest_wait, (lines, errors) = asyncio.run(read())
    assert longest_wait < took / 5, (longest_wait, took)
    assert len(lines) == 0 and errors == read_lines(content, CHAT, 50_000)[1]
    assert [e["line"] for e in errors] == [20_001]
