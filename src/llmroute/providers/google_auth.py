"""Google OAuth2 access tokens for the ``vertex`` kind: a fixed token from the
environment, or Application Default Credentials through google-auth (the ``vertex``
extra), refreshed before they expire.

google-auth's refresh is blocking I/O (a POST to Google's token endpoint, or the
metadata server's), so it runs in a thread, never on the event loop, and one refresh
serves every request that waits for a token meanwhile. The token travels only in the
``Authorization`` header: no error or log line here repeats it, or anything Google's
token endpoint said beyond its OAuth error code; and it is cut from the upstream
messages errors repeat (`withhold`) while a request or the source still holds it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any, Protocol

from llmroute.errors import ConfigError, ProviderError, ProviderMisconfigured, ProviderTimeout
from llmroute.providers._http import withhold
from llmroute.registry.schema import _unsendable

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "FAILED_REFRESH_HOLD_S",
    "REFRESH_MARGIN_S",
    "AdcTokens",
    "StaticToken",
    "TokenSource",
]

log = logging.getLogger(__name__)
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Google's tokens live an hour; one is renewed this long before it ends, so that no
# request leaves with a token that expires on its way. google-auth's own threshold:
# below the 4 minutes before expiry until which the metadata server (GCE, GKE, Cloud
# Run) hands out its cached token, which a longer margin would find stale at once and
# ask for again on every request.
REFRESH_MARGIN_S = 225.0
# A refresh that failed is the answer of every request for this long: broken credentials
# cost one call to Google's token endpoint (and one thread) a few seconds, not a request.
FAILED_REFRESH_HOLD_S = 5.0
_OAUTH_CODE = re.compile(r"[a-z_]{1,40}")
_NO_EXTRA = (
    "a vertex provider without api_key_env gets its token from Google's Application "
    "Default Credentials, which need google-auth: pip install 'llmroute[vertex]'"
)


class TokenSource(Protocol):
    """Where a provider's ``Authorization`` (and related) headers come from."""

    async def headers(self, wait_s: float) -> dict[str, str]:
        """The headers to send now; `wait_s` bounds a refresh it has to wait for."""
        ...

    async def renewed(self, stale: Mapping[str, str], wait_s: float) -> dict[str, str] | None:
        """Headers other than `stale` (which the upstream refused with a 401), or None
        when this source has no others to give."""
        ...


class StaticToken:
    """A token set in the environment (`api_key_env`), read once: sent as it is; a 401
    is not retried, since there is no other (the environment does not change while the
    process runs). None (the variable is unset) sends none, and the upstream's 401 says
    so."""

    def __init__(self, token: str | None) -> None:
        self._headers = _withheld({"Authorization": f"Bearer {token}"} if token else {})

    async def headers(self, wait_s: float) -> dict[str, str]:
        return self._headers

    async def renewed(self, stale: Mapping[str, str], wait_s: float) -> dict[str, str] | None:
        return None


