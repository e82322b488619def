"""Seeded, grouped, stratified train / validation / test splits shared by the trainers.

A row's side depends only on the seed and its group's key and stratum, never on file
order, so a split is reproducible and adding rows does not move the others' groups.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["grouped_split", "unit_hash"]

IntArray = npt.NDArray[np.intp]


def unit_hash(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by `seed` and `key`: the order of groups for a seed."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def grouped_split(
    groups: Mapping[str, Sequence[int]],
    stratum: Callable[[Sequence[int]], Hashable],
    fractions: tuple[float, float, float],
    seed: int,
) -> tuple[IntArray, IntArray, IntArray]:
    """(train, val, test) row indices: within each `stratum` of the groups' rows, groups
    are ordered by `unit_hash` of their key and each goes to the side where the middle of
    its rows falls on the cumulative `fractions`. A group never straddles sides."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    strata: dict[Hashable, list[str]] = defaultdict(list)
    for key, rows in groups.items():
        strata[stratum(rows)].append(key)
    sides: list[list[int]] = [[], [], []]
    cuts = np.cumsum(fractions)[:2]
    for keys in strata.values():
        keys.sort(key=lambda k: unit_hash(seed, k))
        total = sum(len(groups[k]) for k in keys)
        done = 0
        for key in keys:
            middle = (done + len(groups[key]) / 2) / total
            sides[int(np.searchsorted(cuts, middle, side="right"))].extend(groups[key])
            done += len(groups[key])
    train, val, test = (np.array(sorted(s), dtype=np.intp) for s in sides)
    return train, val, test
