"""Plain-text prompt files (`registry record`, `registry diff`) are read a prompt a line,
as `wc -l` counts lines."""

from __future__ import annotations

from pathlib import Path

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
