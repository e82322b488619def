"""AWS Signature Version 4 for the requests a provider sends to an AWS service (Amazon
Bedrock): the ``Authorization`` header from static credentials, with hashlib and hmac
alone, so that reaching Claude on Bedrock needs neither boto3 nor botocore.

Only what a JSON POST to one host needs: the header form (not presigned URLs), the
canonical URI encoded once more as every service but S3 wants it, and a session token
signed with the rest (``X-Amz-Security-Token``). Checked against AWS's published
Signature Version 4 test suite (tests/providers/test_aws_sigv4.py).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

from yarl import URL

__all__ = ["AwsCredentials", "canonical_request", "sign"]

_ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """An access key pair, and the session token of temporary credentials. The secret and
    the token are left out of ``repr``, so a traceback or a log line never holds them."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def host_of(url: URL) -> str:
    """The ``Host`` header aiohttp sends for `url`: the host (an IPv6 address in its
    brackets), and its port unless it is the scheme's default."""
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return host if url.is_default_port() else f"{host}:{url.port}"


def canonical_request(
    method: str, url: URL, headers: Mapping[str, str], payload_hash: str
) -> tuple[str, str]:
    """The canonical request of AWS's step 1, and its signed header names (``a;b;c``).
    `url` is the URL as sent (its path already percent-encoded); `headers` are the ones
    to sign, their names in any case."""
    path = quote(url.raw_path or "/", safe="/~")
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
        for k, v in url.query.items()  # decoded, then encoded AWS's way
    )
    query = "&".join(f"{k}={v}" for k, v in pairs)
    canonical = sorted((name.lower(), " ".join(value.split())) for name, value in headers.items())
    signed = ";".join(name for name, _ in canonical)
    lines = "".join(f"{name}:{value}\n" for name, value in canonical)
    return f"{method}\n{path}\n{query}\n{lines}\n{signed}\n{payload_hash}", signed


def sign(
    method: str,
    url: URL,
    body: bytes,
    *,
    credentials: AwsCredentials,
    region: str,
    service: str,
    now: datetime | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers that sign one request: ``Host``, ``X-Amz-Date``, the session token
    when there is one, and ``Authorization``. `headers` are more headers to sign (sent
    by the caller too)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    signed_headers = {"host": host_of(url), "x-amz-date": stamp, **(headers or {})}
    if credentials.session_token:
        signed_headers["x-amz-security-token"] = credentials.session_token
    payload_hash = hashlib.sha256(body).hexdigest()
    request, signed = canonical_request(method, url, signed_headers, payload_hash)
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join((_ALGORITHM, stamp, scope, hashlib.sha256(request.encode()).hexdigest()))
    key = _hmac(f"AWS4{credentials.secret_access_key}".encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = dict(signed_headers)
    out["authorization"] = (
        f"{_ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return out


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()
