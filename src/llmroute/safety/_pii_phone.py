"""PHONE finder: libphonenumber's matcher, behind a regex gate because it is slow.

The matcher costs tens of microseconds even on text with nothing to find, so it runs only
when the text has a run of at least seven digits (spaces, dashes, dots, slashes and
parentheses allowed between them), which every national or international number has.

Its cost grows with the digit groups it meets (0.1 to 2 ms each, more regions more), so
it has a work budget (`PhoneBudget`), one a request when its texts share it: the matcher
reads the texts, in order, up to the `BUDGET`-th candidate (a run cut into pieces of at
most 15 digits, and at line breaks), and each later candidate is judged by the cheap
context rules alone (`_plausible`: 7-15 digits, not a date, a version, a decimal, a
labelled id or a piece of a longer run), scored `CHEAP_SCORE`. In texts that dense with
numbers it flags more than the matcher would rather than let a pasted list of phones
through; a request of a hundred such messages costs what one would.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher

from llmroute.errors import ConfigError
from llmroute.safety._pii_checks import NUMBERING_WORDS, glues
from llmroute.safety._pii_context import PHONE_WORDS, is_release_number
from llmroute.safety._pii_span import PiiSpan

# libphonenumber's punctuation includes the dashes, slash and brackets of other scripts
# (０９０－１２３４－５６７８, ０９０ー１２３４ー５６７８ as Japanese text writes them)
_DIGIT_RUN = re.compile(
    r"\d(?:[\s.()/\-\u2010-\u2015\u2212\u30fc\uff0d\uff0f\uff08\uff09]{0,3}\d){6,}"
)

# What libphonenumber accepts but a reader would not call a phone number: dates, and digit
# runs labelled as something else or glued into a longer identifier (INV-A-069005929).
_DATE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}")
_OTHER_LABEL = re.compile(
    r"(?i)(?:\b(?:order|invoice|inv|ref|reference|isbn|tracking|ticket|id|account|acct|"
    r"sku|serial|case|commit|sha|version|release|build|v)\s*(?:no\.?|number|nr\.?)?\s*[:#]?\s*|#\s*)$"
)
_NUMBERED_BEFORE = re.compile(rf"(?i)(?:\b(?:{NUMBERING_WORDS})\.?|§)\s*[:#]?\s*$")
"""Only for dotted candidates (`clause 17.20.10.18`): "page 212-555-0123" is a phone."""
_DECIMAL = re.compile(r"\d+\.\d+")  # 63.8600505: a measurement; dotted phones have 2+ dots
_VERSION = re.compile(r"(?:\d+\.)*\d\.\d+(?:\.\d+)*|\d+(?:\.\d+)+\.\d")  # a 1-digit part
_FRAGMENT_BEFORE = re.compile(r"(?<![\d.])\d{2,4}[ -]$")
_FRAGMENT_AFTER = re.compile(r"[ -]\d{2,4}(?![\d.])")
MIN_DIGITS = 7  # the shortest subscriber numbers people write with their area code
_GLUED_BEFORE = frozenset("-_/#.:@")

BUDGET = 200
"""Candidates the matcher reads in one budget's texts: a contact list of 200 numbers
(30-50 ms with regions US, GB on the 2-core dev machine; docs/benchmarks.md)."""
CHEAP_SCORE = 0.5
"""The score of a candidate past the budget: no numbering plan was checked."""
_DIGITS = re.compile(r"\d+")
_BREAK = re.compile(r"[^ .()/\-\u2010-\u2015\u2212\u30fc\uff0d\uff0f\uff08\uff09\u00a0\u202f]")
"""A character between two digit groups of one run that no written number has inside
(a line break, a tab): the groups are two candidates."""
_EXTENSION = re.compile(r"(?i) ?(?:x|ext\.?|extension) ?\d{1,6}")  # 212-555-0123x45

LENIENCY = {"valid": Leniency.VALID, "possible": Leniency.POSSIBLE}


class PhoneBudget:
    """The candidates the matcher may still read, shared by the texts of one request (each
    `find` without one gets a budget of its own). Not thread-safe: one per scan."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = BUDGET


