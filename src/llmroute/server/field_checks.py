"""The type checks every front makes of its body's known fields, before routing or any
upstream call: a field of the wrong type is the client's 400 naming it, not a request
the upstream refuses for the gateway (``upstream_rejected``) nor one served as something
else (``"stream": "yes"`` answered whole). Each front lists its fields as a `Fields`
table (`messages_checks`, `responses_checks`, the completions front; the chat body's
checks, which the SDK runs too, are `llmroute.chat_checks`); `check_fields` walks the
body's keys once, so a body costs about a dictionary lookup per key. ``null`` stands
for a field left out, as the APIs take it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from llmroute.chat_checks import BELOW_MIN, INVALID_TYPE
from llmroute.field_values import finite_number, integer, positive_int, strings, unit_number
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
    """400 (`GatewayError`, its ``param`` the field, its ``code`` OpenAI's) for the first
    of `body`'s keys in `fields` whose value (not null) fails its rule; other keys are
    not looked at."""
    for key, value in body.items():
        rule = fields.get(key)
        if rule is not None and value is not None and not rule[0](value):
            code = BELOW_MIN if rule is POSITIVE and integer(value) and value < 1 else INVALID_TYPE
            raise GatewayError(400, f"'{key}' must be {rule[1]}", param=key, code=code)
