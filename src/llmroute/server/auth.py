"""Client keys for the gateway (the registry's ``auth:`` section).

`KeyTable` holds the SHA-256 of each key (read from its environment variable when the
registry loads, or given as ``sha256`` in the file); a presented key is hashed and looked
up, so no key is kept or compared in the clear. `RequireKey` is the ASGI middleware that
runs after `PinGateway` and checks every request against the table of the gateway it
was pinned to, so a registry reload that adds or removes a key applies to the next
request. Without an ``auth:`` section nothing is checked.

Where a key may be presented: ``Authorization: Bearer KEY`` (what OpenAI clients send),
``x-api-key: KEY`` (Anthropic's clients) or, on /dashboard and /metrics only,
``Authorization: Basic`` with the key as password (what a browser sends after its login
prompt). A browser sends Basic credentials it has cached by itself, on requests other
sites' pages make (a form posted to /v1/chat/completions), so anywhere else they would
let any page the operator visits spend on the admin key. /health, /ready and
/favicon.ico never need one; /dashboard and /metrics need an ``admin`` key
(``public_metrics`` opens /metrics). A key with ``rpm`` is limited to that many
requests a minute on the /v1 endpoints, one with ``tpm`` to that many tokens a minute,
counted where ``dispatch.limits`` says (429 beyond, with Retry-After); their responses
carry OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import math
import os
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmroute.deadline import NEVER, Deadline
from llmroute.dispatch.budgets import Payer, paid_by
from llmroute.errors import ConfigError
from llmroute.money import usd, usd_figure
from llmroute.registry.schema import ApiKey, AuthSettings
from llmroute.server.errors import NO_RETRY, GatewayError, speaks_anthropic
from llmroute.server.messages_convert import error_response
from llmroute.server.root_path import asked_path, paths_as_asked
from llmroute.state.limits import RateLimits
from llmroute.telemetry.metrics import GatewayMetrics
from llmroute.telemetry.record import DecisionRecord

if TYPE_CHECKING:
    from llmroute.server.state import Gateway

__all__ = [
    "COHERE_RERANK_PATH",
    "Charges",
    "KeyTable",
    "RequireKey",
    "account_of",
    "api_key_of",
    "check_model",
    "key_of",
    "let_in_as",
    "payer_of",
    "presented_key",
]

log = logging.getLogger("llmroute.server")

# /favicon.ico: what a browser asks for by itself beside any page it shows (the JSON of
# /dashboard/data, /metrics): refused, it would make the browser drop the admin key it
# was given for the dashboard and ask for it again. There is no icon: a 404, unchecked.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/favicon.ico"})
MIN_KEY_LENGTH = 16  # keys are hashed without salt: a short one is guessable from its hash
ADMIN_PREFIXES = ("/dashboard", "/metrics")
KEY_INFO_PATH = "/v1/key"  # a key's own limits and spending: counted against neither
COHERE_RERANK_PATH = "/v2/rerank"  # the one API path outside /v1: Cohere's clients post here
_SCOPE_KEY = "llmroute.api_key"  # the name of the request's key, in its ASGI scope
_REASONS = {403: "forbidden", 429: "rate_limited"}


def _reason(error: GatewayError) -> str:
    """The ``auth_rejected_total`` label of a rejection."""
    if error.status == 401:
        return "missing" if error.message.startswith("missing") else "invalid"
    return _REASONS.get(error.status, "invalid")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class KeyTable:
    settings: AuthSettings
    by_digest: Mapping[bytes, ApiKey]

    @classmethod
    def build(cls, settings: AuthSettings, environ: Mapping[str, str] | None = None) -> KeyTable:
        """Hash every key; `ConfigError` (one line, naming the variable, never a value)
        when a ``key_env`` variable is unset or empty. Its `field` is the key's path, for
        `LoadedRegistry.at` to name the file's line."""
        env = os.environ if environ is None else environ
        table: dict[bytes, ApiKey] = {}
        for i, key in enumerate(settings.keys):
            for digest in _digests(key, env, f"auth.keys[{i}]"):
                if digest in table:
                    other = table[digest].name
                    raise ConfigError(
                        f"auth.keys {key.name!r} lists the same key twice"
                        if other == key.name
                        else f"auth.keys {key.name!r} has the same key as {other!r}",
                        field=f"auth.keys[{i}]",
                    )
                table[digest] = key
        return cls(settings, table)

    def find(self, presented: str) -> ApiKey | None:
        return self.by_digest.get(_digest(presented))


