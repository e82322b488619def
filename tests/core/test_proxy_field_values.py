"""`llmroute.proxy_fields`: a body's tags, what of it an upstream is sent, and the
LiteLLM fields refused (by the SDK too: `check_chat_body`)."""

from __future__ import annotations

from typing import Any

import pytest

from llmroute.chat_checks import check_chat_body
from llmroute.errors import InvalidRequest
from llmroute.proxy_fields import body_tags, metadata_fault, unrouted_body, without_proxy_fields

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
        ({"litellm_metadata": {"tags": ["a"], "trace_id": "t"}}, {}),  # the gateway's alone
        (
            {"litellm_metadata": None, "metadata": {"k": "v"}, "store": True},
            {"metadata": {"k": "v"}, "store": True},
        ),
    ],
)
def test_an_upstream_gets_only_what_openai_takes(
    body: dict[str, Any], kept: dict[str, Any]
) -> None:
    assert without_proxy_fields({"model": "m", **body}) == {"model": "m", **kept}


def test_tags_come_from_litellm_metadata_too_whatever_the_apis_metadata() -> None:
    body = {"tags": ["a"], "metadata": {"tags": ["b"]}, "litellm_metadata": {"tags": ["c", "a"]}}
    assert body_tags(body) == ("a", "b", "c")
    assert body_tags(body, in_metadata=False) == ("a", "c")  # Responses: metadata is OpenAI's
    assert body_tags({"litellm_metadata": {"trace_id": "t"}}) == ()
    assert body_tags({"litellm_metadata": None}) == ()


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
        ({"litellm_metadata": "t"}, "litellm_metadata"),
        ({"litellm_metadata": {"tags": "a"}}, "litellm_metadata.tags"),
    ],
)
def test_the_sdks_checks_refuse_them(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_chat_body({"messages": HI, **extra})
    assert refused.value.param == param and "sk-123" not in str(refused.value)


def test_null_proxy_fields_are_fields_left_out() -> None:
    check_chat_body({"messages": HI, "fallbacks": None, "tags": None, "metadata": None})


def test_a_null_litellm_field_is_left_out_of_what_is_sent() -> None:
    """``null`` is a field left out (gateway.md): an OpenAI upstream refuses a key it does
    not know whatever its value (``Unrecognized request argument supplied``)."""
    body = {"model": "m", "fallbacks": None, "num_retries": None, "user": None}
    assert without_proxy_fields(body) == {"model": "m", "user": None}


def test_tags_in_metadata_leave_the_rest_of_it_to_go_on_with_store() -> None:
    """LiteLLM's tags ride in ``metadata``; the rest of it, OpenAI's string pairs, goes on
    to a ``store: true`` request as it would without them (only the tags are the
    gateway's)."""
    body = {"model": "m", "store": True, "metadata": {"k": "v", "tags": ["a"]}}
    assert without_proxy_fields(body) == {"model": "m", "store": True, "metadata": {"k": "v"}}
    only_tags = {"model": "m", "store": True, "metadata": {"tags": ["a"]}}
    assert without_proxy_fields(only_tags) == {"model": "m", "store": True}
    # a string 'tags' is OpenAI metadata like any other value
    kept = {"model": "m", "store": True, "metadata": {"tags": "a"}}
    assert without_proxy_fields(kept) is kept


SIX = [f"b{i}" for i in range(6)]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tags": ["ok"], "metadata": {"tags": ["bad tag"]}}, "metadata.tags"),
        ({"tags": ["bad tag"], "metadata": {"tags": ["ok"]}}, "tags"),
        ({"tags": [f"a{i}" for i in range(6)], "metadata": {"tags": SIX}}, "tags"),  # 12 in all
        (
            {"metadata": {"tags": ["ok"]}, "litellm_metadata": {"tags": ["bad tag"]}},
            "litellm_metadata.tags",
        ),
        ({"litellm_metadata": {"tags": [f"a{i}" for i in range(11)]}}, "litellm_metadata.tags"),
        (
            {
                "metadata": {"tags": SIX},
                "litellm_metadata": {"tags": ["c1", "c2", "c3", "c4", "c5"]},
            },
            "metadata.tags",
        ),
    ],
)
def test_a_bad_tag_is_named_by_the_field_that_holds_it(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        body_tags(body)
    assert refused.value.param == param and refused.value.message.startswith(f"'{param}'")


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({"input": "x"}, {"input": "x"}),
        ({"input": "x", "tags": ["a"]}, {"input": "x"}),
        ({"input": "x", "metadata": {"tags": ["a"]}}, {"input": "x"}),
        ({"input": "x", "metadata": {"tags": ["a"], "k": 1}}, {"input": "x"}),
        ({"input": "x", "metadata": {"tags": "v"}}, {"input": "x"}),
        ({"input": "x", "fallbacks": None, "api_key": None}, {"input": "x"}),
        ({"input": "x", "litellm_metadata": {"tags": ["a"], "k": 1}}, {"input": "x"}),
        (
            {"input": "x", "dimensions": 8, "user": "u"},
            {"input": "x", "dimensions": 8, "user": "u"},
        ),
    ],
)
def test_an_embeddings_upstream_gets_the_body_less_litellms_part(
    body: dict[str, Any], sent: dict[str, Any]
) -> None:
    """No embeddings or rerank API has a ``metadata`` (OpenAI's refuses one): none of
    it goes on; the API's own fields do."""
    assert unrouted_body(body) == sent
    if body == sent:
        assert unrouted_body(body) is body


@pytest.mark.parametrize(
    ("metadata", "fault"),
    [
        ({"a": "b"}, None),
        ({f"k{i}": "v" for i in range(17)}, "'metadata' has 17 keys: at most 16"),
        ({"k" * 65: "v"}, "'metadata' key 'kkkk"),
        ({"on": True}, "'metadata.on' must be a string, not a boolean"),
        ({"n": 1.5}, "'metadata.n' must be a string, not a number"),
        ({"trace": {"id": 1}}, "'metadata.trace' must be a string, not an object"),
        ({"list": ["x"]}, "'metadata.list' must be a string, not an array"),
        ({"none": None}, "'metadata.none' must be a string, not null"),
        ({"long": "s" * 513}, "'metadata.long' is longer than 512 characters"),
    ],
)
def test_a_metadata_fault_names_the_key_not_the_value(
    metadata: dict[str, Any], fault: str | None
) -> None:
    said = metadata_fault(metadata)
    if fault is None:
        assert said is None
        return
    assert said is not None and said.startswith(fault), said
    assert "sss" not in said  # a value is never echoed: it may be an e-mail address
