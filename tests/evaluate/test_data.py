from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from llmroute.errors import DataError
from llmroute.evaluate.data import (
    LabelledRow,
    cap_per_label,
    read_labelled,
    stratified_split,
)


def _rows(per_label: dict[str, int]) -> list[LabelledRow]:
    return [LabelledRow(f"{label} {i}", label) for label, n in per_label.items() for i in range(n)]


def test_reads_rows_ignoring_extra_fields_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"text": "hi there", "intent": "greet", "id": 7}\n\n   \n'
        '{"intent": "bye", "text": "see you"}\n',
        encoding="utf-8",
    )
    assert read_labelled(path) == [LabelledRow("hi there", "greet"), LabelledRow("see you", "bye")]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a", "b"]', "expected a JSON object"),
        ('{"text": "x"}', "missing field 'intent'"),
        ('{"text": 3, "intent": "a"}', "field 'text' must be a string, got int"),
        ('{"text": "x", "intent": null}', "field 'intent' must be a string, got null"),
        ('{"text": "  ", "intent": "a"}', "field 'text' is empty"),
        ('{"text": "x \\ud800", "intent": "a"}', "not valid Unicode"),
        ("[" * 100_000 + "]" * 100_000, "invalid JSON: nested too deeply"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, bad: str, message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "intent": "a"}\n\n' + bad + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_labelled(path)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_invalid_utf8_and_missing_or_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok", "intent": "a"}\n{"text": "\xff", "intent": "a"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid UTF-8"):
        read_labelled(path)
    with pytest.raises(DataError, match="cannot read"):
        read_labelled(tmp_path / "missing.jsonl")
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no labelled rows"):
        read_labelled(path)


def test_split_is_deterministic_and_stratified() -> None:
    rows = _rows({"a": 50, "b": 20, "c": 10, "d": 2, "e": 1})
    rest, held = stratified_split(rows, 0.2, seed=3)
    assert stratified_split(rows, 0.2, seed=3) == (rest, held)
    assert Counter(r.intent for r in held) == {"a": 10, "b": 4, "c": 2, "d": 1}
    assert sorted(rest + held, key=rows.index) == rows  # a partition, nothing lost
    assert not set(rest) & set(held)
    # order preserved within each part
    assert rest == sorted(rest, key=rows.index)
    assert stratified_split(rows, 0.2, seed=4)[1] != held


def test_split_of_one_label_ignores_the_others() -> None:
    """A label's held-out rows depend on (seed, label) only."""
    small = _rows({"a": 30})
    big = _rows({"z": 40, "a": 30, "y": 5})
    held_small = [r for r in stratified_split(small, 0.3, seed=1)[1]]
    held_big = [r for r in stratified_split(big, 0.3, seed=1)[1] if r.intent == "a"]
    assert held_small == held_big


def test_split_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(_rows({"a": 3}), 1.0)


def test_cap_per_label() -> None:
    rows = _rows({"a": 30, "b": 4})
    capped = cap_per_label(rows, 5, seed=0)
    assert Counter(r.intent for r in capped) == {"a": 5, "b": 4}
    assert capped == cap_per_label(rows, 5, seed=0)
    assert cap_per_label(rows, None) == rows
    with pytest.raises(ValueError, match="at least 1"):
        cap_per_label(rows, 0)
