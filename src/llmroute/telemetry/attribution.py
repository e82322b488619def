"""Who and what a request's cost is attributed to, beyond its client key: the end user
the request names and the tags its caller sends (``x-llmroute-tags: team-search,
app:web``). Both land in the decision log and the request log line, and `llmroute
report` groups by them.

Tags are checked, not cleaned: a header that breaks the rules below is the caller's
mistake and is refused with a 400 (a report silently missing a team's spend is worse).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "MAX_END_USER",
    "MAX_TAGS",
    "MAX_TAG_LENGTH",
    "TAGS_HEADER",
    "check_tags",
    "end_user_of",
    "parse_tags",
]

TAGS_HEADER = "x-llmroute-tags"
MAX_TAGS = 10
MAX_TAG_LENGTH = 64
MAX_END_USER = 256
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:=/@+-]*")


def end_user_of(body: Mapping[str, Any]) -> str | None:
    """The end user a chat body names: OpenAI's ``safety_identifier``, else its older
    ``user`` (the Anthropic and Responses fronts map theirs onto these), at most
    `MAX_END_USER` characters; None when it names none."""
    for key in ("safety_identifier", "user"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_END_USER]
    return None


def parse_tags(value: str | None) -> tuple[str, ...]:
    """The tags of an ``x-llmroute-tags`` header: comma-separated, each 1 to
    `MAX_TAG_LENGTH` characters of letters, digits and ``_ . : = / @ + -`` (starting
    with a letter or digit), at most `MAX_TAGS`, duplicates dropped, order kept.
    Raises `ValueError` saying which rule a header breaks."""
    if value is None:
        return ()
    tags = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    check_tags(tags)
    return tags


def check_tags(tags: Sequence[str]) -> None:
    """`ValueError` saying which of `parse_tags`' rules `tags` break (a body's tags,
    LiteLLM's spelling, are held to them too)."""
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags, got {len(tags)}")
    for tag in tags:
        if len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"a tag is at most {MAX_TAG_LENGTH} characters, got {len(tag)}")
        if _TAG.fullmatch(tag) is None:
            raise ValueError(
                f"tag {tag[:MAX_TAG_LENGTH]!r}: letters, digits and _ . : = / @ + - only, "
                "starting with a letter or digit"
            )
