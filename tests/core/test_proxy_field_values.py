"""`llmroute.proxy_fields`: a body's tags, what of it an upstream is sent, and the
LiteLLM fields refused (by the SDK too: `check_chat_body`)."""

from __future__ import annotations

from typing import Any

import pytest

from llmroute.chat_checks import check_chat_body
from llmroute.errors import InvalidRequest
from llmroute.proxy_fields import body_tags, without_proxy_fields

HI = [{"role": "user", "content": "hi"}]


def test_tags_come_from_both_spellings_once_each() -> None:
    body = {"tags": ["a", " b "], "metadata": {"tags": ["b", "c"], "x": "y"}}
    assert body_tags(body) == ("a", "b", "c")
    assert body_tags({"metadata": {"tags": "just a value"}}) == ()  # OpenAI metadata
    assert body_tags({}) == ()


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        ({"metadata": {"k": "v"}, "store": True}, {"metadata": {"k": "v"}, "store": True}),
        ({"metadata": {"k": "v"}}, {}),  # OpenAI: "only allowed when 'store' is enabled"
        ({"metadata": {"k": ["v"]}, "store": True}, {"store": True}),
        ({"metadata": {f"k{i}": "v" for i in range(17)}, "store": True}, {"store": True}),
        ({"metadata": {"k": "v" * 513}, "store": True}, {"store": True}),
        ({"tags": ["a"], "user": "u"}, {"user": "u"}),
    ],
)
def test_an_upstream_gets_only_what_openai_takes(
    body: dict[str, Any], kept: dict[str, Any]
) -> None:
    assert without_proxy_fields({"model": "m", **body}) == {"model": "m", **kept}


def test_a_body_without_them_is_passed_as_is() -> None:
    body = {"model": "m", "messages": HI, "metadata": {"k": "v"}, "store": True}
    assert without_proxy_fields(body) is body


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"fallbacks": ["m"]}, "fallbacks"),
        ({"user_api_key": "sk-123"}, "user_api_key"),
        ({"tags": [1]}, "tags"),
        ({"tags": [f"t{i}" for i in range(11)]}, "tags"),
        ({"metadata": {"tags": ["x" * 65]}}, "metadata.tags"),
        ({"metadata": []}, "metadata"),
    ],
)
def test_the_sdks_checks_refuse_them(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_chat_body({"messages": HI, **extra})
    assert refused.value.param == param and "sk-123" not in str(refused.value)


def test_null_proxy_fields_are_fields_left_out() -> None:
    check_chat_body({"messages": HI, "fallbacks": None, "tags": None, "metadata": None})
