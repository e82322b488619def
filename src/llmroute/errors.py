"""The llmroute exception tree.

Every error the package raises on purpose derives from `LlmrouteError`, so callers can
catch one class at the boundary::

    LlmrouteError
    ├── ConfigError (ValueError)      a registry, data file or setting is invalid
    │     carries `file`, `line` and `field` when they are known
    │     └── ConfigErrors              several at once (llmroute.registry; `.errors`)
    ├── EncoderError                  an encoder cannot be loaded or fails to encode
    │     ├── EncoderUnavailable      its files or extra are not installed (says how to fix)
    │     └── UnencodableText (ValueError)  a text holds an unpaired UTF-16 surrogate
    ├── DataError (ValueError)        a labelled data file has a bad line
    ├── TelemetryError                the decision log's database cannot be reached or used
    ├── RouterClosed                  the SDK's router was closed under a call or its stream
    ├── RoutingError                  a request cannot be routed (bad request shape)
    │     ├── InvalidRequest          a chat body OpenAI would refuse (`param`, `code`)
    │     └── ModelNotFound           the request names a model the registry lacks
    └── ProviderError                 an upstream model provider failed (carries `status`)
          ├── ProviderTimeout         no answer (or no first token) in time
          │     ├── ConnectTimeout    no connection in time: nothing was sent
          │     └── CallTimeout       an SDK call's own `timeout` ran out
          ├── RateLimited             HTTP 429; `retry_after_s` from ``Retry-After``
          ├── ContextWindowExceeded   the request is longer than the model's context
          ├── UnsupportedRequest      images for a `vision: false` model, tools for `tools: false`
          ├── CircuitOpen             every deployment's breaker is open; nothing was sent
          │     └── LimitReached      every deployment is at its rpm limit (or open)
          ├── UpstreamRejected        a 4xx other than 408/409/429: the request's fault
          └── AllFallbacksFailed      every model in the chain failed (`attempts`)

Foreign exceptions (yaml, pydantic, httpx, onnxruntime) are mapped to these once, where
they enter the package, and chained with ``raise ... from exc``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "AllFallbacksFailed",
    "AttemptText",
    "BeyondModel",
    "CallTimeout",
    "CircuitOpen",
    "ConfigError",
    "ConnectTimeout",
    "ContentRefused",
    "ContextWindowExceeded",
    "DataError",
    "EncoderError",
    "EncoderUnavailable",
    "InvalidRequest",
    "KeyBudgetReached",
    "LimitReached",
    "LlmrouteError",
    "ModelNotFound",
    "PolicyViolation",
    "ProviderError",
    "ProviderMisconfigured",
    "ProviderTimeout",
    "Quoted",
    "RateLimited",
    "RequestNote",
    "RouterClosed",
    "RoutingError",
    "TelemetryError",
    "UnencodableText",
    "UnsupportedRequest",
    "UpstreamRejected",
    "counted",
    "error_text",
    "json_kind",
    "outline_of",
    "shown",
]


_IDENTIFIER = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_FIELD_PATH = re.compile(r"[A-Za-z0-9_.\[\]-]{1,120}")  # messages[0].content, not a value


def identifier_code(code: object) -> str | None:
    """`code` when it is a short identifier (``context_length_exceeded``,
    ``RESOURCE_EXHAUSTED``), else None. An upstream may send any string as its error's
    code (a page of text, a line of the prompt echoed), and a `ProviderError`'s code
    reaches the client's error JSON, the decision log and traces: only this shape is
    kept."""
    return code if isinstance(code, str) and _IDENTIFIER.fullmatch(code) else None


class Quoted(str):
    """Words inside a `ProviderError`'s message that the gateway did not write: an
    upstream's error message, a library exception's text, a value of the request; with
    whatever leads them in (``": "``). Such a message is built of parts, the gateway's
    own words and these (``("upstream returned HTTP 400", Quoted(": " + said), note)``),
    and its `outline` is the parts without these: they may quote the request."""


class RequestNote(str):
    """The part of a `ProviderError`'s message that names the upstream's request id
    (``" [upstream request <id>]"``, what the provider's support asks for): its
    `outline` says the error's code and field before it."""


class AttemptText(str):
    """One entry of a request's attempts as the error and the decision log say it
    (`ProviderError.attempt`), with `outline`: the same without any words an upstream
    wrote (`ProviderError.outline`), which the log stores when ``telemetry.prompts``
    keeps no request text: an upstream's error message may quote the request."""

    outline: str

    def __new__(cls, text: str, outline: str | None = None) -> AttemptText:
        said = super().__new__(cls, text)
        said.outline = text if outline is None else outline  # None: a copy's, set after
        return said


def outline_of(attempt: str) -> str:
    """`attempt` without an upstream's words: an `AttemptText`'s outline; any other entry
    is the gateway's own words (a cancel, a cascade's escalation), itself."""
    return attempt.outline if isinstance(attempt, AttemptText) else attempt


def error_text(exc: LlmrouteError) -> AttemptText:
    """``str(exc)`` with its outline (`ProviderError.outline`, named by its provider as
    the text is): what a shadow's `judge_error` keeps of a reference or judge call that
    failed, since their upstreams were sent the request (and the answers) too."""
    if not isinstance(exc, ProviderError):
        return AttemptText(str(exc))
    bare = exc.outline()
    return AttemptText(
        str(exc), bare if exc.provider == GATEWAY else f"provider {exc.provider!r}: {bare}"
    )


def counted(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``: `n` with its noun agreeing (a plural in -s)."""
    return f"{n} {noun}{'s' * (n != 1)}"


def json_kind(value: object) -> str:
    """A JSON value's kind with its article, for a message saying what came instead of
    what was expected (``must be a string, not a number``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def shown(value: str, limit: int = 80) -> str:
    """`value` quoted for an error message, cut to `limit` characters: a client's string
    (a model name) is echoed, not a 4 MB body's worth of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


class LlmrouteError(Exception):
    """Base class of every error llmroute raises on purpose.

    `decision_id` names the routing decision of the SDK call that raised it, once the
    call was routed (None before: a body refused, an unknown model), as the gateway's
    error answers carry it in ``x-request-id``: the call's row in the decision log and
    what ``router.chat.feedback`` takes. It is an attribute, not part of the message."""

    decision_id: str | None = None


class ConfigError(LlmrouteError, ValueError):
    """A registry or setting is invalid. `str()` reads ``file:line: field: message``."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            where += ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class DataError(LlmrouteError, ValueError):
    """A labelled data file (JSONL) has a line that cannot be used; names file and line."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        self.message = message
        self.file = file
        self.line = line
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{message}")


class EncoderError(LlmrouteError):
    """An encoder failed to load or to encode."""


class EncoderUnavailable(EncoderError):
    """The files or optional dependency an encoder needs are missing; the message says how
    to install them."""


class UnencodableText(EncoderError, ValueError):
    """A text no encoder can take: it holds an unpaired UTF-16 surrogate (a lone
    ``"\\ud800"`` from JSON, or undecodable bytes Python kept as ``surrogateescape``),
    which is not Unicode and has no UTF-8 form."""


class TelemetryError(LlmrouteError):
    """The decision log's database cannot be opened, migrated or written. The message
    names the store by its masked URL (``postgresql://user:***@host/db``), never the
    password."""


class RouterClosed(LlmrouteError):
    """The router was closed (``router.close()``, ``await router.aclose()``) while an SDK
    call waited for its answer or for its stream to open, or before its stream's end
    (raised by the stream's next read: the answer was cut short): the call was ended,
    its in-flight slot given back and its decision recorded as a caller leaving (499
    ``client_disconnected``; a stream's, 200). The router stays usable; a later call
    starts afresh."""

    def __init__(self, message: str = "the router was closed while the call was in flight"):
        super().__init__(message)


class RoutingError(LlmrouteError):
    """The request cannot be routed, for example a chat body with no messages. `param`
    is the request field at fault (the gateway's 400 names it): its messages, unless
    said otherwise."""

    param = "messages"


class InvalidRequest(RoutingError):
    """A chat body OpenAI would refuse (`llmroute.chat_checks`): a field of the wrong
    type, a message without its role or content, a content part that is not an object,
    ``tools: []``. `param` names the field as OpenAI does (``max_tokens``,
    ``messages[1].content[0]``), `code` is OpenAI's code when it gives one
    (``empty_array``). The gateway answers it 400 with this message; the SDK raises it
    before routing, so nothing is sent."""

    def __init__(self, message: str, *, param: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class ModelNotFound(RoutingError):
    """The request's ``model`` is neither ``auto``, a route, a router nor a pool model;
    or, `code` ``model_not_chat``, a pool model of another kind (embedding, rerank),
    which OpenAI answers 404 too ("This is not a chat model"). `param` and `code` are
    those of the gateway's 404."""

    param = "model"

    def __init__(self, message: str, *, code: str = "model_not_found") -> None:
        super().__init__(message)
        self.code = code


class PolicyViolation(RoutingError):
    """The safety layer blocked the request. The message names the profile and the
    detectors that fired, never the text that made them fire."""

    def __init__(
        self,
        profile: str,
        fired: tuple[str, ...],
        decision_id: str,
        *,
        unscanned_for: tuple[str, ...] = (),
    ) -> None:
        self.profile = profile
        self.fired = fired
        self.decision_id = decision_id
        what = ", ".join(fired) or "policy"
        why = "".join(_why(name, unscanned_for) for name in fired)
        super().__init__(
            f"the request was blocked by the safety policy (profile {profile!r}: {what}){why}; "
            f"decision {decision_id}"
        )


# Findings whose name alone does not tell a client what to change: both blame the
# request's size or script, not its content, and both have an operator's remedy.
_WHY = {
    "unscanned": (
        "; the request is longer than the injection scan reads: shorten it, or the operator "
        "can raise safety.injection.extra_windows or max_windows"
    ),
    "unread_scripts": (
        "; part of the request is in a script the injection detector cannot read: the "
        "operator can use an encoder that reads it"
    ),
}
# `unscanned` for windows past max_windows in a script the registry's encoder reads and
# the static detector of those windows does not (`SafetyOutcome.unscanned_for`): more
# extra windows would not read them, more of the encoder's would
_UNSCANNED_SCRIPT = (
    "; part of the request past the injection scan's first windows is in a script only "
    "the registry's encoder reads, not the static detector of the windows after them: "
    "shorten it, or the operator can raise safety.injection.max_windows or set the "
    "profile's unscanned: allow"
)
_UNSCANNED_BOTH = (
    "; the request is longer than the injection scan reads, and part of it past the "
    "scan's first windows is in a script only the registry's encoder reads: shorten it, "
    "or the operator can raise safety.injection.max_windows or set the profile's "
    "unscanned: allow"
)


def _why(name: str, unscanned_for: tuple[str, ...]) -> str:
    """What a client (and its operator) can change about finding `name`; for
    ``unscanned``, by what left text unscanned (``length``, ``script``; length when not
    said)."""
    if name == "unscanned" and "script" in unscanned_for:
        return _UNSCANNED_BOTH if "length" in unscanned_for else _UNSCANNED_SCRIPT
    return _WHY.get(name, "")


GATEWAY = "llmroute"
"""The `provider` of errors the gateway raises itself (nothing was sent, or every model
failed)."""


class ProviderError(LlmrouteError):
    """An upstream provider failed: an HTTP error status, a timeout or a broken connection.

    `status` is the upstream HTTP status, or None when no response came back;
    `retry_after_s` the upstream's ``Retry-After``, when it sent one; `code` the upstream's
    error code when it gave one that is a short identifier (``context_length_exceeded``;
    `identifier_code`), else None. The message names the provider; it never carries an
    API key or a URL (which may embed credentials).

    A message holding words the gateway did not write is given in `parts`, those words
    `Quoted` (``("llama.cpp failed (ValueError)", Quoted(": " + text))``); ``(text,)`` is
    the gateway's words throughout. A message given whole is read as one nobody marked:
    its words after its first ``": "`` as an upstream's (a provider's own verdicts,
    ``llmroute``'s, whole).
    """

    def __init__(
        self,
        provider: str,
        message: str | tuple[str, ...],
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        self.parts = _parts(provider, message)
        message = "".join(self.parts)
        self.provider = provider
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s
        self.code = identifier_code(code)
        self.param = param  # the request field at fault, when the gateway knows it
        self.model: str | None = None  # the pool model, set by dispatch
        # the models that failed before `model` refused the request, then `model`
        # itself, as the decision log's attempts say them (set by dispatch)
        self.passed_over: tuple[str, ...] = ()
        # `outline`, where its parts would not say it: set where the message was made
        # of other errors' (dispatch's "...; then circuit open")
        self.outlined: str | None = None
        # the gateway's own refusals and verdicts (provider "llmroute") name no provider
        super().__init__(message if provider == GATEWAY else f"provider {provider!r}: {message}")

    def attempt(self, model: str) -> AttemptText:
        """This failure of the pool model `model` as an attempt says it (the error's and
        the decision log's ``attempts``): with the provider that failed, and without
        one for the gateway's own verdicts (a budget, a limit, a capability the model
        declares it lacks), which no provider gave."""
        if self.provider == GATEWAY:
            return AttemptText(f"{model} ({self.message})", f"{model} ({self.outline()})")
        return AttemptText(
            f"{model} via {self.provider} ({self.message})",
            f"{model} via {self.provider} ({self.outline()})",
        )

    def outline(self) -> str:
        """The message without the words an upstream wrote (its `Quoted` parts), which
        may quote the request (a field's value, what a content filter found): the
        gateway's own words, before and after them (``upstream returned HTTP 400``, the
        upstream's request id the provider's support asks for, a hint of what to
        check), and the error's code and the request field at fault (a field's path),
        said before the request id. The gateway's verdicts (provider ``llmroute``: a
        budget, a limit, a capability the model lacks) say theirs in their words."""
        if self.outlined is not None:
            return self.outlined
        own = [part for part in self.parts if not isinstance(part, Quoted)]
        if self.provider == GATEWAY:
            return "".join(own)
        noted = ""
        if self.code is not None:
            noted += f", code {self.code}"
        if self.param is not None and _FIELD_PATH.fullmatch(self.param):
            noted += f", param {self.param}"
        at = next((i for i, p in enumerate(own) if isinstance(p, RequestNote)), len(own))
        return "".join(own[:at]) + noted + "".join(own[at:])

    @property
    def retryable(self) -> bool:
        """Whether trying again (or another deployment) could succeed: no response, a
        timeout, 5xx, 408, 409 or 429. Any other 4xx is the request's own fault."""
        status = self.status
        return status is None or status >= 500 or status in (408, 409, 429)


def _parts(provider: str, message: str | tuple[str, ...]) -> tuple[str, ...]:
    """`message` in parts (`ProviderError`): as given, or one given whole read as its
    words up to its first ``": "``, then an upstream's, unless the gateway wrote it."""
    if not isinstance(message, str):
        return message
    said, colon, rest = message.partition(": ")
    if provider == GATEWAY or not colon:
        return (message,)
    return (said, Quoted(colon + rest))


class ProviderTimeout(ProviderError):
    """No response, or on a stream no first event, within the timeout."""


class ConnectTimeout(ProviderTimeout):
    """No connection within the connect timeout: the request was never sent, so the
    model's next deployment takes it at once, as after a refused connection. (A slow
    answer's timeout goes to the next deployment too, but ends a try that no other
    deployment answers, while the model's retries may follow this one.)"""


class CallTimeout(ProviderTimeout):
    """The `timeout` given to an SDK call ran out: before its answer, before its stream
    opened, or between two of its stream's chunks. Not the registry's timeouts, which
    are the upstream's (`ProviderTimeout`, the gateway's 504 ``upstream_error``): it is
    logged with the code ``timeout``, streamed or not."""


class RateLimited(ProviderError):
    """HTTP 429. `retry_after_s` is the upstream's ``Retry-After`` when it sent one."""


class ContextWindowExceeded(ProviderError):
    """The request does not fit the model's context window (upstream said so, or the
    estimate is over the registry's ``context_window``); a larger model may take it."""

    @property
    def retryable(self) -> bool:
        return False


class UnsupportedRequest(ProviderError):
    """The request needs what the model declares it lacks (an image and ``vision:
    false``, tools and ``tools: false``): it is not sent there, and the chain's next model
    serves. Raised to the caller (400; `code` ``images_not_supported``,
    ``tools_not_supported``, or ``unsupported_parameter`` with the request field in
    `param`) when no model of the chain takes the request."""

    def __init__(
        self,
        provider: str,
        message: str | tuple[str, ...],
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(provider, message, status=status, code=code, param=param)

    @property
    def retryable(self) -> bool:
        return False


class UpstreamRejected(ProviderError):
    """A 4xx other than 401/402/403/404 (`ProviderMisconfigured`) and 408/409/429: the
    request itself is at fault; never retried."""


class ProviderMisconfigured(ProviderError):
    """The upstream refused the gateway, not the request: HTTP 401 (its credentials),
    402 (its account out of credits), 403 (its access to the model or region, or its
    billing disabled) or 404 (no such model or path there); or the account out of credit
    said with another status (Anthropic's 400 "credit balance is too low", before a
    stream or as its error event; OpenAI's 429 ``insufficient_quota``). The
    client is not at fault and another deployment or model may serve the request, so
    dispatch moves on as after a 5xx (the breaker counts it); the same deployment is not
    tried again, and a client left with nothing gets a 502, never the upstream's 401."""

    @property
    def retryable(self) -> bool:
        return True


class ContentRefused(UpstreamRejected):
    """The upstream's own content filter refused the request (Azure OpenAI's
    ``content_filter``, OpenAI's ``invalid_prompt``, Anthropic's "blocked by content
    filtering policy"). Another provider's filter may let it through: a route's
    ``policy.content_fallback`` gets it next; without one it is the client's 400."""


class BeyondModel(UpstreamRejected):
    """What the request asks for is beyond this model's API (Anthropic: ``n`` > 1,
    ``logprobs``, ``audio`` output, an audio or file part; llama.cpp: tools, ``n`` > 1,
    ``logprobs``, an image, audio or file part): refused by the provider adapter before
    anything is sent. The request is not malformed and another model of the chain may
    honour it, so dispatch hands over to the next one, as for a declared capability
    (`UnsupportedRequest`); with none left it is the 400 it is."""


class CircuitOpen(ProviderError):
    """Every deployment of the model has an open circuit breaker; nothing was sent."""


class LimitReached(CircuitOpen):
    """Every deployment of the model is at its requests- or tokens-per-minute limit or
    its ``max_in_flight`` (those that are not have an open breaker); nothing was sent.
    Handled as `CircuitOpen`: the fallback is tried at once, and with none left the
    answer is 503. `limit` says which kind stopped it: ``rpm`` (a rate) or
    ``in_flight``."""

    limit: str = "rpm"


class KeyBudgetReached(LimitReached):
    """The client key's hard budget has no room left for the call's worst case on this
    model; nothing was sent. Handled as `LimitReached` (the chain's next, cheaper model
    may fit); when no model of the chain does, the client gets 429
    ``insufficient_quota``, as for a key that has spent its budget."""

    limit = "key_budget"


class AllFallbacksFailed(ProviderError):
    """Every model of the fallback chain failed. `attempts` lists ``model (why)`` per
    model tried, and `status` is the one to answer with (429 when every model was rate
    limited upstream, 502, 503 or 504). `errors` are the failures that status was
    decided from (the models skipped for what the request holds left out): a stream
    whose own model failed after its hand-over decides the status of it and the models
    after it from them together, by the same rule."""

    def __init__(
        self,
        attempts: list[str],
        *,
        status: int = 502,
        errors: Sequence[ProviderError] = (),
    ) -> None:
        self.attempts = tuple(attempts)
        self.errors = tuple(errors)
        super().__init__("llmroute", "every model failed: " + "; ".join(attempts), status=status)

    def outline(self) -> str:
        if self.outlined is not None:
            return self.outlined
        return "every model failed: " + "; ".join(outline_of(a) for a in self.attempts)
