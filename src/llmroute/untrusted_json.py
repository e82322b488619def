"""Parsing JSON that came from outside: a client's body or tool-call arguments, an
upstream's answer or stream events, a model's reply.

`json.loads` raises `RecursionError`, not `ValueError`, on arrays or objects nested past
Python's recursion limit (``[[[[...]]]]`` 100,000 deep is a few hundred kilobytes), so
every ``except ValueError`` around it let such a text escape as a crash. `loads` makes it
a `ValueError` like any other text that is not usable JSON; with `max_depth`, it also
refuses what parses but nests deeper than the code after it (each recursive walk, the
encoder that sends it on) can safely take.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "TooDeep", "deeper_than", "loads"]

MAX_DEPTH = 100  # levels of arrays and objects; a tool schema nested ten deep uses ~25


class TooDeep(ValueError):
    """JSON nested deeper than allowed."""


def loads(text: str | bytes, *, max_depth: int | None = None) -> Any:
    """`json.loads`, with nesting too deep for the parser, or past `max_depth`, raised
    as `TooDeep` (a `ValueError`)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeep("nested too deeply to parse") from None
    if max_depth is not None and deeper_than(value, max_depth):
        raise TooDeep(f"nested more than {max_depth} levels deep")
    return value


def deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels in `value` (a scalar is
    level 0). Only containers are visited, so long strings cost nothing."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
