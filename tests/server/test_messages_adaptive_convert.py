"""``POST /v1/messages``'s adaptive thinking and ``output_config.effort``, converted
without I/O: kept for dispatch beside ``output_config.format``, or a 400 naming the
field."""

from __future__ import annotations

from typing import Any

import pytest

from llmroute.server.errors import GatewayError
from llmroute.server.messages_convert import to_chat_body

BODY = {"model": "auto", "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}
SCHEMA = {"type": "object"}


def test_adaptive_thinking_and_its_effort_are_kept_beside_the_format() -> None:
    chat = to_chat_body(
        {
            **BODY,
            "thinking": {"type": "adaptive", "display": "omitted"},
            "output_config": {
                "effort": "xhigh",
                "format": {"type": "json_schema", "schema": SCHEMA},
            },
        }
    )
    assert chat["thinking"] == {"type": "adaptive", "display": "omitted"}
    assert chat["output_config"] == {"effort": "xhigh"}
    assert chat["response_format"]["json_schema"]["schema"] == SCHEMA
    counted = to_chat_body({**BODY, "thinking": {"type": "adaptive"}}, counting=True)
    assert counted["thinking"] == {"type": "adaptive"}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
        ({"output_config": {"effort": 3}}, "output_config.effort"),
        ({"thinking": {"type": "adaptive", "display": "loud"}}, "thinking.display"),
    ],
)
def test_a_malformed_effort_or_display_is_a_400_naming_it(
    change: dict[str, Any], param: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        to_chat_body({**BODY, **change})
    assert caught.value.status == 400 and caught.value.param == param
