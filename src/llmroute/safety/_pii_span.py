"""The span value type and the overlap rule shared by every PII finder."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PII_TYPES: tuple[str, ...] = (
    "EMAIL",
    "PHONE",
    "CARD",
    "IBAN",
    "US_SSN",
    "IP_ADDRESS",
    "SECRET",
    "PERSON",
    "LOCATION",
)
"""Every type the detector can report, in the order docs and errors list them (the
registry's schema validates policy keys against it without importing the detector)."""

# Highest first: a specific, checksummed or keyword-anchored type beats a looser one.
PRIORITY: tuple[str, ...] = (
    "SECRET",
    "CARD",
    "IBAN",
    "US_SSN",
    "EMAIL",
    "IP_ADDRESS",
    "PHONE",
    "PERSON",
    "LOCATION",
)
_RANK = {name: i for i, name in enumerate(PRIORITY)}


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """One detected value: `text[start:end]` is of `type`; `score` in [0, 1] says how sure
    the finder is (1.0 for a passed checksum, lower for pattern-only evidence)."""

    type: str
    start: int
    end: int
    score: float


def _beats(a: PiiSpan, b: PiiSpan) -> bool:
    """Whether `a` wins over the overlapping `b`: a span that strictly contains the other
    wins (a digit run inside an IBAN is part of the IBAN), else the higher-priority type,
    then the longer span, then the earlier one."""
    a_len, b_len = a.end - a.start, b.end - b.start
    if a.start <= b.start and b.end <= a.end and a_len > b_len:
        return True
    if b.start <= a.start and a.end <= b.end and b_len > a_len:
        return False
    key_a = (-_RANK.get(a.type, len(PRIORITY)), a_len, -a.start)
    key_b = (-_RANK.get(b.type, len(PRIORITY)), b_len, -b.start)
    return key_a > key_b


def resolve_overlaps(spans: Iterable[PiiSpan]) -> list[PiiSpan]:
    """Keep a non-overlapping subset, sorted by start (empty spans are dropped).

    Candidates come in order of start and the kept spans never overlap, so their ends
    grow too and only a suffix of them can overlap the next candidate: n log n however
    many candidates there are (a pasted log of 100,000 phone numbers), where comparing
    each with every kept span was quadratic."""
    kept: list[PiiSpan] = []
    for span in sorted({s for s in spans if s.end > s.start}, key=lambda s: (s.start, -s.end)):
        first = len(kept)
        while first > 0 and kept[first - 1].end > span.start:
            first -= 1
        if all(_beats(span, k) for k in kept[first:]):
            del kept[first:]
            kept.append(span)
    return kept
