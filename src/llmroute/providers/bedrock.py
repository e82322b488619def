"""`BedrockProvider`: Claude on Amazon Bedrock (InvokeModel and
InvokeModelWithResponseStream) behind the OpenAI chat-completions interface.

Bedrock takes Anthropic's Messages body, less ``model`` (in the URL) and ``stream`` (in
the path), plus ``anthropic_version`` (and ``anthropic_beta`` for the beta headers), so
the request and the answer are converted exactly as for kind ``anthropic``; a stream's
events come in AWS's event-stream framing, each chunk one Anthropic event, and go
through the same `StreamTranslator`. Credentials are read once, here: a Bedrock API key
(``Authorization: Bearer``), else static AWS keys that sign each request (SigV4).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from yarl import URL

from llmroute.dispatch.usage import usage_wanted
from llmroute.errors import ConfigError, ProviderError, identifier_code
from llmroute.providers._anthropic_convert import to_chat_completion, to_messages_request
from llmroute.providers._http import error_from_response
from llmroute.providers._transport import Framing, HttpTransport, Signer
from llmroute.providers.anthropic import StreamTranslator, sent_once_more, streamed_once_more
from llmroute.providers.aws_eventstream import EventStreamDecoder, EventStreamError, Message
from llmroute.providers.aws_sigv4 import AwsCredentials, sign
from llmroute.providers.base import Timeouts
from llmroute.registry.schema import (
    _HEADER_CONTROL,
    Provider,
    UnsendableCredential,
    env_headers,
)
from llmroute.sse import DONE, drain_after_end
from llmroute.untrusted_json import loads

__all__ = [
    "BEARER_ENV",
    "BEDROCK_VERSION",
    "BedrockProvider",
    "bedrock_error",
    "missing_credentials",
]

BEDROCK_VERSION = "bedrock-2023-05-31"
BEARER_ENV = "AWS_BEARER_TOKEN_BEDROCK"  # the variable AWS's SDKs read a Bedrock API key from
_KEY_ENVS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
_TOKEN_ENV = "AWS_SESSION_TOKEN"
_SERVICE = "bedrock"
# bedrock-runtime[-fips].<region>.amazonaws.com, and a VPC endpoint's
# vpce-...bedrock-runtime.<region>.vpce.amazonaws.com
_REGION_IN_HOST = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d+)\.")
# Bedrock's statuses for its exception types (x-amzn-errortype; in a stream, :exception-type)
_STATUS = {
    "ThrottlingException": 429,
    # an imported model being brought up: not the account's limit, but a 429 still, as
    # AWS sends it (its SDKs retry it): a chain of them is the client's 429, which its
    # client waits out, where an upstream's 503 without a wait would be a 502 saying not
    # to retry
    "ModelNotReadyException": 429,
    "ServiceQuotaExceededException": 429,
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "UnrecognizedClientException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelStreamErrorException": 424,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
# Claude's "prompt is too long: N tokens > M maximum", Bedrock's own "Input is too long
# for requested model."
_TOO_LONG = re.compile(r"too long|too many (input )?tokens|context (length|window)", re.I)


def _refuse_other_authorization(name: str, spec: Provider) -> None:
    """`ConfigError` naming the field for credentials the provider gives beside AWS's
    from the environment (a Bedrock API key, or keys that sign), which every request
    sends as its Authorization in their place: a base URL's ``user:password@``, or a
    ``headers_env`` Authorization (dropped for AWS's without a word). Only variable
    names are said, never a value."""
    aws = (
        f"every request sends AWS's own as its Authorization (a Bedrock API key from "
        f"{spec.api_key_env or BEARER_ENV}, or a SigV4 signature from {_KEY_ENVS[0]})"
    )
    if URL(spec.http_url).user is not None:
        raise ConfigError(
            f"provider {name!r}: its base_url carries credentials (user:password@), and "
            f"{aws}, which the transport sends in place of them: take them out of the "
            "base_url",
            field=f"providers.{name}.base_url",
        )
    for header, variable in spec.headers_env.items():
        if header.lower() == "authorization":
            raise ConfigError(
                f"provider {name!r}: headers_env sends an Authorization from {variable}, "
                f"and {aws}, which replaces it: drop it from headers_env, or, for a proxy "
                "that signs for the provider, leave AWS's credentials out of this "
                "process's environment",
                field=f"providers.{name}.headers_env.{header}",
            )


def _check_secret(name: str, secret: str) -> None:
    """`UnsendableCredential` at the provider for a secret key holding a control
    character (a file's last line break, read with it), as the variables sent in headers
    are checked (`check_credential_text`): it goes in no header, but keys each signature,
    and AWS refused every request signed with it. Named, never shown."""
    control = _HEADER_CONTROL.search(secret)
    if control is not None:
        raise UnsendableCredential(
            f"environment variable {_KEY_ENVS[1]} holds a control character "
            f"({control.group()!r}), which no AWS secret key holds: AWS refuses every "
            "request signed with it (a line break read from a file with it?); its value "
            "is not shown",
            field=f"providers.{name}",
        )


def unnamed_credentials(spec: Provider, environ: Mapping[str, str]) -> list[str]:
    """The variables the client sends in headers though the registry names none of
    them: AWS_BEARER_TOKEN_BEDROCK without `api_key_env`; else, with no bearer token,
    the signature's key id (in the Authorization) and session token."""
    if environ.get(spec.api_key_env or BEARER_ENV):
        return [] if spec.api_key_env else [BEARER_ENV]
    return [_KEY_ENVS[0], _TOKEN_ENV] if all(environ.get(var) for var in _KEY_ENVS) else []


class BedrockProvider:
    """One pooled HTTP session for a provider of kind ``bedrock``."""

    def __init__(
        self, name: str, spec: Provider, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        env = os.environ if environ is None else environ
        from_env = env_headers(spec.headers_env, env)
        headers = {**spec.headers, **from_env}
        betas = [v for k, v in headers.items() if k.lower() == "anthropic-beta"]
        self._betas = [b.strip() for value in betas for b in value.split(",") if b.strip()]
        headers = {k: v for k, v in headers.items() if k.lower() != "anthropic-beta"}
        signer: Signer | None = None
        key = env.get(spec.api_key_env or BEARER_ENV)
        if key:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers["Authorization"] = f"Bearer {key}"
        elif all(env.get(var) for var in _KEY_ENVS):
            _check_secret(name, env[_KEY_ENVS[1]])
            credentials = AwsCredentials(
                env[_KEY_ENVS[0]], env[_KEY_ENVS[1]], env.get(_TOKEN_ENV) or None
            )
            signer = _signer(credentials, _region(name, spec))
        if key or signer:
            _refuse_other_authorization(name, spec)
        sent = [key, env.get(_TOKEN_ENV), *from_env.values()]  # the session token is a header
        self._http = HttpTransport(
            name,
            spec.http_url.rstrip("/"),
            headers,
            sign=signer,
            errors=bedrock_error,
            secrets=sent,
        )

    async def complete(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        """The ``chat.completion`` for `body` (InvokeModel)."""
        payload = to_messages_request(self.name, model, body, first_party=False)
        path = _path(model, "invoke")
        data = await sent_once_more(
            payload, lambda sent: self._http.post_json(path, self._body(sent), timeouts)
        )
        if not isinstance(data.get("content"), list):
            raise ProviderError(self.name, "upstream answered without a content list")
        return to_chat_completion(data)

    async def stream(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> AsyncIterator[bytes]:
        """The answer's ``chat.completion.chunk`` events (InvokeModelWithResponseStream).
        A refusal of the thinking blocks is sent again without them only while nothing
        has gone out."""
        payload = to_messages_request(self.name, model, body, first_party=False)
        translator = StreamTranslator(self.name, include_usage=usage_wanted(body))
        events = streamed_once_more(
            payload, lambda sent: self._events(model, sent, translator, timeouts)
        )
        async with contextlib.aclosing(events):  # closed with this one, not when collected
            async for chunk in events:
                yield chunk
                if chunk == DONE:  # message_stop's: nothing after it is the answer's
                    await drain_after_end(events)
                    return
        if not translator.done:
            raise ProviderError(self.name, "upstream stream ended before message_stop")

    async def _events(
        self,
        model: str,
        payload: dict[str, Any],
        translator: StreamTranslator,
        timeouts: Timeouts,
    ) -> AsyncGenerator[bytes, None]:
        path = _path(model, "invoke-with-response-stream")
        framing = _framing(self.name)
        async with self._http.events(path, self._body(payload), timeouts, framing=framing) as ev:
            async for event in ev:
                for chunk in translator.feed(event):
                    yield chunk

    def _body(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Bedrock's body for a Messages API `payload`."""
        out = {k: v for k, v in payload.items() if k not in ("model", "stream")}
        out["anthropic_version"] = BEDROCK_VERSION
        if self._betas:
            out["anthropic_beta"] = self._betas
        return out

    async def aclose(self) -> None:
        await self._http.aclose()


def missing_credentials(spec: Provider, environ: Mapping[str, str]) -> str | None:
    """What to set when a provider of kind ``bedrock`` would send no credentials to AWS
    itself (a `base_url` elsewhere, a proxy, may sign for it); None when it has some."""
    if environ.get(spec.api_key_env or BEARER_ENV):
        return None
    if all(environ.get(var) for var in _KEY_ENVS):
        return None
    unset = [name for name in spec.headers_env.values() if not environ.get(name)]
    if unset:
        return unset[0]
    if not (URL(spec.http_url).host or "").endswith(".amazonaws.com"):
        return None  # not AWS itself: a proxy's business
    key = spec.api_key_env or BEARER_ENV
    return f"{key} (or {' and '.join(_KEY_ENVS)})"


def _region(name: str, spec: Provider) -> str:
    if spec.region is not None:
        return spec.region
    found = _REGION_IN_HOST.search(URL(spec.http_url).host or "")
    if found is None:
        raise ConfigError(
            f"provider {name!r} signs with AWS keys and needs the region they sign for; "
            "set region (its base_url does not say it)",
            field=f"providers.{name}.region",
        )
    return found.group(1)


def _signer(credentials: AwsCredentials, region: str) -> Signer:
    def signed(method: str, url: URL, body: bytes) -> Mapping[str, str]:
        return sign(method, url, body, credentials=credentials, region=region, service=_SERVICE)

    return signed


def _path(model: str, action: str) -> str:
    """``/model/<id>/<action>``: an ARN's ``/`` percent-encoded, ``:`` as it is (as AWS's
    own clients send them)."""
    return f"/model/{quote(model, safe=':')}/{action}"


def bedrock_error(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    in_stream: bool = False,
) -> ProviderError:
    """The error for a Bedrock error answer: ``{"message": ...}`` with its exception type
    in ``x-amzn-errortype`` (``ThrottlingException:http://internal.amazon.com/...``),
    read into the project's classes as other upstreams' errors are. `in_stream`: the
    exception came inside a stream's 200, with no status of its own (`status` is the one
    its type stands for): the message names the type, not an HTTP status."""
    noted = {k.lower(): v for k, v in headers.items()}  # as the headers read: any case
    # named in the message among the gateway's words: an exception's name, nothing else
    kind = identifier_code(noted.get("x-amzn-errortype", "").partition(":")[0]) or ""
    try:
        data = loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    message = ""
    if isinstance(data, dict):
        said = data.get("message", data.get("Message"))
        message = said if isinstance(said, str) else ""
    if not kind and isinstance(data, dict) and isinstance(data.get("error"), dict):
        return error_from_response(provider, status, headers, body)  # an Anthropic body
    code: str | None = kind or None
    if kind == "ValidationException" and _TOO_LONG.search(message):
        code = "context_length_exceeded"
    if kind == "ServiceQuotaExceededException":  # a 400, but a limit like throttling
        status = 429
    if "x-amzn-requestid" in noted and "x-request-id" not in noted:
        noted["x-request-id"] = noted["x-amzn-requestid"]  # Bedrock's request id
    answer = json.dumps({"error": {"message": message, "code": code}}).encode()
    sent_as = f"{kind or 'an exception'} in its stream" if in_stream else None
    if status != 424:
        return error_from_response(provider, status, noted, answer, sent_as=sent_as)
    # ModelErrorException: the model failed on the request, which another may not
    if sent_as is not None:
        failed = error_from_response(provider, 502, noted, answer, sent_as=sent_as)
        return ProviderError(provider, failed.parts, status=502, code=code)
    failed = error_from_response(provider, 502, noted, answer, in_answer=True)
    said, *rest = failed.parts  # the gateway's words first, then the upstream's
    named = f" ({kind})" if kind else ""
    said = said.replace("answered with error 502", f"returned HTTP 424{named}", 1)
    return ProviderError(provider, (said, *rest), status=502, code=code)


def _framing(provider: str) -> Framing:
    """AWS's event stream read as server-sent events (``data: <Anthropic event>``)."""

    async def events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        decoder = EventStreamDecoder()
        async for chunk in chunks:
            try:
                messages = decoder.feed(chunk)
            except EventStreamError as exc:
                said = f"upstream sent a broken event stream: {exc}"  # the decoder's words
                raise ProviderError(provider, (said,)) from None
            for message in messages:
                event = _event_of(provider, message)
                if event is not None:
                    yield event
        if decoder.pending:
            raise ProviderError(provider, "upstream event stream ended inside a message")

    return events


def _event_of(provider: str, message: Message) -> bytes | None:
    """One Anthropic event as a server-sent event, from a ``chunk`` message; the error an
    ``exception`` (or ``error``) message reports is raised; None for anything else."""
    kind = message.header(":message-type")
    if kind in ("exception", "error"):
        raise _stream_error(provider, message)
    if kind != "event" or message.header(":event-type") != "chunk":
        return None
    try:
        wrapped = loads(message.payload)
        raw = base64.b64decode(wrapped["bytes"], validate=True)
    except (ValueError, UnicodeDecodeError, TypeError, KeyError, binascii.Error):
        raise ProviderError(provider, "upstream sent a chunk that is not base64 JSON") from None
    # JSON holds line breaks only as whitespace: one data line, as the translator reads
    return b"data: " + raw.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n\n"


def _stream_error(provider: str, message: Message) -> ProviderError:
    """An exception sent inside the stream (after its 200): ``:exception-type`` such as
    ``throttlingException``, ``modelStreamErrorException``, with ``{"message": ...}``."""
    kind = message.header(":exception-type") or message.header(":error-code")
    kind = kind[:1].upper() + kind[1:]
    status = _STATUS.get(kind, 502)
    if message.header(":message-type") == "error":
        said = message.header(":error-message")
        body = json.dumps({"message": said}).encode()
    else:
        body = message.payload
    return bedrock_error(provider, status, {"x-amzn-errortype": kind}, body, in_stream=True)
