"""Checksums and value rules that turn a pattern match into a confident detection."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

NUMBERING_WORDS = (
    r"ver|version|release|rel|build|rev|revision|section|sec|chapter|clause|article|paragraph"
    r"|para|figure|fig|step|appendix|part|page|footnote|equation|eq|lemma|theorem|oid"
)
"""Words that number a release or a document part: a dotted number right after one is a
version or a section (`section 10.4.10.10`), not a host or a phone. Words that also precede
hosts (`rule`, `table` as in routing table) are left out."""

# IBAN length by country (SWIFT IBAN registry): a candidate of another length is not an IBAN.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip

# (prefix range low, high, allowed lengths) per card network; prefixes compared as ints of
# the same number of leading digits.
_IIN: tuple[tuple[int, int, frozenset[int]], ...] = (
    (4, 4, frozenset({13, 16, 19})),  # Visa
    (51, 55, frozenset({16})),  # Mastercard
    (2221, 2720, frozenset({16})),  # Mastercard 2-series
    (34, 34, frozenset({15})),  # Amex
    (37, 37, frozenset({15})),
    (6011, 6011, frozenset(range(16, 20))),  # Discover
    (644, 649, frozenset(range(16, 20))),
    (65, 65, frozenset(range(16, 20))),
    (3528, 3589, frozenset(range(16, 20))),  # JCB
    (300, 305, frozenset(range(14, 20))),  # Diners Club
    (36, 36, frozenset(range(14, 20))),
    (38, 38, frozenset(range(14, 20))),
    (62, 62, frozenset(range(16, 20))),  # UnionPay
)


# Scripts written without spaces between words: Thai letters, Japanese kana, Chinese and
# Japanese ideographs, Korean syllables (whose particles attach to the word before them),
# half-width katakana. A number or address right next to one of these is a word of its own
# ("電話番号は090-1234-5678です"), where one glued to a Latin letter or a digit is part of
# an identifier (INV-A-069005929). Thai digits and full-width forms are not in the ranges.
SPACELESS = (
    "\u0e01-\u0e4f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
)
WORD = rf"[^\W{SPACELESS}]"
"""A regex class: a word character (``\\w``) of a script that separates its words."""
SPACELESS_CHAR = re.compile(f"[{SPACELESS}]")


def glues(ch: str) -> bool:
    """Whether `ch`, next to a candidate, makes it part of a longer word: a letter or
    digit, except a letter of a script written without spaces (`SPACELESS`)."""
    return ch.isalnum() and SPACELESS_CHAR.match(ch) is None


def ascii_digits(digits: str) -> str:
    """`digits` (what ``\\d`` matched: the decimal digits of any script) in ASCII, so the
    checks read a full-width (４１１１) or Arabic-Indic (٤١١١) number as the number it is."""
    if digits.isascii():
        return digits
    return "".join(str(unicodedata.decimal(ch)) for ch in digits)


def luhn_ok(digits: str) -> bool:
    """The Luhn mod-10 check every payment card number carries (ASCII digits: see
    `ascii_digits`)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_ok(digits: str) -> bool:
    """A known network prefix, a length that network issues, and a passing Luhn check
    (ASCII digits)."""
    n = len(digits)
    for low, high, lengths in _IIN:
        width = len(str(low))
        if n in lengths and low <= int(digits[:width]) <= high:
            return luhn_ok(digits)
    return False


def iban_ok(compact: str) -> bool:
    """Country length from the registry and the ISO 7064 mod-97 check (remainder 1)."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rotated = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rotated)) % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """SSA never issues area 000, 666 or 900-999, group 00 or serial 0000."""
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"


def shannon_entropy(value: str) -> float:
    """Bits per character of the value's own character distribution."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())
