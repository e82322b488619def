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
    """Keep a non-overlapping subset, sorted by start. Candidates are few (a handful per
    message), so the quadratic sweep is cheaper than anything clever."""
    kept: list[PiiSpan] = []
    for span in sorted(set(spans), key=lambda s: (s.start, -s.end)):
        clash = [k for k in kept if k.start < span.end and span.start < k.end]
        if all(_beats(span, k) for k in clash):
            kept = [k for k in kept if k not in clash]
            kept.append(span)
    kept.sort(key=lambda s: s.start)
    return kept
