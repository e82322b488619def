"""Labelled reasoning data: does a prompt need extended thinking (``reasoning``) or not
(``direct``)?

One JSON object a line: ``{"text": "...", "label": "reasoning" | "direct"}`` (the label
in any case: ``Reasoning`` is ``reasoning``, as safety data's labels are); ``group``
(rows that must stay on one side of the split, default: `group_key` of the text, which
keeps MMLU questions sharing a reading passage together) and ``source`` are optional,
other fields are ignored, blank lines skipped. A bad line raises `DataError` naming the
file and line.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llmroute.difficulty.data import group_key
from llmroute.errors import DataError
from llmroute.jsonl import read_jsonl
from llmroute.splits import grouped_split

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
    rows = read_jsonl(
        path,
        _parse_line,
        what="labelled data",
        empty="no labelled rows (expected JSON lines with 'text' and 'label')",
    )
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


def _parse_line(record: dict[str, Any], file: str, number: int) -> tuple[str, int, str, str | None]:
    for field in ("text", "label"):  # named as missing, as difficulty and safety data are
        if field not in record:
            raise DataError(f"missing field '{field}'", file=file, line=number)
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError("field 'text' must be a non-empty string", file=file, line=number)
    label = record.get("label")
    if isinstance(label, str):  # in any case, as safety data's labels are
        label = label.strip().lower()
    if label not in LABELS:
        raise DataError(
            f'field \'label\' must be "reasoning" or "direct" (in any case), got '
            f"{json.dumps(record.get('label'))}",
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
    groups: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(data.groups):
        groups[key].append(index)
    return grouped_split(
        groups, lambda rows: bool(data.labels[rows].mean() >= 0.5), fractions, seed
    )
