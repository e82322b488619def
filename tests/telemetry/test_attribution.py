"""Attribution: the end user a body names and the tags a header carries, and the rules a
tags header must keep (what the gateway refuses with a 400)."""

from __future__ import annotations

import pytest

from llmroute.telemetry.attribution import MAX_END_USER, MAX_TAGS, end_user_of, parse_tags


def test_the_end_user_prefers_safety_identifier_and_is_bounded() -> None:
    assert end_user_of({"user": "u-1"}) == "u-1"
    assert end_user_of({"user": "u-1", "safety_identifier": "sid-9"}) == "sid-9"
    assert end_user_of({"user": "  "}) is None
    assert end_user_of({"user": 42}) is None  # not ours to fix: the upstream refuses it
    assert end_user_of({}) is None
    assert end_user_of({"user": "x" * 1000}) == "x" * MAX_END_USER


def test_tags_are_split_trimmed_and_deduplicated_in_order() -> None:
    assert parse_tags(None) == ()
    assert parse_tags("") == ()
    assert parse_tags(" team:search , app=web,team:search,, ") == ("team:search", "app=web")
    assert parse_tags("env/prod,u@corp,v1.2+rc-3") == ("env/prod", "u@corp", "v1.2+rc-3")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("team search", "letters, digits"),
        ("-leading", "starting with a letter or digit"),
        ("über", "letters, digits"),
        ("a\tb", "letters, digits"),
        ("x" * 65, "at most 64 characters, got 65"),
        (",".join(f"t{i}" for i in range(MAX_TAGS + 1)), f"at most {MAX_TAGS} tags, got 11"),
    ],
)
def test_a_header_that_breaks_the_rules_says_which(header: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_tags(header)
    assert message in str(caught.value)
