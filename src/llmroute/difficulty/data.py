"""Labelled difficulty data: which of two models answered each prompt correctly.

Splits are assigned by a hash of a *group key* so they are fixed for a seed and do not
move when rows are added, and so MMLU questions that share a reading passage never
straddle train and test (that leaks the passage's difficulty, RESEARCH.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llmroute.errors import DataError
from llmroute.jsonl import read_jsonl
from llmroute.splits import grouped_split, unit_hash

__all__ = [
    "PASSAGE_MIN_CHARS",
    "LabelledPrompts",
    "cv_folds",
    "group_key",
    "read_labels",
    "split",
]

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

PASSAGE_MIN_CHARS = 200
"""A prompt's text before its question line counts as a shared passage from this length."""

_CHOICE = re.compile(r"^\(?[A-J][.)]\s")


@dataclass(frozen=True)
class LabelledPrompts:
    """Prompts with per-model correctness; arrays are aligned with `prompts`."""

    prompts: tuple[str, ...]
    weak: BoolArray
    strong: BoolArray
    ids: tuple[str, ...]
    domains: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, indices: Sequence[int] | IntArray) -> LabelledPrompts:
        idx = np.asarray(indices, dtype=np.intp)
        return LabelledPrompts(
            prompts=tuple(self.prompts[i] for i in idx),
            weak=self.weak[idx],
            strong=self.strong[idx],
            ids=tuple(self.ids[i] for i in idx),
            domains=tuple(self.domains[i] for i in idx),
        )


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def read_labels(path: str | os.PathLike[str], *, prompts_only: bool = False) -> LabelledPrompts:
    """Read JSONL lines with `prompt`, `weak_correct`, `strong_correct` (JSON booleans);
    `id` and `domain` are optional, other fields ignored, blank lines skipped. A bad line
    raises `DataError` naming the file and line; so does a file with no rows.

    With `prompts_only` (what a threshold for a share needs: no outcomes), a line may
    carry neither label; it reads as both wrong."""
    if prompts_only:  # the outcomes are not needed, so an empty file is not told of them
        empty = "no rows (expected JSON lines with 'prompt')"
    else:
        empty = "no labelled rows (expected JSON lines with 'prompt', 'weak_correct' and "
        empty += "'strong_correct')"
    rows = read_jsonl(
        path,
        functools.partial(_parse_line, prompts_only=prompts_only),
        what="labelled data",
        empty=empty,
    )
    return LabelledPrompts(
        prompts=tuple(r[0] for r in rows),
        weak=np.array([r[1] for r in rows], dtype=np.bool_),
        strong=np.array([r[2] for r in rows], dtype=np.bool_),
        ids=tuple(r[3] for r in rows),
        domains=tuple(r[4] for r in rows),
    )


def _parse_line(
    record: dict[str, Any], file: str, number: int, *, prompts_only: bool = False
) -> tuple[str, bool, bool, str, str | None]:
    if prompts_only and all(record.get(f) is None for f in ("weak_correct", "strong_correct")):
        record = {**record, "weak_correct": False, "strong_correct": False}
    for field in ("prompt", "weak_correct", "strong_correct"):
        if field not in record:
            raise DataError(f"missing field '{field}'", file=file, line=number)
    prompt = record["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():  # null too
        raise DataError("field 'prompt' must be a non-empty string", file=file, line=number)
    labels = []
    for field in ("weak_correct", "strong_correct"):
        value = record[field]
        if not isinstance(value, bool):  # 1/0 and "true" are refused: no silent coercion
            got = json.dumps(value)
            raise DataError(
                f"field '{field}' must be true or false, got {got}", file=file, line=number
            )
        labels.append(value)
    ident = record.get("id")
    domain = record.get("domain")
    return (
        prompt,
        labels[0],
        labels[1],
        str(ident) if ident is not None else _sha1(prompt)[:12],
        str(domain) if domain is not None else None,
    )


def group_key(prompt: str) -> str:
    """The key that keeps prompts sharing a passage together.

    Rule: drop the trailing answer choices (lines like ``A. ...``) and the ``Answer:``
    line, then the last remaining line (the question itself). If what is left is at least
    `PASSAGE_MIN_CHARS` long, it is the passage and keys the group; otherwise the whole
    prompt is its own group.
    """
    lines = prompt.strip().split("\n")
    while lines and (not lines[-1].strip() or lines[-1].strip().lower() == "answer:"):
        lines.pop()
    while lines and _CHOICE.match(lines[-1].strip()):
        lines.pop()
    passage = "\n".join(lines[:-1]).strip()
    if len(passage) >= PASSAGE_MIN_CHARS:
        return "passage:" + _sha1(passage)
    return "prompt:" + _sha1(prompt)


def split(
    data: LabelledPrompts,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> tuple[IntArray, IntArray, IntArray]:
    """Fixed (train, val, test) row indices for `seed`.

    Rows are grouped by `group_key`; each group gets a stratum (its rows' mean weak and
    strong correctness, rounded to the four outcomes), and within a stratum groups are
    ordered by a seeded hash of their key and cut at the cumulative `fractions` of rows.
    So each side keeps about the same weak/strong accuracy, a passage's questions stay on
    one side, and the assignment depends only on the seed and the group's own content.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for index, prompt in enumerate(data.prompts):
        groups[group_key(prompt)].append(index)

    def stratum(rows: Sequence[int]) -> tuple[bool, bool]:
        return bool(data.weak[rows].mean() >= 0.5), bool(data.strong[rows].mean() >= 0.5)

    return grouped_split(groups, stratum, fractions, seed)


def cv_folds(
    prompts: Sequence[str], weak: BoolArray, strong: BoolArray, n_folds: int, *, seed: int = 0
) -> IntArray:
    """The cross-validation fold of each row, 0 .. n_folds − 1.

    As in `split`: a passage's questions share a fold, and groups are ordered by outcome
    stratum, then by a seeded hash of their key, and dealt round-robin, so every fold
    gets about the same number of groups and the same weak/strong accuracy.
    """
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    groups: dict[str, list[int]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        groups[group_key(prompt)].append(index)

    def order(key: str) -> tuple[bool, bool, float]:
        rows = groups[key]
        return (
            bool(weak[rows].mean() >= 0.5),
            bool(strong[rows].mean() >= 0.5),
            unit_hash(seed, key),
        )

    folds = np.empty(len(prompts), dtype=np.intp)
    for position, key in enumerate(sorted(groups, key=order)):
        folds[groups[key]] = position % n_folds
    return folds
