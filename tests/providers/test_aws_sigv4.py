"""The SigV4 signer against AWS's published Signature Version 4 test suite
(docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html; the same vectors
as aws-c-auth's and aws-sdk-js's suite fixtures): its example credentials, 2015-08-30
12:36:00 UTC, region us-east-1, service ``service``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from yarl import URL

from llmroute.providers.aws_sigv4 import AwsCredentials, canonical_request, sign

SUITE = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
NOW = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
STS_TOKEN = (
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRX"
    "mxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburE"
    "Dy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkU"
    "L64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
)
SCOPE = "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"


@pytest.mark.parametrize(
    ("name", "method", "url", "body", "headers", "credentials", "authorization"),
    [
        (
            "get-vanilla",
            "GET",
            "https://example.amazonaws.com/",
            b"",
            {},
            SUITE,
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "post-vanilla",
            "POST",
            "https://example.amazonaws.com/",
            b"",
            {},
            SUITE,
            "SignedHeaders=host;x-amz-date, "
            "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            b"",
            {},
            SUITE,
            "SignedHeaders=host;x-amz-date, "
            "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "post-x-www-form-urlencoded",
            "POST",
            "https://example.amazonaws.com/",
            b"Param1=value1",
            {"Content-Type": "application/x-www-form-urlencoded"},
            SUITE,
            "SignedHeaders=content-type;host;x-amz-date, "
            "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        ),
        (
            "post-sts-token/post-sts-header-before",
            "POST",
            "https://example.amazonaws.com/",
            b"",
            {},
            AwsCredentials(SUITE.access_key_id, SUITE.secret_access_key, STS_TOKEN),
            "SignedHeaders=host;x-amz-date;x-amz-security-token, "
            "Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
        ),
    ],
)
def test_the_aws_test_suite(
    name: str,
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    credentials: AwsCredentials,
    authorization: str,
) -> None:
    signed = sign(
        method,
        URL(url),
        body,
        credentials=credentials,
        region="us-east-1",
        service="service",
        now=NOW,
        headers=headers,
    )
    assert signed["authorization"] == f"AWS4-HMAC-SHA256 {SCOPE}, {authorization}", name
    assert signed["x-amz-date"] == "20150830T123600Z"
    assert signed["host"] == "example.amazonaws.com"


def test_get_vanillas_canonical_request_is_the_suites() -> None:
    request, signed = canonical_request(
        "GET",
        URL("https://example.amazonaws.com/"),
        {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"},
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    )
    assert signed == "host;x-amz-date"
    assert request == (
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
        "host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_a_model_ids_encoded_path_is_encoded_again_and_a_port_is_in_the_host() -> None:
    """Bedrock's path carries a model id (``:``, an ARN's ``%2F``): every service but S3
    signs the path encoded once more; a non-default port is part of ``Host``."""
    url = URL("http://127.0.0.1:8443/model/arn:aws:bedrock:x%2Fy/invoke", encoded=True)
    request, _ = canonical_request("POST", url, {}, "-")
    assert request.splitlines()[1] == "/model/arn%3Aaws%3Abedrock%3Ax%252Fy/invoke"
    signed = sign("POST", url, b"{}", credentials=SUITE, region="eu-west-1", service="bedrock")
    assert signed["host"] == "127.0.0.1:8443"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://[::1]:8080/model/m/invoke", "[::1]:8080"),
        ("https://[2001:db8::1]/x", "[2001:db8::1]"),
    ],
)
def test_an_ipv6_host_is_signed_and_sent_in_its_brackets(url: str, host: str) -> None:
    """The signed ``Host`` is sent as it is: an IPv6 address without its brackets is no
    valid header (``::1:8080``), which a proxy refuses or reads as another host."""
    signed = sign(
        "POST",
        URL(url, encoded=True),
        b"{}",
        credentials=SUITE,
        region="us-east-1",
        service="bedrock",
    )
    assert signed["host"] == host


def test_the_credentials_repr_holds_no_secret() -> None:
    text = repr(AwsCredentials("AKIDEXAMPLE", "the-secret-key", "the-session-token"))
    assert "the-secret-key" not in text and "the-session-token" not in text
