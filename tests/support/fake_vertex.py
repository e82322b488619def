"""A fake Vertex AI for Claude, and the fake Google OAuth2 token endpoint its tokens
come from: one real HTTP server on 127.0.0.1 in a thread.

``POST /token`` is Google's token endpoint for a service account: it takes the JWT
bearer grant google-auth sends, checks the assertion's RS256 signature with the
service account's public key and its claims (issuer, audience, the cloud-platform
scope, expiry), and issues ``ya29.fake-N`` for `FakeVertex.expires_in` seconds
(``refuse_tokens``: a 400 ``invalid_grant``, as for a deleted key; ``token_delay_s``:
after that long; ``token_tail``: each ending with it, as a broken server's may).

``POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}``
``:rawPredict`` (``:streamRawPredict``) checks the project and region the test expects,
the bearer token (one this server issued and has not `revoked`, or one of
`static_tokens`; else Google's 401), that the body names no model and carries
``anthropic_version: vertex-2023-10-16``, and then answers as the fake Anthropic API
does for that model (`fake_anthropic`: its faults, thinking signatures, streams).
``gstatus=403|404|429|503|400`` in the model name answers with Google's own error
wrapping (``{"error": {"code", "message", "status"}}``) instead; ``billing=1`` answers
the 403 of a project whose billing is disabled (its ``ErrorInfo`` reason
``BILLING_DISABLED``), and ``retry_delay=S`` gives a 429 Google's ``RetryInfo`` detail
(``"retryDelay": "Ss"``, as the Gemini API sends it; ``quote=1``: its message quotes
the last user text, as a validation error may); ``echo_token=1`` answers a 400
whose message repeats the bearer token the request carried.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fake_anthropic import _Handler, faults_of, quoting
from fake_upstream import serve_in_thread

PROJECT = "test-proj-1"
REGION = "us-east5"
CLIENT_EMAIL = f"gateway@{PROJECT}.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"
_PATH = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)"
    r"/publishers/anthropic/models/(?P<model>[^/:]+):(?P<method>rawPredict|streamRawPredict)$"
)
_GOOGLE_ERRORS = {
    400: ("INVALID_ARGUMENT", "Prompt is too long: 210000 tokens > 200000 maximum"),
    403: (
        "PERMISSION_DENIED",
        "Permission 'aiplatform.endpoints.predict' denied on resource "
        "'//aiplatform.googleapis.com/projects/{project}/locations/{region}/publishers/"
        "anthropic/models/{model}' (or it may not exist).",
    ),
    404: (
        "NOT_FOUND",
        "Publisher Model `projects/{project}/locations/{region}/publishers/anthropic/"
        "models/{model}` not found.",
    ),
    429: (
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model"
        " with base model: anthropic-claude. Please submit a quota increase request.",
    ),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
}
_BILLING_DISABLED = (
    "This API method requires billing to be enabled. Please enable billing on project "
    "#{number} by visiting https://console.developers.google.com/billing/enable?project="
    "{number} then retry. If you enabled billing for this project recently, wait a few "
    "minutes for the action to propagate to our systems and retry."
)
_PROJECT_NUMBER = "123456789012"
_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential."
)


@dataclass
class Predicted:
    project: str
    region: str
    model: str
    method: str
    token: str | None
    body: dict[str, Any]
    port: int = 0  # the client's: one per connection, so reused ones show


@dataclass
class FakeVertex:
    url: str
    key: rsa.RSAPrivateKey
    expires_in: int = 3600
    refuse_tokens: bool = False
    token_delay_s: float = 0.0  # how long the token endpoint takes to answer
    token_tail: str = ""  # what the tokens it issues end with (a broken server's "\n")
    issued: list[str] = field(default_factory=list)
    token_asks: int = 0  # token requests, answered or refused
    revoked: set[str] = field(default_factory=set)
    static_tokens: set[str] = field(default_factory=set)
    predicted: list[Predicted] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why each refused request was
    released: list[str] = field(default_factory=list)  # ``hold=1`` streams let go
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1/projects/{PROJECT}/locations/{REGION}"

    def credentials_file(self, folder: Path) -> Path:
        """A service account key file whose token_uri is this server."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        info = {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "fake-key-1",
            "private_key": pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "1234567890",
            "token_uri": self.token_uri,
        }
        path = folder / "service-account.json"
        path.write_text(json.dumps(info))
        return path

    def accepts(self, token: str | None) -> bool:
        with self.lock:
            if token in self.static_tokens:
                return True
            return token in self.issued and token not in self.revoked


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check_assertion(fake: FakeVertex, assertion: str) -> str | None:
    """Why Google would refuse the JWT bearer assertion, or None when it is good."""
    try:
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        header = json.loads(_b64(header_b64))
        claims = json.loads(_b64(claims_b64))
        signature = _b64(signature_b64)
    except ValueError:
        return "malformed assertion"
    if header.get("alg") != "RS256":
        return "not RS256"
    try:
        fake.key.public_key().verify(
            signature,
            f"{header_b64}.{claims_b64}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except Exception:  # cryptography's InvalidSignature
        return "Invalid JWT Signature."
    now = time.time()
    # google-auth addresses the assertion to Google's endpoint whatever the token_uri
    if claims.get("iss") != CLIENT_EMAIL or claims.get("aud") != GOOGLE_TOKEN_ENDPOINT:
        return "wrong issuer or audience"
    if SCOPE not in str(claims.get("scope", "")).split():
        return "no cloud-platform scope"
    if not claims.get("iat", 0) - 300 <= now < claims.get("exp", 0):
        return "expired assertion"
    return None


class _VertexHandler(_Handler):
    fake: FakeVertex

    def do_GET(self) -> None:
        self._google_error(404, "NOT_FOUND", f"no route {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        if self.path == "/token":
            self._token(raw)
            return
        match = _PATH.match(self.path)
        if match is None:
            self._google_error(404, "NOT_FOUND", f"no route {self.path}")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        auth = headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        body = json.loads(raw or b"{}")
        model = unquote(match["model"])
        with self.fake.lock:
            self.fake.predicted.append(
                Predicted(
                    match["project"],
                    match["region"],
                    model,
                    match["method"],
                    token,
                    body,
                    self.client_address[1],
                )
            )
        if not self.fake.accepts(token):
            self._refuse(401, "UNAUTHENTICATED", _UNAUTHENTICATED, "token")
            return
        if (match["project"], match["region"]) != (PROJECT, REGION):
            self._refuse(404, "NOT_FOUND", f"no project {match['project']}", "place")
            return
        if "model" in body or body.get("anthropic_version") != "vertex-2023-10-16":
            message = "anthropic_version: Input should be 'vertex-2023-10-16'"
            self._refuse(400, "INVALID_ARGUMENT", message, "body")
            return
        if (match["method"] == "streamRawPredict") != (body.get("stream") is True):
            self._refuse(400, "INVALID_ARGUMENT", "stream does not match the method", "method")
            return
        faults = faults_of(model)
        if "billing" in faults:
            self._google_error(
                403,
                "PERMISSION_DENIED",
                _BILLING_DISABLED.format(number=_PROJECT_NUMBER),
                [_error_info("BILLING_DISABLED")],
            )
            return
        if "echo_token" in faults:  # a proxy's "invalid ... TOKEN", the header it got
            self._google_error(400, "INVALID_ARGUMENT", f"token {token} is not valid here")
            return
        gstatus = faults.get("gstatus")
        if gstatus is not None:
            status = int(gstatus)
            kind, message = _GOOGLE_ERRORS[status]
            where = {"project": PROJECT, "region": REGION, "model": model.partition("?")[0]}
            details = []
            if "retry_delay" in faults:
                retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo"}
                details.append({**retry, "retryDelay": f"{faults['retry_delay']}s"})
            said = message.format(**where) + quoting(faults, body)
            self._google_error(status, kind, said, details)
            return
        self.answer({**body, "model": model}, headers)

    def released(self, model: str) -> None:
        with self.fake.lock:
            self.fake.released.append(model)

    def _refuse(self, status: int, kind: str, message: str, why: str) -> None:
        with self.fake.lock:
            self.fake.refused.append(why)
        self._google_error(status, kind, message)

    def _google_error(
        self, status: int, kind: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        error: dict[str, Any] = {"code": status, "message": message, "status": kind}
        if details:
            error["details"] = details
        self._send_json(status, {"error": error})

    def _token(self, raw: bytes) -> None:
        time.sleep(self.fake.token_delay_s)
        form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            self._send_json(400, {"error": "unsupported_grant_type"})
            return
        why = check_assertion(self.fake, form.get("assertion", ""))
        with self.fake.lock:
            self.fake.token_asks += 1
        if self.fake.refuse_tokens or why is not None:
            error = {"error": "invalid_grant", "error_description": why or "account deleted"}
            self._send_json(400, error)
            return
        with self.fake.lock:
            token = f"ya29.fake-{len(self.fake.issued) + 1}{self.fake.token_tail}"
            self.fake.issued.append(token)
        answer = {"access_token": token, "expires_in": self.fake.expires_in, "token_type": "Bearer"}
        self._send_json(200, answer)


@functools.cache
def _error_info(reason: str) -> dict[str, Any]:
    """Google's ``ErrorInfo`` detail for `reason`, as Vertex AI sends it."""
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {
            "consumer": f"projects/{_PROJECT_NUMBER}",
            "service": "aiplatform.googleapis.com",
        },
    }


def _service_account_key() -> rsa.RSAPrivateKey:
    """One RSA key per test process (making one takes a good part of a second)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@contextmanager
def fake_vertex() -> Iterator[FakeVertex]:
    fake = FakeVertex(url="", key=_service_account_key())
    handler = type("Handler", (_VertexHandler,), {"fake": fake})
    with serve_in_thread(handler) as url:
        fake.url = url
        yield fake


# google-auth reads these when first imported: nothing may try the GCE metadata server
# (or any host but 127.0.0.1) in a test
NO_GCE = {
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
}


@contextmanager
def without_metadata_server() -> Iterator[None]:
    """The environment set as `NO_GCE` says while the block runs, then restored."""
    saved = {name: os.environ.get(name) for name in NO_GCE}
    os.environ.update(NO_GCE)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
