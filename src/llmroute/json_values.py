"""Values for JSON that strict parsers accept: Python writes NaN and infinities as bare
``NaN`` / ``Infinity``, which browsers' ``JSON.parse`` and most other parsers reject."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["json_safe"]


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None, through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
