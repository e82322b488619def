"""PHONE finder: libphonenumber's matcher, behind a regex gate because it is slow.

The matcher costs tens of microseconds even on text with nothing to find, so it runs only
when the text has a run of at least seven digits (spaces, dashes, dots, slashes and
parentheses allowed between them), which every national or international number has.
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

LENIENCY = {"valid": Leniency.VALID, "possible": Leniency.POSSIBLE}


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
            raise ConfigError(f"leniency must be one of {sorted(LENIENCY)}", field="leniency")
        self.regions = tuple(r.upper() for r in regions)
        self._leniency = LENIENCY[leniency]

    def find(self, text: str) -> list[PiiSpan]:
        if _DIGIT_RUN.search(text) is None:
            return []
        seen: dict[tuple[int, int], PiiSpan] = {}
        for region in self.regions:
            for match in PhoneNumberMatcher(text, region, leniency=self._leniency):
                start, end = match.start, match.end
                raw = match.raw_string
                if raw.startswith("(") and raw.count("(") > raw.count(")"):
                    start += 1  # "phone (+33 1 ...)": the bracket is the sentence's
                if (start, end) not in seen and _plausible(text, start, end):
                    seen[(start, end)] = PiiSpan("PHONE", start, end, 0.8)
        return list(seen.values())


def _plausible(text: str, start: int, end: int) -> bool:
    """Rejects dates, decimals, over-long digit runs, labelled identifiers and glued
    fragments."""
    raw = text[start:end]
    digits = sum(c.isdigit() for c in raw)
    if digits < MIN_DIGITS or digits > 15:
        return False
    if _DATE.fullmatch(raw) or _VERSION.fullmatch(raw) or _DECIMAL.fullmatch(raw):
        return False
    before = text[start - 1] if start else " "
    if glues(before) or before in _GLUED_BEFORE:
        return False
    after = text[end] if end < len(text) else " "
    if glues(after) or after in "-_@":
        return False
    if _FRAGMENT_BEFORE.search(text, max(0, start - 5), start) or _FRAGMENT_AFTER.match(text, end):
        return False  # a piece of a longer digit run (a card that failed Luhn)
    if "." in raw and (
        _NUMBERED_BEFORE.search(text, max(0, start - 16), start)
        or is_release_number(text, start, PHONE_WORDS)
    ):
        return False
    return _OTHER_LABEL.search(text, max(0, start - 24), start) is None