def _digests(key: ApiKey, env: Mapping[str, str], where: str) -> list[bytes]:
    """The SHA-256 of each of the key's values (several while it is being rotated)."""
    if key.sha256 is not None:
        return [bytes.fromhex(h) for h in key.sha256]
    out = []
    for name in key.key_env or ():
        value = env.get(name, "").strip()
        if not value:
            raise ConfigError(
                f"auth.keys {key.name!r}: environment variable {name} is not set (or "
                "empty); set it to the key, or give the key's sha256 instead",
                field=f"{where}.key_env",
            )
        if len(value) < MIN_KEY_LENGTH:
            raise ConfigError(
                f"auth.keys {key.name!r}: the key in {name} is shorter than "
                f"{MIN_KEY_LENGTH} characters; use a random one (e.g. openssl rand -hex 24)",
                field=f"{where}.key_env",
            )
        out.append(_digest(value))
    return out


_KEY_HEADERS = frozenset({"authorization", "x-api-key"})


def presented_key(headers: Mapping[str, str], *, basic: bool = True) -> str | None:
    """The key a request carries, if any (see the module docstring for where); Basic
    credentials only count with `basic`."""
    authorization = headers.get("authorization", "").strip()
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip() and basic:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        password = decoded.partition(":")[2]
        return password or None
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


def api_key_of(scope: Scope) -> ApiKey | None:
    """The key the request was let in with (None without auth)."""
    key = scope.get(_SCOPE_KEY)
    return key if isinstance(key, ApiKey) else None


def let_in_as(scope: Scope, key: ApiKey | None) -> None:
    """Mark `scope` as let in with `key`: for work the gateway does on a key's behalf
    without a request of its own (a batch taken over by the sweep)."""
    scope[_SCOPE_KEY] = key


def key_of(scope: Scope) -> str | None:
    """The name of the key the request was let in with (None without auth)."""
    key = api_key_of(scope)
    return key.name if key is not None else None


class RequireKey:
    """ASGI middleware: 401 without a known key, 403 for a non-admin key on an admin
    path, 429 past the key's ``rpm`` or ``tpm``; OpenAI's error format, Anthropic's on
    ``/v1/messages``."""

    def __init__(self, app: ASGIApp) -> None:
        from llmroute.server.state import pinned  # here: server.state imports this module

        self.app = app
        self._pinned = pinned

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        gateway = self._pinned(scope)
        table = gateway.auth if gateway is not None else None
        if (
            gateway is None
            or table is None
            or (scope["path"].startswith("/metrics") and table.settings.public_metrics)
        ):
            await self.app(scope, receive, send)
            return
        try:
            key = await self._check(scope, table, gateway)
        except GatewayError as error:
            metrics = getattr(scope["app"].state, "metrics", None)
            if isinstance(metrics, GatewayMetrics):
                known = scope.pop(_SCOPE_KEY, None)  # set once the key was found
                client = known.name if isinstance(known, ApiKey) else None
                metrics.auth_rejected(_reason(error), client, error.status)
            send = _with_limit_headers(scope, send)
            error.message = paths_as_asked(error.message, scope)
            if speaks_anthropic(scope):  # /v1/messages, count_tokens, models.list
                await error_response(error)(scope, receive, send)
            else:
                await error.response()(scope, receive, send)
            return
        scope[_SCOPE_KEY] = key
        with paid_by(payer_of(key)):  # every call made for the request, and its tasks
            await self.app(scope, receive, _with_limit_headers(scope, send))

    @staticmethod
    async def _check(scope: Scope, table: KeyTable, gateway: Gateway) -> ApiKey:
        path: str = scope["path"]
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            if name in _KEY_HEADERS and headers.get(name, value) != value:
                # which one counts would be up to whatever parses it: a proxy that
                # appends its own after the client's must not make it the one
                raise GatewayError(400, f"several {name} headers: send one", param=name)
            headers[name] = value
        admin_path = path.startswith(ADMIN_PREFIXES)
        challenge = 'Basic realm="llmroute"' if admin_path else "Bearer"
        presented = presented_key(headers, basic=admin_path)
        if presented is None:
            raise GatewayError(
                401,
                _missing(scope, admin_path, headers.get("authorization", "")),
                code="invalid_api_key",
                headers={"WWW-Authenticate": challenge},
            )
        key = table.find(presented)
        if key is None:
            raise GatewayError(
                401,
                "invalid API key",
                code="invalid_api_key",
                headers={"WWW-Authenticate": challenge},
            )
        scope[_SCOPE_KEY] = key  # for the metrics, should a check below refuse it
        if admin_path and not key.admin:
            raise GatewayError(
                403,
                f"key {key.name!r} may not read {asked_path(scope, path)}: it needs admin: true",
                code="forbidden",
            )
        if is_api_path(path) and path != KEY_INFO_PATH:
            await admit(scope, key, gateway, spends=_spends(scope))
        return key


