"""A batch answer's line (`batch_output`): a large answer kept as the gateway wrote it,
on one line, read for its usage without holding the event loop; a small one parsed and
written compact as before."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from loop_ticks import ticks_while

from llmroute.server.batch_output import _BYTES_STEP, answer_line, written_custom_ids
from llmroute.verbatim_json import VERBATIM_BYTES

USAGE = {"prompt_tokens": 7, "total_tokens": 7}


def _line(body: bytes, endpoint: str = "/v1/embeddings") -> bytes:
    return asyncio.run(answer_line(_answer(), body, endpoint))[0]


def _usage(body: bytes, endpoint: str) -> Any:
    return asyncio.run(answer_line(_answer(), body, endpoint))[1]


def _answer() -> dict[str, Any]:
    response = {"status_code": 200, "request_id": "req_1"}
    return {"id": "batch_req_1", "custom_id": "a\nb", "response": response, "error": None}


def _embeddings(n: int, indent: int | None = None) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": [0.125] * 1536} for i in range(n)]
    answer = {"object": "list", "data": data, "model": "m", "usage": USAGE}
    return json.dumps(answer, indent=indent).encode()


def _expected(body: bytes) -> dict[str, Any]:
    answer = _answer()
    return {**answer, "response": {**answer["response"], "body": json.loads(body)}}


def test_a_small_answer_is_written_compact_as_before() -> None:
    body = json.dumps({"object": "list", "data": [], "usage": USAGE}, indent=2).encode()
    line = _line(body)
    assert line == json.dumps(_expected(body), separators=(",", ":")).encode() + b"\n"
    assert _line(b"not json").endswith(b'"body":{}},"error":null}\n')


def test_a_large_answer_is_kept_as_it_came_on_one_line() -> None:
    body = _embeddings(100, indent=1)  # an upstream's, pretty-printed: line breaks in it
    assert len(body) >= VERBATIM_BYTES and b"\n" in body
    line = _line(body)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert json.loads(line) == _expected(body)
    assert len(line) < len(body) + 200  # the vectors not written again


def test_the_usage_of_any_answer() -> None:
    large = _embeddings(100)
    chat = json.dumps({"choices": [{"text": "x" * VERBATIM_BYTES}], "usage": USAGE}).encode()
    assert _usage(large, "/v1/embeddings") == USAGE
    assert _usage(large, "/v1/chat/completions") == USAGE
    assert _usage(chat, "/v1/chat/completions") == USAGE
    assert _usage(b'{"usage": 3}', "/v1/embeddings") == 3
    assert _usage(b"[" + b" " * VERBATIM_BYTES + b"]", "/v1/embeddings") is None
    assert _usage(b"{" + b" " * VERBATIM_BYTES, "/v1/embeddings") is None


def test_a_large_answer_that_is_not_a_json_object_is_written_as_a_small_one() -> None:
    """Written as it came, the large answer must be JSON: one that is not (none the
    gateway writes, but a line is the file's only if it is) is ``{}`` as a small one is,
    and the line stays JSON (it was written verbatim)."""
    for body in (
        b"{" + b" " * VERBATIM_BYTES,  # cut short
        b"[" + b" " * VERBATIM_BYTES + b"]",  # not an object
        b'{"a": "x\ny\rz"}' + b" " * VERBATIM_BYTES,  # line breaks in a string
        b'{"a": NaN}' + b" " * VERBATIM_BYTES,
    ):
        for endpoint in ("/v1/embeddings", "/v1/chat/completions"):
            line = _line(body, endpoint)
            assert json.loads(line)["response"]["body"] == {}, (body[:12], endpoint)


def test_the_event_loop_runs_while_a_large_answer_is_read() -> None:
    body = _embeddings(200)
    (_, usage), ticks = ticks_while(lambda: answer_line(_answer(), body, "/v1/embeddings"))
    assert usage == USAGE
    assert ticks > 10  # 5 MB: read a step at a time


def test_the_custom_ids_written_are_read_back_from_each_line() -> None:
    """What a batch taken over skips: the custom_ids of the lines its earlier run wrote
    (a small and a large answer's, escapes and characters past ASCII in them), in parts
    of whole lines; a line written otherwise (its ``custom_id`` first) is parsed whole."""
    answer = {**_answer(), "custom_id": 'é "q" \\ ☃\n'}
    small = asyncio.run(answer_line(answer, b'{"usage": {}}', "/v1/chat/completions"))[0]
    large = _line(_embeddings(100))
    other = json.dumps({"custom_id": "old", "id": "batch_req_2"}).encode() + b"\n"
    garbage = b'{"id":"x","custom_id":"bad \\q"}\nnot json\n\n'
    assert written_custom_ids([small + large, other + garbage]) == {
        'é "q" \\ ☃\n',
        "a\nb",
        "old",
    }


def test_a_line_s_answer_is_not_parsed_for_its_custom_id() -> None:
    """Only the members before the answer are read: parsed whole, a 43 MB line held the
    GIL 1-2 s while a batch was taken over (here, an answer that is not JSON past them
    is never looked at)."""
    line = b'{"id":"batch_req_1","custom_id":"c","response":{"body":[' + b"1," * 1000
    assert written_custom_ids([line]) == {"c"}


_SEPARATORS = "\x85\u2028\u2029"  # valid raw in JSON, line breaks to str.splitlines


def test_unicode_line_separators_are_escaped_in_every_line() -> None:
    """U+0085, U+2028 and U+2029 are written escaped, in a small answer's line and in a
    large one's kept as it came (one astride two of its steps too): raw, the file was
    JSON Lines but ``str.splitlines()`` (Python's, an OpenAI SDK user's) cut the line."""
    answer = {**_answer(), "custom_id": f"id{_SEPARATORS}"}
    small = json.dumps({"choices": [{"text": f"a{_SEPARATORS}b"}], "usage": USAGE})
    text = "x" * (_BYTES_STEP - 40) + _SEPARATORS * 20  # one astride the first step's end
    large = json.dumps({"choices": [{"text": text}], "usage": USAGE}, ensure_ascii=False)
    assert len(large.encode()) >= VERBATIM_BYTES
    for body, endpoint in (
        (small.encode(), "/v1/chat/completions"),
        (large.encode(), "/v1/chat/completions"),
        (large.encode(), "/v1/embeddings"),
    ):
        line = asyncio.run(answer_line(answer, body, endpoint))[0].decode()
        assert len(line.splitlines()) == 1, endpoint
        assert not any(c in line for c in _SEPARATORS)
        read = json.loads(line)
        assert read["custom_id"] == answer["custom_id"]
        assert read["response"]["body"] == json.loads(body)
        assert written_custom_ids([line.encode()]) == {answer["custom_id"]}


def test_a_malformed_answer_is_refused_without_asserts() -> None:
    """`answer_line` checks the answer's shape with a real check (an ``assert`` is gone
    under ``python -O``): ``id`` and ``custom_id`` first, which a batch taken over reads."""
    answer = _answer()
    wrong = {"custom_id": answer["custom_id"], **answer}
    for body in (b"{}", _embeddings(100)):
        with pytest.raises(ValueError, match="custom_id"):
            asyncio.run(answer_line(wrong, body, "/v1/embeddings"))


def test_an_answer_holding_an_unpaired_surrogate_is_written_escaped() -> None:
    """An upstream's answer with an unpaired UTF-16 surrogate escape (``\\ud83d``: an
    emoji cut in half at max_tokens) is valid JSON, but its line could not be encoded as
    UTF-8: `answer_line` raised, and the whole batch failed ``internal_error``. The line
    holds it escaped, as the upstream wrote it."""
    body = b'{"choices": [{"message": {"content": "cut \\ud83d"}}], "usage": {"total_tokens": 1}}'
    line, usage = asyncio.run(answer_line(_answer(), body, "/v1/chat/completions"))
    assert b"\\ud83d" in line and len(line.splitlines()) == 1
    assert json.loads(line)["response"]["body"] == json.loads(body)
    assert usage == {"total_tokens": 1}