class AdcTokens:
    """Application Default Credentials, as google-auth finds them in the process's
    environment: the file ``GOOGLE_APPLICATION_CREDENTIALS`` names (a service account
    key, a workload identity federation config), else ``gcloud auth
    application-default login``'s file, else the metadata server on Google Cloud.
    Loaded on first use, in a thread.

    `token_env`: whether the provider may take a token from `api_key_env` instead
    (a vertex provider may; ``auth: google`` may not), which a missing-credentials error
    then says. `clock` (seconds since the epoch) and `margin_s` are for tests."""

    def __init__(
        self,
        provider: str,
        *,
        token_env: bool = True,
        clock: Callable[[], float] = time.time,
        margin_s: float = REFRESH_MARGIN_S,
    ) -> None:
        try:
            import google.auth.transport.requests  # noqa: F401  (a missing extra stops the build)
        except ImportError as exc:
            raise ConfigError(f"provider {provider!r}: {_NO_EXTRA}") from exc
        self._provider = provider
        self._or_env = "; or set api_key_env" if token_env else ""
        self._clock = clock
        self._margin_s = margin_s
        self._lock = threading.Lock()  # the credentials object is not thread-safe
        self._credentials: Any = None
        self._request: Any = None
        self._headers: dict[str, str] | None = None
        self._expires_at: float | None = None  # None: Google said no expiry
        self._pending: asyncio.Task[dict[str, str]] | None = None
        self._failed: tuple[float, ProviderError] | None = None  # when, and how

    async def headers(self, wait_s: float) -> dict[str, str]:
        """The token's headers, renewed within the margin before it ends; while renewing
        fails (or takes longer than `wait_s`), the token in hand as long as it is valid:
        Google takes it until it ends, and a 401 renews it all the same."""
        if self._headers is not None and self._fresh():
            return self._headers
        try:
            return await self._refreshed(wait_s)
        except ProviderError:
            if self._headers is not None and self._unexpired():
                return self._headers
            raise

    async def renewed(self, stale: Mapping[str, str], wait_s: float) -> dict[str, str] | None:
        if self._headers is not None and self._headers != stale and self._fresh():
            return self._headers  # another request renewed it meanwhile
        return await self._refreshed(wait_s)

    def _fresh(self) -> bool:
        return self._expires_at is None or self._clock() < self._expires_at - self._margin_s

    def _unexpired(self) -> bool:
        return self._expires_at is None or self._clock() < self._expires_at

    async def _refreshed(self, wait_s: float) -> dict[str, str]:
        """Joins the refresh under way, or starts one: one for every request waiting; a
        refresh that failed within `FAILED_REFRESH_HOLD_S` is the answer as it is."""
        failed = self._failed
        if failed is not None and self._clock() < failed[0] + FAILED_REFRESH_HOLD_S:
            raise _again(failed[1])
        loop = asyncio.get_running_loop()
        pending = self._pending
        if pending is None or pending.done() or pending.get_loop() is not loop:
            pending = loop.create_task(self._refresh())
            pending.add_done_callback(_retrieved)
            self._pending = pending
        try:
            async with asyncio.timeout(wait_s):
                return await asyncio.shield(pending)  # a request given up stops no refresh
        except TimeoutError:
            raise ProviderTimeout(
                self._provider, f"no Google access token within {wait_s:g}s"
            ) from None
        except ProviderError as exc:  # the refresh's one object, which every waiter gets:
            raise _again(exc) from None  # each its own (the SDK names its call's decision)

    async def _refresh(self) -> dict[str, str]:
        try:
            headers, expires_at = await asyncio.to_thread(self._refresh_blocking)
        except ProviderError as exc:
            self._failed = (self._clock(), exc)
            if self._headers is not None and self._unexpired():
                log.warning("%s; the token in hand is sent until it ends", exc)
            raise
        sent = _withheld(headers)
        self._headers, self._expires_at, self._failed = sent, expires_at, None
        return sent

    def _refresh_blocking(self) -> tuple[dict[str, str], float | None]:
        import google.auth.exceptions

        try:
            with self._lock:
                if self._credentials is None:
                    self._credentials = self._load()
                credentials = self._credentials
                credentials.refresh(self._request)
                headers: dict[str, str] = {}
                credentials.apply(headers)  # Authorization, and a quota project if it has one
                expiry = credentials.expiry
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise ProviderMisconfigured(
                self._provider,
                "no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS to a "
                "credentials file, run gcloud auth application-default login, or run on "
                f"Google Cloud{self._or_env}) ({type(exc).__name__})",
                status=401,
                code="google_credentials",
            ) from None
        except google.auth.exceptions.RefreshError as exc:
            refused = (  # the gateway's words throughout; the OAuth code is an identifier
                f"Google refused to issue an access token{_oauth_code(exc)}: check the "
                f"credentials' account and key ({type(exc).__name__})"
            )
            raise ProviderMisconfigured(
                self._provider,
                (refused,),
                status=401,
                code="google_credentials",
            ) from None
        except google.auth.exceptions.GoogleAuthError as exc:  # TransportError and others
            raise ProviderError(
                self._provider, f"could not get a Google access token ({type(exc).__name__})"
            ) from None
        _check_sendable(self._provider, headers)
        expires_at = None if expiry is None else expiry.replace(tzinfo=UTC).timestamp()
        return headers, expires_at

    def _load(self) -> Any:
        import google.auth
        import google.auth.transport.requests

        self._request = google.auth.transport.requests.Request()
        return google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])[0]


def _check_sendable(provider: str, headers: Mapping[str, str]) -> None:
    """`ProviderMisconfigured` for a header Google's credentials gave that no HTTP header
    carries (a control character in the token, or in the quota project, as a broken
    token server or credentials file may give it), checked as a credential variable is
    (`check_credential_text`): aiohttp refused every request it went with, a ValueError
    (a bug's 500), and a probe took the token for good. The header is named, never its
    value."""
    for name, value in headers.items():
        unsent = _unsendable(value, ascii_only=False)
        if unsent is not None:
            header = "Authorization" if name.lower() == "authorization" else name
            raise ProviderMisconfigured(
                provider,
                f"Google's credentials gave an {header} that {unsent[0]}; check the "
                "credentials (the value is not shown)",
                status=401,
                code="google_credentials",
            )


class _Sent(dict[str, str]):
    """Headers a token source hands out: a dict that can be weakly referred to, the
    owner its credentials are withheld for (`withhold`)."""


def _withheld(headers: dict[str, str]) -> dict[str, str]:
    """`headers`, whose ``Authorization`` is cut from the upstream messages errors
    repeat while anything holds them: the source until the token is renewed, each
    request sent with it until it ends. An upstream echoing the token it got had it
    reach the client and the logs (the long-token pattern cuts only part of one: not
    its ``ya29.`` head, nor a short one a proxy issues); a renewed token's predecessor
    is let go once no request holds it, as a transport's keys are."""
    sent = _Sent(headers)
    withhold(*(v for k, v in headers.items() if k.lower() == "authorization"), owner=sent)
    return sent


def _oauth_code(exc: BaseException) -> str:
    """``" (invalid_grant)"``: the OAuth error code of a refused refresh, when it gave
    one; nothing else of the token endpoint's answer is repeated."""
    answer = exc.args[1] if len(exc.args) > 1 else None
    code = answer.get("error") if isinstance(answer, dict) else None
    return f" ({code})" if isinstance(code, str) and _OAUTH_CODE.fullmatch(code) else ""


def _again(exc: ProviderError) -> ProviderError:
    """A fresh `exc` to raise for another request (one raised object per request)."""
    return type(exc)(exc.provider, exc.parts, status=exc.status, code=exc.code)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Marks a refresh's failure as seen when every request that waited gave up."""
    if not task.cancelled():
        task.exception()