def _missing(scope: Scope, admin_path: bool, authorization: str) -> str:
    """Why a request has no key that counts: none, or only Basic credentials where they
    do not count (a browser's own, which it sends on other sites' behalf too). Paths as
    the client reaches them (`asked_path`)."""
    if admin_path:
        return (
            f"missing API key: {asked_path(scope, scope['path'])} needs an admin key; a "
            "browser asks for it (any user name, the key as password), other clients send "
            "Authorization: Bearer <key>"
        )
    if authorization.strip().partition(" ")[0].lower() == "basic":
        dashboard, metrics = (asked_path(scope, p) for p in ADMIN_PREFIXES)
        return (
            f"missing API key: HTTP Basic credentials count only on {dashboard} and {metrics} "
            "(a browser's login); send the key as Authorization: Bearer <key> or x-api-key"
        )
    # x-api-key too: what Anthropic's clients send, on /v1/messages and elsewhere
    return "missing API key: send it as Authorization: Bearer <key> or x-api-key: <key>"


def is_api_path(path: str) -> bool:
    """Whether `path` is the API's (limits, live-request counts): ``/v1/…``, and the
    rerank path Cohere's clients use."""
    return path.startswith("/v1/") or path == COHERE_RERANK_PATH


def _spends(scope: Scope) -> bool:
    """Whether a request may cost money: not a read (``GET``: a kept response, a batch
    and its answers, the models) nor a delete or a cancel, which a key past its budget
    may still make."""
    return scope.get("method") == "POST" and not str(scope["path"]).endswith("/cancel")


async def admit(scope: Scope, key: ApiKey, gateway: Gateway, *, spends: bool = True) -> None:
    """429 when `key` is at its ``rpm``, or, for a request that `spends`, has spent its
    budget or is at its ``tpm``; else its request counted against its rpm. The
    middleware's check of each API request, and a batch's of each of its requests.

    Each answer, a 429 too, carries the same ``x-ratelimit-*`` headers. A request refused
    for the budget is not counted against the rpm (so a batch whose key has spent its
    budget fails its lines at once rather than waiting out rate-limit windows); one
    refused for the tpm is, as OpenAI counts refused requests."""
    limits = gateway.dispatcher.limits
    if limits is None:
        return
    left: dict[str, int] = {}
    if key.rpm is not None or key.tpm is not None:
        scope[_LIMITS_KEY] = left
    used = 0.0
    if key.tpm is not None and spends:
        used = await limits.tokens(account_of(key))
        left[LIMIT_TOKENS] = key.tpm
        left[REMAINING_TOKENS] = max(0, int(key.tpm - used))
    budget = key.budget
    if (
        spends
        and budget is not None
        and await limits.spent(account_of(key), budget.period) >= budget.usd
    ):
        if key.rpm is not None:
            counted = await limits.requests(account_of(key))
            left[LIMIT_REQUESTS] = key.rpm
            left[REMAINING_REQUESTS] = max(0, int(key.rpm - counted))
        held = " (with the calls in flight)" if budget.hard else ""
        raise GatewayError(
            429,
            f"key {key.name!r} has spent its budget of {usd(budget.usd)} this {budget.period} "
            f"(UTC){held}",
            code="insufficient_quota",
            headers={} if budget.hard else NO_RETRY,  # a hard one's holds may be given back
            kind="insufficient_quota",
        )
    if key.rpm is not None:
        taken = await limits.take(account_of(key), key.rpm)
        left[LIMIT_REQUESTS] = key.rpm
        left[REMAINING_REQUESTS] = 0 if taken is None else max(0, int(key.rpm - taken))
        if taken is None:
            wait = await limits.retry_after(account_of(key), key.rpm)
            raise GatewayError(
                429,
                f"key {key.name!r} is at its limit of {key.rpm} requests per minute",
                code="rate_limit_exceeded",
                headers=retry_headers(wait),
                kind="requests",
            )
    if key.tpm is not None and spends and used >= key.tpm:
        wait = await limits.retry_after(account_of(key), key.tpm, tokens=True)
        raise GatewayError(
            429,
            f"key {key.name!r} is at its limit of {key.tpm} tokens per minute",
            code="rate_limit_exceeded",
            headers=retry_headers(wait),
            kind="tokens",
        )


