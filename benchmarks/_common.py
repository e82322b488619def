"""Shared helpers of the benchmarks: data paths, machine description, percentiles."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LLMROUTE_DATA", ROOT.parent / "shared" / "data"))
CLINC = DATA / "clinc150"
BANKING = DATA / "banking77"
MMLU = DATA / "mmlu" / "mmlu_dev.jsonl"
ENCODERS = ("builtin:minilm", "builtin:static")
METHODS = ("linear", "centroid", "knn")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }


def percentiles(values_us: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / mean in microseconds (rounded to 0.1 µs)."""
    data = np.asarray(values_us, dtype=np.float64)
    if data.size == 0:
        return {"n": 0}
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return {
        "n": int(data.size),
        "p50_us": round(float(p50), 1),
        "p90_us": round(float(p90), 1),
        "p99_us": round(float(p99), 1),
        "mean_us": round(float(data.mean()), 1),
    }


def pct(value: float | None) -> str:
    return "   n/a" if value is None else f"{value * 100:5.1f}%"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def dump_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, indent=2, ensure_ascii=False))


def split_rows(path: Path, splits: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of the JSONL file `path` whose ``split`` is one of `splits`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["split"] in splits]


def example_registry(encoder: str, artifact: Path | None, folder: Path) -> Path:
    """examples/registry.yaml with the built-in `encoder` and, given one, the injection
    `artifact`, written to `folder` (the path made absolute: the registry reads its
    artifact paths relative to its own folder)."""
    import yaml

    data = yaml.safe_load((ROOT / "examples" / "registry.yaml").read_text(encoding="utf-8"))
    data["encoder"] = f"builtin:{encoder}"
    if artifact is not None:
        data["safety"]["injection"]["artifact"] = str(artifact.resolve())
    path = folder / f"registry-{encoder}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path
