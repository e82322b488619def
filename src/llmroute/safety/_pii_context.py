"""Context rules for dotted numbers: is `1.12.4.10` a release or a host (or a phone)?

A four-part version is a valid IPv4 address and a five-part one can pass for a French
number written with dots, so the value alone cannot tell them apart; the words before it
can. A dotted number in the same clause as a release verb (`upgrade`, `pinned`, `pip install
pkg==`) is a version unless a word of the other role (`host`, `server`, `ssh`; `call`,
`phone`) or a place preposition (`install nginx on 10.0.0.5`) says otherwise.
"""

from __future__ import annotations

import re

_CLAUSE_CHARS = 48
_CLAUSE_END = re.compile(r"[.;!?](?:\s|$)|\n")
_RELEASE_WORDS = re.compile(
    r"(?i)\b(?:upgrad|downgrad|updat|bump|pin(?:s|ned|ning)?\b|install|uninstall|releas"
    r"|roll(?:ed|ing)?[ -]?back|rollback|changelog|semver|requirements?\b)"
)
# pip's ==, >=, ~=, !=; npm's ^ and ~. A lone < or > is left out: <10.0.0.1>, "> quoted".
_PIN_OPERATOR = re.compile(r"(?:[=<>~!]=|[\^~])\s*$")
_PLACE_BEFORE = re.compile(r"(?i)\b(?:on|at|onto|via|behind|against)\s+$")
# Role words match inside identifiers too (server_ip, DB_HOST, clientAddr): only a letter
# right before or after ends them.
HOST_WORDS = re.compile(
    r"(?i)(?<![a-z])(?:ips?|ipv4|hosts?|hostname|servers?|address(?:es)?|addr|ssh|ping|subnet"
    r"|cidr|gateway|dns|resolver|firewall|allow(?:list)?|whitelist|blocklist|blacklist|proxy"
    r"|vpn|router|nat|port|client|peer|nodes?|endpoint|traffic|connect[a-z]*|curl|nslookup"
    r"|traceroute|upstream|backend|bind|listen|netmask|network|interface|lan|wan|vm|instance"
    r"|machine|db|database)(?![a-z])"
)
PHONE_WORDS = re.compile(
    r"(?i)(?<![a-z])(?:call[a-z]*|phone|tel|telephone|mobile|cell|fax|text|sms|whatsapp|ring"
    r"|dial|hotline|contact)(?![a-z])"
)


def is_release_number(text: str, start: int, role_words: re.Pattern[str]) -> bool:
    """True when the dotted number at `start` reads as a version in its clause."""
    if _PIN_OPERATOR.search(text, max(0, start - 3), start):
        return True
    clause = text[max(0, start - _CLAUSE_CHARS) : start]
    ends = list(_CLAUSE_END.finditer(clause))
    if ends:
        clause = clause[ends[-1].end() :]
    if _RELEASE_WORDS.search(clause) is None:
        return False
    return role_words.search(clause) is None and _PLACE_BEFORE.search(clause) is None
