"""Regex finders for the checkable types: EMAIL, CARD, IBAN, US_SSN, IP_ADDRESS.

Each finder is a plain function over the text with its own cheap prefilter, so a message
without the telltale character (an ``@``, a digit, a colon) costs a substring test.
"""

from __future__ import annotations

import ipaddress
import re

from llmroute.safety._pii_checks import (
    IBAN_LENGTHS,
    NUMBERING_WORDS,
    card_ok,
    iban_ok,
    ssn_ok,
)
from llmroute.safety._pii_context import HOST_WORDS, is_release_number
from llmroute.safety._pii_span import PiiSpan

# The local part may hold any letter (RFC 6531: zoë@, 用户@); the domain is ASCII
# (punycode, as mail systems write it).
_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w%+-][\w.%+-]{0,63}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|\.\w)"
)
# 13-19 digits, optionally grouped by single spaces or dashes; not glued to more digits.
_CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,4})?"
    r"(?![A-Za-z0-9])"
)
_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_SSN_KEYWORD = re.compile(r"(?i)\b(?:ssn|ss#|social\s+security(?:\s+(?:number|no\.?|#))?)")
_SSN_AFTER_KEYWORD = re.compile(r"[\s:#=,.()'\"-]{0,12}(?:is\s+|number\s+)?(\d{9})(?!\d)")
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w]|\.\d)"
)
_NUMBERING_BEFORE = re.compile(rf"(?i)(?:\bv|(?:\b(?:{NUMBERING_WORDS})\.?|§)\s*[:#]?\s*)$")
_HOST_SUFFIX = re.compile(r"[:/]\d")  # 10.0.0.5:8080, 10.0.0.0/24
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?![\w:])"
)


def find_emails(text: str) -> list[PiiSpan]:
    if "@" not in text:
        return []
    return [PiiSpan("EMAIL", m.start(), m.end(), 0.95) for m in _EMAIL.finditer(text)]


def find_cards(text: str) -> list[PiiSpan]:
    out = []
    for m in _CARD.finditer(text):
        raw = m.group()
        if " " in raw and "-" in raw:  # mixed separators: a list of numbers, not a card
            continue
        digits = raw.replace(" ", "").replace("-", "")
        if card_ok(digits):
            out.append(PiiSpan("CARD", m.start(), m.end(), 1.0))
    return out


def find_ibans(text: str) -> list[PiiSpan]:
    out = []
    for m in _IBAN.finditer(text):
        raw = m.group().upper()
        compact = raw.replace(" ", "")
        want = IBAN_LENGTHS.get(compact[:2])
        if want is None or len(compact) < want:
            continue
        # A greedy match may swallow a following short word; cut at the country's length.
        end, seen = 0, 0
        while seen < want:
            seen += raw[end] != " "
            end += 1
        if end < len(raw) and raw[end] != " ":  # the cut must fall between groups
            continue
        if iban_ok(compact[:want]):
            out.append(PiiSpan("IBAN", m.start(), m.start() + end, 1.0))
    return out


def find_ssns(text: str) -> list[PiiSpan]:
    out = []
    for m in _SSN.finditer(text):
        if ssn_ok(m.group(1), m.group(3), m.group(4)):
            score = 0.85 if m.group(2) == "-" else 0.6
            if _SSN_KEYWORD.search(text, max(0, m.start() - 40), m.start()):
                score = 0.95
            out.append(PiiSpan("US_SSN", m.start(), m.end(), score))
    for k in _SSN_KEYWORD.finditer(text):
        bare = _SSN_AFTER_KEYWORD.match(text, k.end())
        if bare is not None:
            d = bare.group(1)
            if ssn_ok(d[:3], d[3:5], d[5:]):
                out.append(PiiSpan("US_SSN", bare.start(1), bare.end(1), 0.9))
    return out


def find_ips(text: str) -> list[PiiSpan]:
    out = []
    if "." in text:
        for m in _IPV4.finditer(text):
            if _NUMBERING_BEFORE.search(text, max(0, m.start() - 16), m.start()):
                continue
            if _HOST_SUFFIX.match(text, m.end()) is None and is_release_number(
                text, m.start(), HOST_WORDS
            ):
                continue
            out.append(PiiSpan("IP_ADDRESS", m.start(), m.end(), 0.9))
    if text.count(":") >= 2:
        for m in _IPV6.finditer(text):
            candidate = m.group()
            if not any(c.isdigit() for c in candidate):
                continue
            try:
                ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            out.append(PiiSpan("IP_ADDRESS", m.start(), m.end(), 0.95))
    return out
