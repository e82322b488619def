"""Upstream error statuses become ProviderErrors whose message carries the upstream's
request id (what its support asks for) and nothing a header could smuggle in."""

from __future__ import annotations

import json

import pytest

from llmroute.errors import RateLimited, UpstreamRejected
from llmroute.providers._http import error_from_response

BODY = json.dumps({"error": {"message": "boom", "type": "server_error"}}).encode()


@pytest.mark.parametrize(
    ("headers", "note"),
    [
        ({"x-request-id": "req_0123456789abcdef0123456789abcdef"}, "req_0123456789abcdef"),
        ({"request-id": "req_011CSHoEeqs5C3K2cjRXf6Zp"}, "req_011CSHoEeqs5C3K2cjRXf6Zp"),
    ],
)
def test_the_upstream_request_id_ends_the_message(headers: dict[str, str], note: str) -> None:
    error = error_from_response("up", 500, headers, BODY)
    assert error.status == 500 and "upstream returned HTTP 500" in str(error)
    assert "[upstream request " + note in str(error)


def test_every_kind_of_error_keeps_it() -> None:
    headers = {"x-request-id": "req_abc", "retry-after": "2"}
    limited = error_from_response("up", 429, headers, BODY)
    assert isinstance(limited, RateLimited) and "[upstream request req_abc]" in str(limited)
    secret = json.dumps({"error": {"message": "bad key sk-abcdefghijklmnop"}}).encode()
    denied = error_from_response("up", 401, headers, secret)
    assert isinstance(denied, UpstreamRejected)
    assert "[upstream request req_abc]" in str(denied) and "sk-" not in str(denied)


@pytest.mark.parametrize(
    "value", ["", "req id with spaces", "a" * 200, "req_1\nINJECTED log line", "<script>"]
)
def test_a_header_that_is_no_request_id_is_not_repeated(value: str) -> None:
    error = error_from_response("up", 502, {"x-request-id": value}, BODY)
    assert str(error).endswith("upstream returned HTTP 502")
