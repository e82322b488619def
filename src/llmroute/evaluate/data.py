"""Labelled intent data: JSONL reading and deterministic stratified splits.

Evaluation numbers are only comparable when every run sees the same rows on the same
side of a split, so splits are seeded and stratified per label; each label's shuffle is
seeded from (seed, label), so adding a label never moves the rows of another.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmroute.errors import DataError
from llmroute.jsonl import read_jsonl

__all__ = [
    "LabelledRow",
    "cap_per_label",
    "group_by_label",
    "read_labelled",
    "stratified_split",
]


@dataclass(frozen=True, slots=True)
class LabelledRow:
    text: str
    intent: str


def read_labelled(path: str | os.PathLike[str]) -> list[LabelledRow]:
    """Read `{"text": ..., "intent": ...}` lines; other fields are ignored, blank lines
    skipped. A bad line raises `DataError` naming the file and the line."""
    return read_jsonl(
        path,
        _parse_line,
        what="labelled data",
        empty="no labelled rows (expected JSON lines with 'text' and 'intent')",
    )


def _parse_line(record: dict[str, Any], file: str, number: int) -> LabelledRow:
    values = []
    for field in ("text", "intent"):
        if field not in record:
            raise DataError(f"missing field '{field}'", file=file, line=number)
        value = record[field]
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise DataError(f"field '{field}' must be a string, got {kind}", file=file, line=number)
        if not value.strip():
            raise DataError(f"field '{field}' is empty", file=file, line=number)
        values.append(value)
    return LabelledRow(values[0], values[1])


def group_by_label(rows: Iterable[LabelledRow]) -> dict[str, list[LabelledRow]]:
    """Rows per label, labels in first-seen order, rows in file order."""
    groups: dict[str, list[LabelledRow]] = defaultdict(list)
    for row in rows:
        groups[row.intent].append(row)
    return dict(groups)


def _positions(rows: Sequence[LabelledRow]) -> dict[str, list[int]]:
    """Row indices of each label, in input order."""
    positions: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        positions[row.intent].append(index)
    return positions


def _rng(seed: int, label: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\0{label}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def stratified_split(
    rows: Sequence[LabelledRow], fraction: float, *, seed: int = 0
) -> tuple[list[LabelledRow], list[LabelledRow]]:
    """Split into (rest, held_out) with `fraction` of every label held out.

    Each label keeps at least one row on each side when it has two or more; a label with
    a single row stays in `rest`. Both parts keep the input order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be between 0 and 1 (exclusive), got {fraction}")
    held: set[int] = set()
    for label, indices in _positions(rows).items():
        count = len(indices)
        if count < 2:
            continue
        n_held = min(max(round(fraction * count), 1), count - 1)
        order = _rng(seed, label).permutation(count)[:n_held]
        held.update(indices[i] for i in order)
    rest = [row for i, row in enumerate(rows) if i not in held]
    held_out = [row for i, row in enumerate(rows) if i in held]
    return rest, held_out


def cap_per_label(
    rows: Sequence[LabelledRow], limit: int | None, *, seed: int = 0
) -> list[LabelledRow]:
    """At most `limit` rows per label (a seeded sample; None keeps all), in input order."""
    if limit is None:
        return list(rows)
    if limit < 1:
        raise ValueError(f"the per-label limit must be at least 1, got {limit}")
    keep: set[int] = set()
    for label, indices in _positions(rows).items():
        if len(indices) <= limit:
            keep.update(indices)
        else:
            chosen = _rng(seed + 1, label).permutation(len(indices))[:limit]
            keep.update(indices[i] for i in chosen)
    return [row for i, row in enumerate(rows) if i in keep]
