"""`HttpTransport`: one pooled aiohttp session per provider.

aiohttp, not httpx, carries the upstream calls because they are on every request:
measured on this project's 2-core machine, an httpx ``AsyncClient`` POST cost about
2 ms of CPU against aiohttp's 0.25 ms (docs/benchmarks.md, "Gateway overhead"). The
session is created on first use, inside the event loop that will run it (aiohttp
sessions belong to one loop), and every failure leaves here as a `ProviderError`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import aiohttp.payload
from yarl import URL

from llmroute.errors import ConnectTimeout, ProviderError, ProviderTimeout
from llmroute.joined_bytes import JOINED_OFF_LOOP_BYTES, joined, off_loop
from llmroute.providers._http import (
    TRANSPORT_ERRORS,
    EventTooLarge,
    error_from_response,
    error_in_answer,
    iter_sse_events,
    network_error,
    withhold,
)
from llmroute.providers.base import Timeouts
from llmroute.telemetry.propagation import upstream_headers
from llmroute.untrusted_json import loads, loads_replacing
from llmroute.verbatim_json import VERBATIM_BYTES, read_verbatim, request_json

__all__ = ["ErrorMapper", "Framing", "HttpTransport", "Signer"]

# What signs one request (AWS SigV4): method, URL as sent, body -> headers to add.
Signer = Callable[[str, URL, bytes], Mapping[str, str]]
# An upstream's error answer (provider, status, headers, body) as a `ProviderError`.
ErrorMapper = Callable[[str, int, Mapping[str, str], bytes], ProviderError]
# A stream's body, in the chunks it came in, as whole server-sent events.
Framing = Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]

_JSON = {"content-type": "application/json"}
_READ_CHUNK = 64 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024  # a whole answer (2,048 large embeddings: ~120 MB)
_MAX_ERROR_BYTES = 1024 * 1024  # an error body: its message is all that is read
_STEPPED_BODY_BYTES = 1 << 20  # aiohttp's bound for bytes (`payload.TOO_LARGE_BYTES_BODY`)
# aiohttp 3.12+ writes a `BytesIO` from memory (its own `write_with_length`); older ones
# read each 64 KiB of it in the default executor, where blocking calls queue: bytes there
_BYTESIO_ON_LOOP = "write_with_length" in vars(aiohttp.payload.BytesIOPayload)
# a body this large is signed in a worker thread (SigV4 hashes it: ~0.8 ms a MiB, and
# hashlib lets go of the GIL); a smaller one's hash costs less than the hand-off
_SIGNED_OFF_LOOP_BYTES = 256 * 1024


def _basic(user: str, password: str | None, owner: object) -> str:
    """The ``Authorization: Basic`` value of a base URL's ``user:password@``, withheld
    from upstream messages (`withhold`) as the password is: an upstream echoing the
    header it got (a proxy's "invalid credentials Basic ...") would give the password
    away in base64, or the pair as it decoded it. Without a password the user is the
    credential (a token sent as ``https://TOKEN@host``), withheld too."""
    pair = f"{user}:{password or ''}"
    value = f"Basic {base64.b64encode(pair.encode()).decode()}"
    withhold(value, pair if password else user, owner=owner)
    return value


class HttpTransport:
    """`sign`, when given, signs each request (its URL then goes as written, already
    percent-encoded, so that what was signed is what is sent); `errors` reads an error
    answer (default: OpenAI's and Anthropic's bodies, `error_from_response`). `secrets`
    (the key, `headers_env` values) and the base URL's password are cut from the
    upstream messages errors repeat (`withhold`)."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        sign: Signer | None = None,
        errors: ErrorMapper = error_from_response,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self._provider = provider
        self._sign = sign
        self._errors = errors
        self._headers = {**_JSON, **headers}
        url = URL(base_url.rstrip("/"))
        withhold(*secrets, url.password, url.raw_password, owner=self)
        if url.user is not None:  # credentials in the URL become a header, never a log line
            if not any(name.lower() == "authorization" for name in self._headers):
                self._headers["Authorization"] = _basic(url.user, url.password, self)
            url = url.with_user(None)
        self._base_url = str(url)
        self._session: aiohttp.ClientSession | None = None

    async def _target(
        self,
        method: str,
        path: str,
        data: bytes | None,
        own: Mapping[str, str] | None = None,
    ) -> tuple[str | URL, Mapping[str, str] | None]:
        """The URL to send to and the request's own headers: `own` (a token renewed
        while the session lives), the trace context, a signature (a large body's in a
        worker thread, `_SIGNED_OFF_LOOP_BYTES`)."""
        headers = _with(own)
        if self._sign is None:
            return self._base_url + path, headers
        url = URL(self._base_url + path, encoded=True)
        body = data or b""
        if len(body) < _SIGNED_OFF_LOOP_BYTES:
            signature = self._sign(method, url, body)
        else:
            signature = await off_loop(self._sign, method, url, body)
        return url, {**(headers or {}), **signature}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=connector,
                auto_decompress=True,
                trust_env=False,
            )
        return self._session

    async def post_json(
        self,
        path: str,
        payload: dict[str, Any],
        timeouts: Timeouts,
        *,
        headers: Mapping[str, str] | None = None,
        verbatim: Collection[str] = (),
    ) -> dict[str, Any]:
        """POST `payload`; the answer's JSON object. Error statuses, transport failures
        and bodies that are not a JSON object raise `ProviderError`s. `headers` are this
        request's own (a token that is renewed while the session lives). The array
        members named in `verbatim` of a large answer are checked without holding the
        event loop and kept as they came (`verbatim_json`): the caller passes them on
        unchanged."""
        data = await request_json(payload)
        answer = await self._json("POST", path, data, timeouts, headers, verbatim)
        assert isinstance(answer, dict)  # arrays only where asked for
        return answer

    async def get_json(
        self, path: str, timeouts: Timeouts, *, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any] | list[Any]:
        """GET `path`; the answer's JSON object, or array (a model list some servers
        send bare, as Together's), failures raised as by `post_json`."""
        return await self._json("GET", path, None, timeouts, headers, arrays=True)

    async def _json(
        self,
        method: str,
        path: str,
        data: bytes | None,
        timeouts: Timeouts,
        headers: Mapping[str, str] | None = None,
        verbatim: Collection[str] = (),
        *,
        arrays: bool = False,
    ) -> dict[str, Any] | list[Any]:
        timeout = aiohttp.ClientTimeout(total=timeouts.total_s, connect=timeouts.connect_s)
        url, sent = await self._target(method, path, data, headers)
        try:
            async with self._client().request(
                method, url, data=_sent(data), timeout=timeout, headers=sent
            ) as response:
                limit = _MAX_ERROR_BYTES if response.status >= 400 else MAX_BODY_BYTES
                body = await self._body(response, limit)
                if response.status >= 400:
                    raise self._errors(self._provider, response.status, response.headers, body)
        except aiohttp.ConnectionTimeoutError:
            raise ConnectTimeout(
                self._provider, f"could not connect within {timeouts.connect_s:g}s"
            ) from None
        except TimeoutError:
            raise ProviderTimeout(
                self._provider, f"no answer within {timeouts.total_s:g}s"
            ) from None
        except TRANSPORT_ERRORS as exc:
            raise network_error(self._provider, exc) from None
        try:
            parsed: Any = await read_verbatim(body, verbatim)
            if parsed is None and len(body) >= VERBATIM_BYTES:
                # a large answer (logprobs): parsed in a worker thread, where the check
                # on each number lets the event loop take its turns meanwhile (the
                # joins', not the default executor, where blocking calls queue)
                parsed, _ = await off_loop(loads_replacing, body, finite=True)
            elif parsed is None:
                # NaN would make the client's answer unwritable; bytes that are not UTF-8
                # and unpaired surrogates are read as U+FFFD (`loads_replacing`)
                parsed, _ = loads_replacing(body, finite=True)
        except (ValueError, UnicodeDecodeError):
            raise ProviderError(
                self._provider, "upstream returned a body that is not JSON"
            ) from None
        if isinstance(parsed, dict) or (arrays and isinstance(parsed, list)):
            return parsed
        raise ProviderError(self._provider, "upstream returned JSON that is not an object")

    @asynccontextmanager
    async def events(
        self,
        path: str,
        payload: dict[str, Any],
        timeouts: Timeouts,
        *,
        framing: Framing = iter_sse_events,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """POST `payload` and yield its server-sent events, one whole event per item
        (`framing` cuts the body into them: another framing, such as AWS's event
        stream, yields them in that form). An error status raises before anything is
        yielded; a transport failure while reading raises from the iterator.
        `timeouts.total_s` bounds each read."""
        timeout = aiohttp.ClientTimeout(
            total=None, connect=timeouts.connect_s, sock_read=timeouts.total_s
        )
        data = await request_json(payload)
        url, sent = await self._target("POST", path, data, headers)
        try:
            response = await self._client().post(
                url, data=_sent(data), timeout=timeout, headers=sent
            )
        except aiohttp.ConnectionTimeoutError:
            raise ConnectTimeout(
                self._provider, f"could not connect within {timeouts.connect_s:g}s"
            ) from None
        except TRANSPORT_ERRORS as exc:
            raise network_error(self._provider, exc) from None
        try:
            if response.status >= 400:
                try:
                    body = await self._body(response, _MAX_ERROR_BYTES)
                except TRANSPORT_ERRORS as exc:
                    raise network_error(self._provider, exc) from None
                raise self._errors(self._provider, response.status, response.headers, body)
            head = b""
            if response.content_type == "application/json":
                head = await self._head(response)
                if head.lstrip().startswith(b"{"):
                    raise await self._json_not_events(response, head)
            yield self._read_events(response, head, framing)
        finally:
            response.release()

    async def _head(self, response: aiohttp.ClientResponse) -> bytes:
        """The body's first bytes: whether a stream labelled JSON is one JSON document,
        or events with the wrong label (read as events all the same)."""
        try:
            return await response.content.readany()
        except TRANSPORT_ERRORS as exc:
            raise network_error(self._provider, exc) from None

    async def _json_not_events(
        self, response: aiohttp.ClientResponse, head: bytes
    ) -> ProviderError:
        """The error for a stream request answered with one JSON document (whose first
        bytes were `head`): the error it holds (an error sent with a 200), else that the
        server did not stream (not passed on: the client expects server-sent events)."""
        try:
            body = head + await self._body(response, MAX_BODY_BYTES)
        except TRANSPORT_ERRORS as exc:
            return network_error(self._provider, exc)
        except ProviderError as exc:
            return exc
        try:
            failed = error_in_answer(self._provider, loads(body))
        except (ValueError, UnicodeDecodeError):
            failed = None
        return failed or ProviderError(
            self._provider, "upstream answered a stream request with JSON, not events"
        )

    async def _body(self, response: aiohttp.ClientResponse, limit: int) -> bytes:
        """The rest of the response's body; `ProviderError` past `limit` bytes (an error
        body is cut there instead: only its message is wanted)."""
        length = response.content_length  # of the bytes sent: compressed, if encoded
        if (
            length is not None
            and length <= min(limit, JOINED_OFF_LOOP_BYTES)
            and response.headers.get("Content-Encoding", "identity").lower() == "identity"
        ):
            return await response.read()  # the usual case: one read, as long as it says
        # the chunks as they came (unpacked, and counted so: 1 MiB of gzip can hold 1 GB),
        # made one in a worker thread (`joined`): aiohttp's `read` joins them on the
        # event loop (a 43 MB answer held it for the copy)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                if response.status >= 400:
                    return b"".join(chunks)[:limit]
                raise ProviderError(
                    self._provider,
                    f"upstream answered with more than {limit / (1 << 20):g} MiB",
                )
        return await joined(chunks)

    async def _read_events(
        self, response: aiohttp.ClientResponse, head: bytes, framing: Framing
    ) -> AsyncIterator[bytes]:
        """The response's events; `head`, bytes of it already read, come first."""
        chunks = _after(head, response) if head else response.content.iter_chunked(_READ_CHUNK)
        try:
            async for event in framing(chunks):
                yield event
        except TRANSPORT_ERRORS as exc:
            raise network_error(self._provider, exc) from None
        except EventTooLarge as exc:
            raise ProviderError(self._provider, f"upstream sent {exc}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _with(headers: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """A request's own headers, and the trace headers of the call it is part of."""
    traced = upstream_headers()
    if headers is None:
        return traced
    return {**headers, **traced} if traced else headers


def _sent(data: bytes | None) -> bytes | io.BytesIO | None:
    """A request's body as aiohttp takes it: past 1 MiB a `BytesIO` (of the same bytes,
    not a copy), which it writes 64 KiB at a time, the event loop let run between; as
    bytes, one call hands all of it to the socket (what it cannot send copied into the
    transport's buffer) and aiohttp warns that this may hold the event loop."""
    if data is None or len(data) <= _STEPPED_BODY_BYTES or not _BYTESIO_ON_LOOP:
        return data
    return io.BytesIO(data)


async def _after(head: bytes, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """`head`, then the rest of the response's body in chunks."""
    if head:
        yield head
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        yield chunk
