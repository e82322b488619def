"""Plain-text prompt files (`registry record`, `registry diff`) are read a prompt a line,
as `wc -l` counts lines; so are JSONL files, a line an object."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmroute.errors import DataError
from llmroute.evaluate.data import read_labelled
from llmroute.jsonl import read_lines


def test_a_prompt_holding_a_unicode_line_separator_stays_one_prompt(tmp_path: Path) -> None:
    """`str.splitlines` split at U+2028, form feeds and \\x1c-\\x1e too: one pasted
    prompt became two cases, or two requests in a diff's counts."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("one\u2028still one\nform\x0cfeed\r\nlast".encode())
    assert read_lines(prompts, what="prompts") == ["one\u2028still one", "form\x0cfeed", "last"]


def test_the_final_newline_ends_the_last_line_and_adds_none(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a\n\nb\n")
    assert read_lines(prompts, what="prompts") == ["a", "", "b"]
    prompts.write_bytes(b"")
    assert read_lines(prompts, what="prompts") == []


LONE_CR = "holds a carriage return (\\r) that ends no line"


def test_a_prompt_file_with_lines_ended_by_cr_alone_is_refused(tmp_path: Path) -> None:
    """Classic Mac OS line endings: the file was read, silently, as one prompt holding
    them all. JSON Lines and `wc -l` end a line at \\n alone (\\r\\n is fine)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"first\r\nsecond\rthird\r")
    with pytest.raises(DataError) as caught:
        read_lines(prompts, what="prompts")
    assert str(caught.value).startswith(f"{prompts}:2: {LONE_CR}")


def test_jsonl_with_lines_ended_by_cr_alone_says_so(tmp_path: Path) -> None:
    """It was "FILE:1: invalid JSON: Extra data" (JSON takes \\r as white space, so the
    first object parsed and the next was extra), which said nothing of why."""
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"text": "a", "intent": "x"}\r{"text": "b", "intent": "y"}\r')
    with pytest.raises(DataError) as caught:
        read_labelled(data)
    assert str(caught.value).startswith(f"{data}:1: {LONE_CR}")
    data.write_bytes(b'{"text": "a", "intent": "x"}\r\n{"text": "b",\r "intent": "y"}\r\n')
    assert [row.intent for row in read_labelled(data)] == ["x", "y"]  # \r as JSON's space
    data.write_bytes(b'{"text": "a", "intent": "x"}\r\n{"text": }\r\n')
    with pytest.raises(DataError, match="invalid JSON"):  # a CRLF file's own mistakes
        read_labelled(data)