def retry_headers(wait_s: float) -> dict[str, str]:
    """A 429's ``Retry-After`` (whole seconds, at least 1) and ``retry-after-ms`` (what
    OpenAI's clients read first): when the sliding window will have room again, if
    nothing else arrives."""
    wait_s = max(wait_s, 0.0)
    return {
        "Retry-After": str(max(1, math.ceil(wait_s))),
        "retry-after-ms": str(max(1, math.ceil(wait_s * 1000))),
    }


LIMIT_REQUESTS, REMAINING_REQUESTS = "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests"
LIMIT_TOKENS, REMAINING_TOKENS = "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens"
_LIMITS_KEY = "llmroute.rate_limits"  # what is left of the key's limits, in the scope


def _with_limit_headers(scope: Scope, send: Send) -> Send:
    """`send`, adding OpenAI's ``x-ratelimit-*`` headers (what is left of the key's rpm
    and tpm, read when the response starts) for a key with limits."""
    if _LIMITS_KEY not in scope:
        return send

    async def sending(message: Message) -> None:
        left = scope.get(_LIMITS_KEY)
        if message["type"] == "http.response.start" and left:
            headers = [*message.get("headers", ()), *_encoded(left)]
            message = {**message, "headers": headers}
        await send(message)

    return sending


def _encoded(left: Mapping[str, int]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), str(value).encode()) for name, value in left.items()]


async def hold_key_tokens(scope: Scope, gateway: Gateway, tokens: int) -> Callable[[], None] | None:
    """A request's estimated `tokens` held against its key's ``tpm`` while it runs, so
    that concurrent requests count each other (429 when they would pass the limit);
    what gives them back, None when nothing is held."""
    key = api_key_of(scope)
    if key is None or key.tpm is None or gateway.charges is None:
        return None
    try:
        release = await gateway.charges.hold(key, tokens)
    except GatewayError:
        tokens_held(scope, None)
        raise
    tokens_held(scope, tokens)
    return release


def tokens_held(scope: Scope, tokens: int | None) -> None:
    """Lower the reported ``x-ratelimit-remaining-tokens`` by a request's held estimate
    (None: the hold was refused, nothing is left)."""
    left = scope.get(_LIMITS_KEY)
    if isinstance(left, dict) and REMAINING_TOKENS in left:
        left[REMAINING_TOKENS] = 0 if tokens is None else max(0, left[REMAINING_TOKENS] - tokens)


def check_model(scope: Scope, model: object, resolved: str | None = None) -> None:
    """403 ``model_not_allowed`` when the request's key lists the ``model`` values it
    may send and `model` is not one of them (no ``model`` counts as ``auto``); an alias
    passes when its target, `resolved`, is listed."""
    key = api_key_of(scope)
    refusal = None if key is None else key.model_refusal(model, resolved)
    if refusal is not None:
        raise GatewayError(403, refusal, param="model", code="model_not_allowed")


async def key_info(key: ApiKey, limits: RateLimits | None) -> dict[str, Any]:
    """What a client may know of its own key: its name, what it may ask for and reach,
    its limits, and what it has used of them (tokens this minute, spending this period;
    None when nothing counts them, or when their store does not answer: a Redis that is
    down reads as 0, which a client would take for a budget untouched)."""
    account = account_of(key)
    info: dict[str, Any] = {
        "object": "llmroute.key",
        "name": key.name,
        "admin": key.admin,
        "models": None if key.models is None else list(key.models),
        "pool": None if key.pool is None else list(key.pool),
        "tags": list(key.tags),
        "header_tags": key.header_tags,
        "rpm": None if key.rpm is None else {"limit": key.rpm},
        "tpm": None,
        "budget": None,
    }
    if key.tpm is not None:
        used = None if limits is None else int(await limits.tokens(account))
        if limits is not None and not limits.answering:
            used = None
        info["tpm"] = {"limit": key.tpm, "used_last_minute": used}
    if key.budget is not None:
        budget = key.budget
        spent = None if limits is None else await limits.spent(account, budget.period)
        if limits is not None and not limits.answering:
            spent = None
        info["budget"] = {
            "usd": budget.usd,
            "period": budget.period,
            "hard": budget.hard,
            "spent_usd": None if spent is None else usd_figure(spent),
            "remaining_usd": None if spent is None else usd_figure(max(0.0, budget.usd - spent)),
        }
    return info


