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
    SPACELESS_CHAR,
    WORD,
    ascii_digits,
    card_ok,
    iban_ok,
    ssn_ok,
)
from llmroute.safety._pii_context import HOST_WORDS, is_release_number
from llmroute.safety._pii_span import PiiSpan

# The local part may hold any letter (RFC 6531: zoë@, 用户@); the domain is ASCII
# (punycode, as mail systems write it). Chinese or Japanese text may touch it with no
# space ("请发到bob@example.com谢谢"): after it, `WORD` ends the match; before it, the
# text's letters are the local part's as far as the regex can tell, so `find_emails`
# leaves out a run of them ahead of ASCII (`SPACELESS`), keeping a local part of them alone
# (张伟@example.com).
_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w%+-][\w.%+-]{0,63}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}"
    rf"(?!{WORD}|-|\.\w)"
)
# 13-19 digits of any script (４１１１: `ascii_digits`), optionally grouped by single
# spaces (no-break and ideographic ones too) or dashes; not glued to more digits or to a
# letter of a script that spaces its words (`WORD`).
_SPACES = " \u00a0\u202f\u3000"
_DASHES = "\\-\u2010\u2011\uff0d"
# (The digit is matched before the look back at the character ahead of it, which costs
# less than looking back at every position of a text without digits.)
_CARD = re.compile(
    rf"\d(?<!{WORD}\d)(?<![.,\-]\d)(?:[{_SPACES}{_DASHES}]?\d){{12,18}}(?!{WORD}|-|[.,]\d)"
)
_CARD_SPACES = re.compile(f"[{_SPACES}]")
_CARD_DASHES = re.compile(f"[{_DASHES}]")
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,4})?"
    r"(?![A-Za-z0-9])"
)
_SSN = re.compile(rf"(?=\d)(?<!-)(?<!{WORD})(\d{{3}})([- ])(\d{{2}})\2(\d{{4}})(?!{WORD}|-)")
_SSN_KEYWORD = re.compile(r"(?i)\b(?:ssn|ss#|social\s+security(?:\s+(?:number|no\.?|#))?)")
_SSN_AFTER_KEYWORD = re.compile(r"[\s:#=,.()'\"-]{0,12}(?:is\s+|number\s+)?(\d{9})(?!\d)")
_IPV4 = re.compile(
    rf"(?=\d)(?<!\.)(?<!{WORD})"
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    rf"(?!{WORD}|\.\d)"
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
    out = []
    for m in _EMAIL.finditer(text):
        start, at = m.start(), text.index("@", m.start())
        while start < at and SPACELESS_CHAR.match(text, start):
            start += 1
        out.append(PiiSpan("EMAIL", m.start() if start == at else start, m.end(), 0.95))
    return out


def find_cards(text: str) -> list[PiiSpan]:
    out = []
    for m in _CARD.finditer(text):
        raw = m.group()
        if _CARD_SPACES.search(raw) and _CARD_DASHES.search(raw):
            continue  # mixed separators: a list of numbers, not a card
        digits = ascii_digits(_CARD_DASHES.sub("", _CARD_SPACES.sub("", raw)))
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
        if ssn_ok(ascii_digits(m.group(1)), ascii_digits(m.group(3)), ascii_digits(m.group(4))):
            score = 0.85 if m.group(2) == "-" else 0.6
            if _SSN_KEYWORD.search(text, max(0, m.start() - 40), m.start()):
                score = 0.95
            out.append(PiiSpan("US_SSN", m.start(), m.end(), score))
    for k in _SSN_KEYWORD.finditer(text):
        bare = _SSN_AFTER_KEYWORD.match(text, k.end())
        if bare is not None:
            d = ascii_digits(bare.group(1))
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
