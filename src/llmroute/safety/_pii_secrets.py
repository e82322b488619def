"""SECRET finder: credentials in the documented formats of common providers, PEM private
keys, and ``password=``-style assignments whose value looks random.

Random-looking strings alone (UUIDs, git SHAs, hashes) are not secrets here: without a
known prefix or a keyword next to them they are far more often identifiers.
"""

from __future__ import annotations

import re

from llmroute.safety._pii_checks import WORD, shannon_entropy
from llmroute.safety._pii_span import PiiSpan

# Not glued to a word (`WORD`: Chinese or Japanese text may touch it with no space).
_FORMATS = re.compile(
    rf"(?<!-)(?<!{WORD})(?:"
    r"(?:AKIA|ASIA)[A-Z0-9]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,255}"  # GitHub classic tokens
    r"|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub fine-grained tokens
    r"|sk-ant-[A-Za-z0-9_-]{32,}"  # Anthropic
    r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}"  # OpenAI
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}"  # JWT
    rf")(?!{WORD}|-)"
)
# Substrings one of the formats above must contain: a cheap gate before the regex.
_FORMAT_HINTS = ("AKIA", "ASIA", "gh", "github_pat_", "sk-", "xox", "_live_", "_test_", "AIza")
_PEM = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[A-Za-z0-9+/=\s:,-]*)"
)
_ASSIGNMENT = re.compile(
    r"(?i)(?<![a-z])(?:password|passwd|pwd|passphrase|api[_-]?key|apikey|secret|"
    r"client[_-]?secret|access[_-]?key|secret[_-]?key|private[_-]?key|"
    r"(?:access|auth|api|bearer|refresh)?[_-]?token)"
    r"(?:[_-][a-z]+){0,2}[\"']?\s*(?::=|=>|[:=])\s*[\"'`]?(?P<value>[^\s\"'`,;]{16,})"
)
_KEYWORD_HINTS = ("pass", "pwd", "key", "secret", "token")
MIN_ENTROPY = 3.0  # bits per character; 16 random base64 characters give about 3.8


def _looks_random(value: str) -> bool:
    """At least two character classes (``_`` and ``-`` do not count) and enough entropy;
    rules out placeholders such as ``xxxxxxxxxxxxxxxx`` or ``your_api_key_here``."""
    classes = (
        any(c.islower() for c in value)
        + any(c.isupper() for c in value)
        + any(c.isdigit() for c in value)
        + any(not c.isalnum() and c not in "_-" for c in value)
    )
    return classes >= 2 and shannon_entropy(value) >= MIN_ENTROPY


def find_secrets(text: str) -> list[PiiSpan]:
    out: list[PiiSpan] = []
    if "eyJ" in text or any(h in text for h in _FORMAT_HINTS):
        out += [PiiSpan("SECRET", m.start(), m.end(), 0.99) for m in _FORMATS.finditer(text)]
    if "-----BEGIN" in text:
        out += [PiiSpan("SECRET", m.start(), m.end(), 1.0) for m in _PEM.finditer(text)]
    lowered = text.lower()
    if any(h in lowered for h in _KEYWORD_HINTS):
        for m in _ASSIGNMENT.finditer(text):
            value = m.group("value").rstrip(".)]}>")
            if len(value) >= 16 and _looks_random(value):
                start = m.start("value")
                out.append(PiiSpan("SECRET", start, start + len(value), 0.8))
    return out
