from __future__ import annotations

import datetime
import decimal

import pytest

from llmroute.errors import RoutingError
from llmroute.request import RouteRequest, estimate_tokens


def test_string_request() -> None:
    req = RouteRequest.from_input("hello", headers={"X-Tenant": "acme"})
    assert req.text == "hello"
    assert req.headers == {"x-tenant": "acme"}
    assert not req.has_tools


def test_chat_body_uses_last_user_turn_by_default() -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "translate hello to french"},
            {"role": "assistant", "content": "bonjour"},
            {"role": "user", "content": "and to german?"},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "metadata": {"team": "search"},
        "user": "u-1",
    }
    req = RouteRequest.from_input(body)
    assert req.text == "and to german?"
    assert req.has_tools
    assert req.requested_model == "auto"
    assert req.metadata == {"team": "search", "user": "u-1"}
    windowed = RouteRequest.from_input(body, window=2)
    assert windowed.text == "translate hello to french\nand to german?"


def test_rules_see_a_safety_identifier_as_the_user_as_on_responses() -> None:
    """OpenAI's newer name for the end user (``safety_identifier``) is the ``user``
    rules match, as the Responses front already made it of the same field: a chat body
    sending it matched no ``metadata: {user: ...}`` rule."""
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    newer = RouteRequest.from_input({**ask, "safety_identifier": "u-1"})
    assert newer.metadata == {"user": "u-1"}
    both = RouteRequest.from_input({**ask, "safety_identifier": "u-1", "user": "u-2"})
    assert both.metadata == {"user": "u-1"}  # as the Responses front and the end user


def test_a_null_metadata_value_is_absent_not_the_text_none() -> None:
    """Anthropic's ``metadata.user_id`` may be null (so may any value a chat client
    sends): rules read it as absent; it was the text "None", which a rule's ``"*"``
    (present) matched."""
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    req = RouteRequest.from_input({**ask, "metadata": {"user_id": None, "team": "a"}})
    assert req.metadata == {"team": "a"}


def test_metadata_values_that_are_not_strings_are_compact_json_to_rules() -> None:
    """A client may send ``metadata`` values that are not strings (LiteLLM's, a chat
    client's): rules read them as the JSON sent, compact, not as Python's repr
    (``True``, ``{'a': 1}``), which no rule written from the request could match. A
    ``tags`` list is the request's tags, not metadata (as on Messages and Responses)."""
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    sent = {
        "trace": {"id": "t-1", "depth": 2},
        "beta": True,
        "tier": 3,
        "ratio": 0.5,
        "teams": ["a", "é"],
        "tags": ["env:prod"],
        "plain": "kept as is",
    }
    req = RouteRequest.from_input({**ask, "metadata": sent})
    assert req.metadata == {
        "trace": '{"id":"t-1","depth":2}',
        "beta": "true",
        "tier": "3",
        "ratio": "0.5",
        "teams": '["a","é"]',
        "plain": "kept as is",
    }
    text = RouteRequest.from_input({**ask, "metadata": {"tags": "a string"}})
    assert text.metadata == {"tags": "a string"}  # OpenAI metadata like any other value


def test_metadata_a_python_caller_made_is_text_whatever_its_values() -> None:
    """An SDK caller's body is Python, not JSON: a value JSON cannot write (a date, a
    Decimal, a circular dict, a tuple key; numpy's int64) is its ``str``, as every value
    was before values became compact JSON, not a TypeError out of routing."""
    loop: dict[str, object] = {"id": "t-1"}
    loop["self"] = loop  # a circular value: JSON cannot write it either
    sent = {
        "day": datetime.date(2026, 1, 2),
        "amount": decimal.Decimal("1.50"),
        "nested": {"when": datetime.date(2026, 1, 2), "n": 1},
        "loop": loop,
        "keys": {(1, 2): "a tuple key"},
    }
    req = RouteRequest.from_input(
        {"messages": [{"role": "user", "content": "hi"}], "metadata": sent}
    )
    assert req.metadata["day"] == "2026-01-02"
    assert req.metadata["amount"] == "1.50"
    assert req.metadata["nested"] == str(sent["nested"])
    assert req.metadata["loop"] == str(loop)
    assert req.metadata["keys"] == str({(1, 2): "a tuple key"})


def test_content_parts_keep_text_and_drop_images() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is in"},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                    {"type": "text", "text": "this picture"},
                ],
            }
        ]
    }
    assert RouteRequest.from_input(body).text == "what is in\nthis picture"
    assert RouteRequest.from_input(body).has_images


def test_images_in_any_turn_count_and_text_does_not() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:..."}}
    earlier = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, image]},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": "what colour is it?"},
    ]
    assert RouteRequest.from_input({"messages": earlier}).has_images  # sent again
    text = [{"role": "user", "content": [{"type": "text", "text": "image_url"}]}]
    assert not RouteRequest.from_input({"messages": text}).has_images
    assert not RouteRequest.from_input({"messages": [{"role": "user", "content": "x"}]}).has_images
    assert not RouteRequest.from_input("a picture of a cat").has_images


def test_no_user_turn_routes_on_last_message() -> None:
    body = {"messages": [{"role": "system", "content": "summarise the news"}]}
    assert RouteRequest.from_input(body).text == "summarise the news"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "no 'messages'"),
        ({"messages": []}, "empty"),
        ({"messages": "hi"}, "must be a list"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"prompt": 5}, "'prompt' must be a string"),
        ({"prompt": ["a", "b"]}, "'prompt' must be a string"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]},
            "messages[0].content[0].text must be a string",
        ),
        ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content[0] must"),
    ],
)
def test_malformed_bodies_raise_routing_error(body: dict[str, object], message: str) -> None:
    with pytest.raises(RoutingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RouteRequest.from_input(body)


def test_wrong_type_raises() -> None:
    with pytest.raises(RoutingError):
        RouteRequest.from_input(42)  # type: ignore[arg-type]


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    # by script: Chinese a token a character (not a quarter), Russian two characters a
    # token, an emoji two tokens (docs/benchmarks.md "Pre-flight token estimates")
    assert estimate_tokens("请把这份合同翻译成英文") == 11
    assert estimate_tokens("Переведите") == 5
    assert estimate_tokens("🙂") == 2


def test_a_min_tokens_rule_sees_a_long_chinese_request() -> None:
    """3,000 Chinese characters are ~3,000 tokens, not the 750 that four characters a
    token made of them (so a rule for long requests missed them)."""
    req = RouteRequest.from_input("这是一份很长的合同。" * 300)
    assert req.estimated_tokens >= 3000
