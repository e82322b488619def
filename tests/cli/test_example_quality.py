"""The example registry is what a new user meets first: keep its routing measured.

`examples/eval.jsonl` is a held-out set (none of its prompts are registry examples);
the floor sits a few points below the measured value (88.3% accuracy, 90.4% in-scope,
75% oos recall on 2026-11-25) so a real regression fails and noise does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_example_registry_accuracy_floor() -> None:
    examples = {
        e
        for line in (ROOT / "examples" / "registry.yaml").read_text().splitlines()
        for e in [line.strip().lstrip("- ").strip("\"'").lower()]
    }
    rows = [
        json.loads(line)
        for line in (ROOT / "examples" / "eval.jsonl").read_text().split("\n")
        if line
    ]
    assert not [r["text"] for r in rows if r["text"].lower() in examples], "eval rows leaked"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "llmroute"),
            *("eval", "-r", "examples/registry.yaml", "--data", "examples/eval.jsonl", "--json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 60
    assert report["accuracy"] >= 0.85
    assert report["in_scope_accuracy"] >= 0.85
    assert report["oos_recall"] >= 0.6
