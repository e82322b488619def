from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmroute.difficulty.data import group_key, read_labels, split
from llmroute.errors import DataError


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(
    prompt: str = "What is 2+2?", weak: object = True, strong: object = True, **extra: object
) -> str:
    return json.dumps({"prompt": prompt, "weak_correct": weak, "strong_correct": strong, **extra})


def test_reads_rows_ids_and_domains(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "d.jsonl", [_row(id="a1", domain="math"), "", _row("Why?", False, True, x=1)]
    )
    data = read_labels(path)
    assert len(data) == 2
    assert data.ids[0] == "a1" and data.domains == ("math", None)
    assert len(data.ids[1]) == 12  # sha1 prefix of the prompt
    assert data.weak.tolist() == [True, False] and data.strong.tolist() == [True, True]
    sub = data.subset([1])
    assert sub.prompts == ("Why?",) and sub.weak.tolist() == [False]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"prompt": "x", "weak_correct": True}), "missing field 'strong_correct'"),
        (_row(weak=1), "must be true or false, got 1"),
        (_row(strong="true"), 'must be true or false, got "true"'),
        (_row(strong=None), "must be true or false, got null"),  # was "missing field"
        (_row(prompt="  "), "non-empty string"),
        ("[1, 2]", "expected a JSON object"),
        (
            '{"prompt": "x", "weak_correct": true, "strong_correct": true, "weak_correct": false}',
            "duplicate key 'weak_correct'",  # json.loads keeps the last: trained on false
        ),
        (
            '{"prompt": "x", "weak_correct": true, "strong_correct": true, "m": {"a": 1, "a": 2}}',
            "duplicate key 'a'",
        ),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, bad: str, message: str) -> None:
    path = _write(tmp_path / "d.jsonl", [_row(), _row(), bad])
    with pytest.raises(DataError, match=message) as info:
        read_labels(path)
    assert info.value.line == 3
    assert f"{path}:3:" in str(info.value)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no labelled rows"):
        read_labels(_write(tmp_path / "e.jsonl", [""]))
    with pytest.raises(DataError, match="cannot read"):
        read_labels(tmp_path / "absent.jsonl")


def test_an_empty_file_read_for_prompts_only_asks_for_prompts_only(tmp_path: Path) -> None:
    """`calibrate` reads prompts alone: its empty file was told it needs
    `weak_correct` and `strong_correct`, which calibrate never reads."""
    with pytest.raises(DataError, match=r"no rows \(expected JSON lines with 'prompt'\)$"):
        read_labels(_write(tmp_path / "e.jsonl", [""]), prompts_only=True)


PASSAGE = "This question refers to the following information.\n" + "A long shared passage. " * 12


def test_questions_sharing_a_passage_share_a_group() -> None:
    first = f"{PASSAGE}\nWhat does the passage say?\nA. yes\nB. no\nAnswer:"
    second = f"{PASSAGE}\nWho wrote it?\nA. me\nB. you\nC. them\nAnswer:"
    short = "What is 2+2?\nA. 4\nB. 5\nAnswer:"
    assert group_key(first) == group_key(second)
    assert group_key(short) != group_key("What is 3+3?\nA. 6\nB. 5\nAnswer:")


def _synthetic(tmp_path: Path, n: int = 600) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        lines.append(_row(f"question {i}?", bool(rng.random() < 0.6), bool(rng.random() < 0.8)))
    for passage in range(10):  # ten passages with four questions each
        text = f"Passage {passage}. " + "Some shared reading text. " * 10
        for q in range(4):
            lines.append(_row(f"{text}\nQuestion {q}?\nA. a\nB. b\nAnswer:", q % 2 == 0, True))
    return _write(tmp_path / "s.jsonl", lines)


def test_split_is_fixed_disjoint_stratified_and_keeps_passages_together(tmp_path: Path) -> None:
    data = read_labels(_synthetic(tmp_path))
    train, val, test = split(data, seed=0)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(len(data)))
    assert abs(len(train) / len(data) - 0.6) < 0.05
    for side in (val, test):
        assert abs(data.weak[side].mean() - data.weak[train].mean()) < 0.05
        assert abs(data.strong[side].mean() - data.strong[train].mean()) < 0.05
    side_of = {int(i): s for s, idx in enumerate((train, val, test)) for i in idx}
    for start in range(600, len(data), 4):
        assert len({side_of[i] for i in range(start, start + 4)}) == 1
    again = split(data, seed=0)
    assert all((a == b).all() for a, b in zip(again, (train, val, test), strict=True))
    assert not (
        split(data, seed=1)[0].shape == train.shape and (split(data, seed=1)[0] == train).all()
    )


def test_split_rejects_bad_fractions(tmp_path: Path) -> None:
    data = read_labels(_synthetic(tmp_path, 10))
    with pytest.raises(ValueError, match="fractions"):
        split(data, fractions=(0.5, 0.5, 0.5))
