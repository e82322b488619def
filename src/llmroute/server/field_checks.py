"""The type checks every front makes of its body's known fields, before routing or any
upstream call: a field of the wrong type is the client's 400 naming it, not a request
the upstream refuses for the gateway (``upstream_rejected``) nor one served as something
else (``"stream": "yes"`` answered whole). Each front lists its fields as a `Fields`
table (`llmroute.server.chat_checks`, `messages_checks`, `responses_checks`, the
completions front); `check_fields` walks the body's keys once, so a body costs about a
dictionary lookup per key. ``null`` stands for a field left out, as the APIs take it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from math import isfinite
from typing import Any

from llmroute.server.errors import GatewayError

__all__ = [
    "BOOLEAN",
    "INTEGER",
    "LIST",
    "NUMBER",
    "OBJECT",
    "POSITIVE",
    "STRING",
    "STRINGS",
    "STRING_OR_OBJECT",
    "STRING_OR_STRINGS",
    "Fields",
    "Rule",
    "check_fields",
    "finite_number",
    "positive_int",
    "strings",
    "unit_number",
]

Rule = tuple[Callable[[Any], bool], str]
"""What a field's value must be: the test, and its words (``'top_p' must be ...``)."""
Fields = Mapping[str, Rule]


def finite_number(value: Any) -> bool:
    if isinstance(value, float):
        return isfinite(value)  # bodies and batch lines are parsed finite: defence in depth
    return isinstance(value, int) and not isinstance(value, bool)


def integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: Any) -> bool:
    return integer(value) and value >= 1


def strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def unit_number(value: Any) -> bool:
    return finite_number(value) and 0 <= value <= 1


NUMBER: Rule = (finite_number, "a number")
INTEGER: Rule = (integer, "an integer")
POSITIVE: Rule = (positive_int, "a positive integer")
BOOLEAN: Rule = (lambda value: isinstance(value, bool), "true or false")
STRING: Rule = (lambda value: isinstance(value, str), "a string")
STRINGS: Rule = (strings, "a list of strings")
STRING_OR_STRINGS: Rule = (
    lambda value: isinstance(value, str) or strings(value),
    "a string or a list of strings",
)
OBJECT: Rule = (lambda value: isinstance(value, dict), "an object")
STRING_OR_OBJECT: Rule = (lambda value: isinstance(value, str | dict), "a string or an object")
LIST: Rule = (lambda value: isinstance(value, list), "a list")


def check_fields(body: Mapping[str, Any], fields: Fields) -> None:
    """400 (`GatewayError`, its ``param`` the field) for the first of `body`'s keys in
    `fields` whose value (not null) fails its rule; other keys are not looked at."""
    for key, value in body.items():
        rule = fields.get(key)
        if rule is not None and value is not None and not rule[0](value):
            raise GatewayError(400, f"'{key}' must be {rule[1]}", param=key)