class PhoneFinder:
    """Finds numbers in national form for each of `regions` (ISO 3166 codes) and in
    international ``+CC`` form for any country."""

    def __init__(self, regions: Sequence[str], *, leniency: str = "possible") -> None:
        supported = phonenumbers.SUPPORTED_REGIONS
        bad = [r for r in regions if r.upper() not in supported]
        if bad or not regions:
            raise ConfigError(
                f"unknown phone region(s) {bad or list(regions)}; use ISO 3166 codes "
                "such as 'US', 'GB', 'DE'",
                field="phone_regions",
            )
        if leniency not in LENIENCY:
            raise ConfigError(  # PiiDetector's argument, the name its caller wrote
                f"phone_leniency must be one of {sorted(LENIENCY)}, not {leniency!r}",
                field="phone_leniency",
            )
        self.regions = tuple(r.upper() for r in regions)
        self._leniency = LENIENCY[leniency]

    def find(self, text: str, budget: PhoneBudget | None = None) -> list[PiiSpan]:
        """The numbers in `text`; the matcher's reading is charged to `budget`."""
        if _DIGIT_RUN.search(text) is None:
            return []
        cut, rest = _over_budget(text, PhoneBudget() if budget is None else budget)
        spans = self._match(text, cut) if cut else []
        for start, end in rest:
            before = text[start - 1] if start else ""
            if before == "+" or (before == "(" and ")" in text[start:end]):
                start -= 1  # +44 20 7946 0958, (212) 555-0123
            ext = _EXTENSION.match(text, end)
            stop = ext.end() if ext else end
            if _plausible(text, start, end, stop=stop):
                spans.append(PiiSpan("PHONE", start, stop, CHEAP_SCORE))
        return spans

    def _match(self, text: str, cut: int) -> list[PiiSpan]:
        """libphonenumber's matches in `text[:cut]`, through the context rules."""
        seen: dict[tuple[int, int], PiiSpan] = {}
        read = text if cut == len(text) else text[:cut]
        for region in self.regions:
            for match in PhoneNumberMatcher(read, region, leniency=self._leniency):
                start, end = match.start, match.end
                raw = match.raw_string
                if raw.startswith("(") and raw.count("(") > raw.count(")"):
                    start += 1  # "phone (+33 1 ...)": the bracket is the sentence's
                if (start, end) not in seen and _plausible(text, start, end):
                    seen[(start, end)] = PiiSpan("PHONE", start, end, 0.8)
        return list(seen.values())


def _over_budget(text: str, budget: PhoneBudget) -> tuple[int, list[tuple[int, int]]]:
    """Where the matcher stops reading `text` (the start of the first digit run that
    takes the count of candidates past what `budget` has left, so no run is split;
    `len(text)` when it stays within), and the candidates after that point, as (start,
    end). The candidates read are charged; once a text passes it, the budget is spent,
    as if the request's texts were one."""
    count = 0
    rest: list[tuple[int, int]] = []
    cut = len(text)
    left = budget.left
    for run in _DIGIT_RUN.finditer(text):
        pieces = _pieces(text, run.start(), run.end())
        if rest or count + len(pieces) > left:
            if not rest:
                cut = run.start()
            rest += pieces
        else:
            count += len(pieces)
    budget.left = 0 if rest else left - count
    return cut, rest


def _pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """One digit run's candidates: its digit groups, joined while the digits stay at
    most 15 (the longest number a plan allows) and nothing between them breaks a line."""
    pieces: list[tuple[int, int]] = []
    first = last = -1
    digits = 0
    for group in _DIGITS.finditer(text, start, end):
        size = group.end() - group.start()
        if first >= 0 and digits + size <= 15 and not _BREAK.search(text, last, group.start()):
            digits += size
        else:
            if first >= 0:
                pieces.append((first, last))
            first, digits = group.start(), size
        last = group.end()
    pieces.append((first, last))
    return pieces


def _plausible(text: str, start: int, end: int, *, stop: int | None = None) -> bool:
    """Rejects dates, decimals, over-long digit runs, labelled identifiers and glued
    fragments. `stop`: where the number's extension (`x45`) ends, if it has one; what
    follows is read from there."""
    raw = text[start:end]
    digits = sum(c.isdigit() for c in raw)
    if digits < MIN_DIGITS or digits > 15:
        return False
    if _DATE.fullmatch(raw) or _VERSION.fullmatch(raw) or _DECIMAL.fullmatch(raw):
        return False
    before = text[start - 1] if start else " "
    if glues(before) or before in _GLUED_BEFORE:
        return False
    if stop is None:
        stop = end
    after = text[stop] if stop < len(text) else " "
    if glues(after) or after in "-_@":
        return False
    if _FRAGMENT_BEFORE.search(text, max(0, start - 5), start) or _FRAGMENT_AFTER.match(text, stop):
        return False  # a piece of a longer digit run (a card that failed Luhn)
    if "." in raw and (
        _NUMBERED_BEFORE.search(text, max(0, start - 16), start)
        or is_release_number(text, start, PHONE_WORDS)
    ):
        return False
    return _OTHER_LABEL.search(text, max(0, start - 24), start) is None
