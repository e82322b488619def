"""Labelled reasoning data: does a prompt need extended thinking (``reasoning``) or not
(``direct``)?

One JSON object a line: ``{"text": "...", "label": "reasoning" | "direct"}``; ``group``
(rows that must stay on one side of the split, default: `group_key` of the text, which
keeps MMLU questions sharing a reading passage together) and ``source`` are optional,
other fields are ignored, blank lines skipped. A bad line raises `DataError` naming the
file and line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmroute.difficulty.data import group_key
from llmroute.errors import DataError

__all__ = ["LABELS", "ReasoningData", "read_reasoning", "split_reasoning"]

LABELS = ("direct", "reasoning")
"""Label names; a row's class is its index here (1 = needs reasoning)."""

IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class ReasoningData:
    """Texts with 0/1 labels (1 = ``reasoning``), their split groups and sources."""

    texts: tuple[str, ...]
    labels: npt.NDArray[np.intp]
    groups: tuple[str, ...]
    sources: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | IntArray) -> ReasoningData:
        idx = np.asarray(indices, dtype=np.intp)
        return ReasoningData(
            texts=tuple(self.texts[i] for i in idx),
            labels=self.labels[idx],
            groups=tuple(self.groups[i] for i in idx),
            sources=tuple(self.sources[i] for i in idx),
        )


def read_reasoning(path: str | os.PathLike[str]) -> ReasoningData:
    """Read a labelled JSONL file; `DataError` (file:line) for a bad line, a file with no
    rows, or a file with only one label."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read labelled data: {exc.strerror or exc}", file=file) from exc
    rows = [
        _parse_line(line, file, number)
        for number, line in enumerate(raw.split(b"\n"), start=1)
        if line.strip()
    ]
    if not rows:
        raise DataError("no labelled rows (expected JSON lines with 'text' and 'label')", file=file)
    labels = np.array([r[1] for r in rows], dtype=np.intp)
    if labels.min() == labels.max():
        raise DataError(
            f"every row is labelled {LABELS[labels[0]]!r}; both labels are needed", file=file
        )
    return ReasoningData(
        texts=tuple(r[0] for r in rows),
        labels=labels,
        groups=tuple(r[2] for r in rows),
        sources=tuple(r[3] for r in rows),
    )


def _parse_line(line: bytes, file: str, number: int) -> tuple[str, int, str, str | None]:
    try:
        record: Any = json.loads(line)
    except UnicodeDecodeError as exc:
        raise DataError("not valid UTF-8", file=file, line=number) from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg}", file=file, line=number) from exc
    if not isinstance(record, dict):
        raise DataError("expected a JSON object", file=file, line=number)
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError("field 'text' must be a non-empty string", file=file, line=number)
    label = record.get("label")
    if label not in LABELS:
        raise DataError(
            f'field \'label\' must be "reasoning" or "direct", got {json.dumps(label)}',
            file=file,
            line=number,
        )
    group = record.get("group")
    source = record.get("source")
    return (
        text,
        LABELS.index(label),
        str(group) if group is not None else group_key(text),
        str(source) if source is not None else None,
    )


def _unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def split_reasoning(
    data: ReasoningData,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> tuple[IntArray, IntArray, IntArray]:
    """Fixed (train, val, test) row indices: groups never straddle sides; within each
    label (a group's majority label) groups are ordered by a seeded hash of their key and
    cut at the cumulative `fractions` of rows, so each side keeps the label balance and a
    row's side depends only on the seed and its group."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    groups: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(data.groups):
        groups[key].append(index)
    strata: dict[bool, list[str]] = defaultdict(list)
    for key, rows in groups.items():
        strata[bool(data.labels[rows].mean() >= 0.5)].append(key)
    sides: list[list[int]] = [[], [], []]
    cuts = np.cumsum(fractions)[:2]
    for keys in strata.values():
        keys.sort(key=lambda k: _unit(seed, k))
        total = sum(len(groups[k]) for k in keys)
        done = 0
        for key in keys:
            middle = (done + len(groups[key]) / 2) / total
            sides[int(np.searchsorted(cuts, middle, side="right"))].extend(groups[key])
            done += len(groups[key])
    train, val, test = (np.array(sorted(s), dtype=np.intp) for s in sides)
    return train, val, test