def payer_of(key: ApiKey | None) -> Payer | None:
    """The `Payer` that the calls made for `key`'s requests hold their worst case
    against: None unless its budget is hard."""
    if key is None or key.budget is None or not key.budget.hard:
        return None
    return Payer(key.name, account_of(key), key.budget)


def account_of(key: ApiKey) -> str:
    """Where a key's requests and spending are counted."""
    return f"apikey:{key.name}"


class Charges:
    """Charges each finished request of a key with a budget or a tpm to that key (its
    cost, its tokens), in the background (the record is made on the request path; the
    counts may be in Redis)."""

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits
        self._tasks: set[asyncio.Future[Any]] = set()

    def charger(self, key: ApiKey) -> Callable[[DecisionRecord], None] | None:
        if key.budget is None and key.tpm is None:
            return None

        def charge(record: DecisionRecord) -> None:
            tokens = (record.tokens_in or 0) + (record.tokens_out or 0)
            self.charge(key, record.cost_usd or 0.0, tokens)

        return charge

    def charge(self, key: ApiKey, usd: float, tokens: int = 0) -> None:
        """Add `usd` to the key's spending this period and `tokens` to its minute
        (each only when the key has a budget or a tpm). A hard budget's spending is
        counted call by call instead, as dispatch settles the calls' holds."""
        account = account_of(key)
        budget = key.budget
        if budget is not None and not budget.hard and usd > 0:  # a hard one: call by call
            self._start(self._limits.charge(account, budget.period, usd))
        if key.tpm is not None and tokens > 0:
            self._start(self._limits.add_tokens(account, tokens))

    async def hold(self, key: ApiKey, tokens: int) -> Callable[[], None] | None:
        """Count a request's estimated `tokens` against the key's ``tpm`` while it is in
        flight: 429 when they would pass it (the middleware only saw the window before
        this request). Returns what gives them back (once; the finished request's real
        tokens are charged apart), None for a key without a tpm."""
        if key.tpm is None or tokens <= 0:
            return None
        account = account_of(key)
        minute = await self._held(account, tokens, key.tpm)
        if minute is None:
            # room for this request: the count at most tpm - tokens (or an empty window)
            room = key.tpm - tokens + 1e-9
            wait = await self._limits.retry_after(account, room, tokens=True)
            raise GatewayError(
                429,
                f"key {key.name!r} is at its limit of {key.tpm} tokens per minute "
                f"(this request needs about {tokens} more)",
                code="rate_limit_exceeded",
                headers=retry_headers(wait),
                kind="tokens",
            )
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._start(self._limits.release_tokens(account, minute, tokens))

        return release

    async def _held(self, account: str, tokens: int, tpm: int) -> int | None:
        """`hold_tokens`; in Redis, a hold whose request is cancelled while Redis answers
        (its client hung up) is given back once it is known, not left counted against
        the key for the rest of its minute."""
        if not self._limits.remote:
            return await self._limits.hold_tokens(account, tokens, tpm)
        holding = asyncio.ensure_future(self._limits.hold_tokens(account, tokens, tpm))
        self._tasks.add(holding)
        holding.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(holding)
        except asyncio.CancelledError:
            holding.add_done_callback(lambda done: self._unhold(done, account, tokens))
            raise

    def _unhold(self, done: asyncio.Future[int | None], account: str, tokens: int) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        minute = done.result()
        if minute is not None:
            self._start(self._limits.release_tokens(account, minute, tokens))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, by: Deadline = NEVER) -> None:
        """Let the charges in flight finish (each is bounded by the limits' timeout), by
        `by` at the latest: those still running then are cancelled, and said."""
        if not self._tasks:
            return
        done, late = await asyncio.wait(set(self._tasks), timeout=by.timeout())
        for task in done:  # retrieved, as gather did (each says its own failure)
            if not task.cancelled():
                task.exception()
        if late:
            log.warning(
                "closing with %d charge(s) of client keys (spend, tokens) still waiting on "
                "the limits' store: not counted",
                len(late),
            )
            for task in late:
                task.cancel()
