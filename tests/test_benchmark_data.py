"""A benchmark run from a clone without the labelled data beside it says where it
looks and how to point it elsewhere, as the others do, rather than a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_llm_router_without_the_data_names_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "LLMROUTE_DATA": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_llm_router.py"), "--fake"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "set LLMROUTE_DATA" in done.stderr
    assert str(tmp_path / "clinc150" / "train.jsonl") in done.stderr
    assert "Traceback" not in done.stderr


def test_benign_technical_corpus_is_well_formed() -> None:
    """benchmarks/data/benign_technical.jsonl (bench_benign_documents.py, --benign-extra):
    every row has its fields, a known split, and all excerpts of one file lie on one side,
    so no held-out text was trained on; no licence text (the GPL family permits only whole
    verbatim copies)."""
    path = ROOT / "benchmarks" / "data" / "benign_technical.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 200
    fields = {"text", "source", "licence", "split", "label", "group", "file", "offset"}
    sides: dict[str, set[str]] = {}
    for number, row in enumerate(rows, 1):
        assert set(row) == fields, number
        assert row["split"] in {"train", "validation", "test"}, number
        assert row["label"] == "benign", number
        assert row["source"] in {"nodejs-docs", "python-stdlib"}, number
        assert row["licence"] and row["group"] == f"benign-technical/{row['file']}", number
        assert 0 < len(row["text"]) <= 1700 and isinstance(row["offset"], int), number
        sides.setdefault(row["file"], set()).add(row["split"])
    assert all(len(found) == 1 for found in sides.values()), sides
    assert {s for found in sides.values() for s in found} == {"train", "validation", "test"}
