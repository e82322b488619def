"""A stream of two choices interleaved (a registry's ``params: {n: 2}``), as the
translators of APIs without ``n`` (Messages, Responses) are fed it: choice 0 says
"Hel", "lo" and stops; the other (`other`: 1, or an index that is no choice's) says
"Other", calls a tool and stops on length."""

from __future__ import annotations

import json
from typing import Any


def _choice(index: object, delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {"id": "c1", "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(data)}\n\n".encode()


def two_choices(other: object) -> list[bytes]:
    """The chunks, without ``[DONE]`` (a caller adds its usage chunk first)."""
    call = {"index": 0, "id": "t1", "function": {"name": "f", "arguments": "{}"}}
    return [
        _choice(0, {"role": "assistant", "content": "Hel"}),
        _choice(other, {"role": "assistant", "content": "Other"}),
        _choice(0, {"content": "lo"}),
        _choice(other, {"tool_calls": [call]}),
        _choice(0, {}, "stop"),
        _choice(other, {}, "length"),
    ]
