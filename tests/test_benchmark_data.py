"""A benchmark run from a clone without the labelled data beside it says where it
looks and how to point it elsewhere, as the others do, rather than a traceback."""

from __future__ import annotations

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
