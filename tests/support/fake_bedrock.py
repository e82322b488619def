"""A fake Amazon Bedrock runtime for Claude: a real HTTP server on 127.0.0.1 in a thread.

``POST /model/<modelId>/invoke`` answers as Claude on Bedrock does (the Anthropic
``message`` object); ``.../invoke-with-response-stream`` streams the same Anthropic
events as fake_anthropic.py, each as an AWS event-stream ``chunk`` message whose payload
is ``{"bytes": base64(event JSON)}``, the frames written in small pieces that split
them anywhere. The answering logic (echo, tool calls, thinking and its signature
checks) is fake_anthropic's; Anthropic's refusals come back as Bedrock sends them, a
400 ``ValidationException``.

Every request is authenticated as AWS would: with `FakeBedrock.key` a Bedrock API key
(``Authorization: Bearer``), else SigV4, whose signature the fake computes again (its
own small implementation, from the raw request target, the headers the signature names
and the body) with `FakeBedrock.secret`; a wrong one gets Bedrock's 403. The body must
carry ``anthropic_version: bedrock-2023-05-31`` and neither ``model`` nor ``stream``.

Faults by the model id, ``NAME?k=v`` (fake_anthropic's, and): ``throttle=1`` (429
ThrottlingException), ``too_long=1`` (400 "Input is too long for requested model."),
``denied=1`` (403 AccessDeniedException), ``model_error=1`` (424), ``retry_after=S``
(with a fault: its answer says ``Retry-After: S``, the name capitalised; ``quote=1``: its
message quotes the last user text, as alone a 400 ValidationException's), ``stream_throttle=1``
(a throttlingException message after the first text), ``bad_crc=1`` (the third frame's
CRC broken); ``fail=<ExceptionName>`` answers with that exception at the status and in
the words Bedrock's API reference and AWS give it (`FAILURES`: ``ServiceQuotaExceededException``
is a 400, ``ModelNotReadyException`` a 429, ``NoPayment`` Marketplace's
AccessDeniedException for an account without a valid payment method), and
``stream_fail=<exceptionName>`` sends that exception message as the stream's first (with
``quote=1`` quoting the last user text);
``hold=1`` (fake_anthropic's) holds a stream's body open after its last message until
its reader hangs up, which ``released`` records, or 60 s pass; ``lag=S`` (also
fake_anthropic's) ends a stream's body S seconds after its last message.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import quote, unquote

from fake_anthropic import (
    _message,
    _stop_reason,
    _thinking_refusal,
    faults_of,
    quoting,
    reply_blocks,
    stream_events,
    thinking_refusal,
)
from fake_upstream import hung_up_within, serve_in_thread

from llmroute.providers.aws_eventstream import encode_message

ACCESS_KEY = "AKIAFAKEBEDROCK0001"
SECRET = "fake/Secret+Key0123456789abcdefghijklmnop"
REGION = "us-east-1"
REQUEST_ID = "3f1c9a2e-0000-4000-8000-fakebedrock01"
_ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"


@dataclass
class Recorded:
    path: str
    model: str  # the model id, as the path carried it, decoded
    headers: dict[str, str]
    body: dict[str, Any]
    port: int = 0  # the client's: one per connection, so reused ones show


@dataclass
class FakeBedrock:
    url: str
    key: str | None = None  # a Bedrock API key; None: SigV4 with `secret`
    secret: str = SECRET
    requests: list[Recorded] = field(default_factory=list)
    released: list[str] = field(default_factory=list)  # ``hold=1`` streams let go
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def last(self) -> Recorded:
        return self.requests[-1]


def signature_problem(
    method: str, target: str, headers: dict[str, str], body: bytes, secret: str
) -> str | None:
    """Why a SigV4 request's signature is not the one `secret` gives, else None."""
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "Authorization header requires 'Credential' parameter."
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 ") :].split(","))
    _, day, region, service, _ = parts["Credential"].split("/")
    stamp = headers.get("x-amz-date", "")
    if (region, service) != (REGION, "bedrock") or not stamp.startswith(day):
        return "Credential should be scoped to a valid region and service."
    names = parts["SignedHeaders"].split(";")
    if "host" not in names or "x-amz-date" not in names:
        return "Signed headers must include host and x-amz-date."
    lines = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in names)
    path = quote(target.partition("?")[0], safe="/~")
    canonical = "\n".join(
        [method, path, "", lines, parts["SignedHeaders"], hashlib.sha256(body).hexdigest()]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
    key = f"AWS4{secret}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    if hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest() != parts["Signature"]:
        return (
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return None


def chunk_frame(event: dict[str, Any]) -> bytes:
    payload = {"bytes": base64.b64encode(json.dumps(event).encode()).decode()}
    headers = {":event-type": "chunk", ":content-type": "application/json"}
    return encode_message({**headers, ":message-type": "event"}, json.dumps(payload).encode())


def exception_frame(kind: str, message: str) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json"}
    headers[":message-type"] = "exception"
    return encode_message(headers, json.dumps({"message": message}).encode())


def _events_json(events: list[bytes]) -> list[dict[str, Any]]:
    """fake_anthropic's SSE events as their JSON (what Bedrock's chunks carry)."""
    out = []
    for event in events:
        data = next(line for line in event.decode().splitlines() if line.startswith("data: "))
        out.append(json.loads(data[len("data: ") :]))
    return out


FAILURES: dict[str, tuple[int, str, str]] = {
    "ThrottlingException": (
        429,
        "ThrottlingException",
        "Too many requests, please wait before trying again.",
    ),
    "ServiceQuotaExceededException": (
        400,
        "ServiceQuotaExceededException",
        "Your request exceeds the service quota for your account. You can view your quotas "
        "at Viewing service quotas. You can resubmit your request later.",
    ),
    "AccessDeniedException": (
        403,
        "AccessDeniedException",
        "You don't have access to the model with the specified model ID.",
    ),
    "NoPayment": (
        403,
        "AccessDeniedException",
        "Model access is denied due to INVALID_PAYMENT_INSTRUMENT:A valid payment instrument "
        "must be provided.. Your AWS Marketplace subscription for this model cannot be "
        "completed at this time. If you recently fixed this issue, try again after 15 minutes.",
    ),
    "ModelNotReadyException": (
        429,
        "ModelNotReadyException",
        "Model is not ready for inference. Wait and try your request again.",
    ),
    "ServiceUnavailableException": (503, "ServiceUnavailableException", "Service Unavailable"),
}


def _fault(faults: dict[str, str]) -> tuple[int, str, str] | None:
    if "fail" in faults:
        return FAILURES[faults["fail"]]
    if "throttle" in faults:
        return 429, "ThrottlingException", "Too many requests, please wait before trying again."
    if "too_long" in faults:
        return 400, "ValidationException", "Input is too long for requested model."
    if "denied" in faults:
        return (
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        )
    if "model_error" in faults:
        return 424, "ModelErrorException", "The model returned an error."
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    upstream: FakeBedrock

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        parts = self.path.split("/")  # "", "model", <id>, <action>
        model = unquote(parts[2]) if len(parts) == 4 and parts[1] == "model" else ""
        body = json.loads(raw or b"{}")
        with self.upstream.lock:
            self.upstream.requests.append(
                Recorded(self.path, model, headers, body, self.client_address[1])
            )
        refused = self._auth_problem(headers, raw)
        if refused is not None:
            self._error(403, *refused)
            return
        if not model or parts[3] not in ("invoke", "invoke-with-response-stream"):
            self._error(404, "UnknownOperationException", "")
            return
        problem = _body_problem(body)
        if problem is not None:
            self._error(400, "ValidationException", problem)
            return
        faults = faults_of(model)
        fault = _fault(faults)
        if fault is None and "quote" in faults and "stream_fail" not in faults:
            fault = 400, "ValidationException", "Malformed input request"
        if fault is not None:
            wait = {"Retry-After": faults["retry_after"]} if "retry_after" in faults else {}
            status, kind, message = fault
            self._error(status, kind, message + quoting(faults, body), extra=wait)
            return
        body = {**body, "model": model}  # as fake_anthropic's signatures name it
        said = _thinking_refusal(faults, body)
        refusal = said["error"]["message"] if said else thinking_refusal(body)
        if refusal is not None:
            self._error(400, "ValidationException", refusal)
            return
        blocks = reply_blocks(body, faults)
        stop = _stop_reason(blocks, faults)
        if parts[3] == "invoke":
            self._send(200, json.dumps(_message(model, blocks, stop)).encode(), {})
        else:
            events = _events_json(stream_events(model, blocks, stop))
            self._stream(events, faults, model, quoting(faults, body))

    def _auth_problem(self, headers: dict[str, str], raw: bytes) -> tuple[str, str] | None:
        if self.upstream.key is not None:
            if headers.get("authorization") != f"Bearer {self.upstream.key}":
                return "UnrecognizedClientException", "Invalid API Key format or value."
            return None
        said = signature_problem("POST", self.path, headers, raw, self.upstream.secret)
        return None if said is None else ("InvalidSignatureException", said)

    def _send(self, status: int, raw: bytes, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.send_header("x-amzn-requestid", REQUEST_ID)
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _error(
        self, status: int, kind: str, message: str, extra: dict[str, str] | None = None
    ) -> None:
        headers = {"x-amzn-errortype": kind + _ERROR_TYPE_SUFFIX, **(extra or {})}
        self._send(status, json.dumps({"message": message}).encode(), headers)

    def _stream(
        self, events: list[dict[str, Any]], faults: dict[str, str], model: str, quoted: str = ""
    ) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/vnd.amazon.eventstream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-amzn-requestid", REQUEST_ID)
        self.end_headers()
        frames = [chunk_frame(event) for event in events]
        if "stream_throttle" in faults:
            frames = [*frames[:4], exception_frame("throttlingException", "Too many tokens.")]
        if "stream_fail" in faults:
            said = f"{faults['stream_fail']} said{quoted}"
            frames = [exception_frame(faults["stream_fail"], said)]
        if "bad_crc" in faults:
            frames[2] = frames[2][:-1] + bytes([frames[2][-1] ^ 0xFF])
        data = b"".join(frames)
        for at in range(0, len(data), 61):  # pieces that split frames anywhere
            piece = data[at : at + 61]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.flush()
        if "hold" in faults and hung_up_within(self.connection, 60.0):
            with self.upstream.lock:
                self.upstream.released.append(model)
            self.close_connection = True
            return
        if "lag" in faults:
            time.sleep(float(faults["lag"]))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _body_problem(body: dict[str, Any]) -> str | None:
    """Bedrock's refusal of a body that is not Claude's Bedrock body."""
    for key in ("model", "stream"):
        if key in body:
            return f"Malformed input request: #: extraneous key [{key}] is not permitted"
    if body.get("anthropic_version") != "bedrock-2023-05-31":
        return "Malformed input request: #: required key [anthropic_version] not found"
    return None


@contextmanager
def fake_bedrock(key: str | None = None) -> Iterator[FakeBedrock]:
    upstream = FakeBedrock(url="", key=key)
    handler = type("Handler", (_Handler,), {"upstream": upstream})
    with serve_in_thread(handler) as url:
        upstream.url = url
        yield upstream
