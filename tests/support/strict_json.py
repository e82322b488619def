"""JSON parsing as strict consumers do it: a bare NaN or Infinity is an error, so a test
that reads a command's --json output with it fails if the command writes one."""

from __future__ import annotations

import json
from typing import Any


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (strict parsers such as JSON.parse reject it)")


def loads_strict(text: str) -> Any:
    return json.loads(text, parse_constant=_refuse)
