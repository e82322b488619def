"""What a JSON body's field values must be, as predicates: the type checks the chat body
(`llmroute.chat_checks`, which the gateway and the SDK both run) and the gateway's other
fronts (`llmroute.server.field_checks`) share. Pure: nothing here knows HTTP."""

from __future__ import annotations

import sys
from math import isfinite
from typing import Any

__all__ = ["finite_number", "integer", "positive_int", "strings", "unit_number"]


# an integer past a double's range: the gateway's parse refuses it (not JSON a client or
# upstream reads as a number); the SDK's arguments are not parsed, so it is refused here
# too (``n=10**400`` was an OverflowError where a float met it: a hard budget's worst case)
_DOUBLE_MAX = int(sys.float_info.max)


def finite_number(value: Any) -> bool:
    if isinstance(value, float):
        return isfinite(value)  # bodies and batch lines are parsed finite: defence in depth
    return integer(value) and abs(value) <= _DOUBLE_MAX


def integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: Any) -> bool:
    return integer(value) and 1 <= value <= _DOUBLE_MAX


def strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def unit_number(value: Any) -> bool:
    return finite_number(value) and 0 <= value <= 1
