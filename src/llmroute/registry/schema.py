"""The route registry schema: pydantic models for the YAML users write.

Every model is frozen and forbids unknown keys, so a typo fails at load time instead of
silently changing routing. Checks that span sections (a route naming a model that does
not exist) run in `Registry`'s model validator and report every problem with its path.
"""

from __future__ import annotations

import functools
import math
import re
import string
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llmroute.errors import ConfigError, shown
from llmroute.registry import chat_formats
from llmroute.registry._paths import (
    MAX_NAME_CHARS,
    PathProblems,
    Problem,
    did_you_mean,
    shown_name,
)
from llmroute.registry._yaml import decimal_digits
from llmroute.safety._pii_span import PII_TYPES

__all__ = [
    "ANTHROPIC_KINDS",
    "BALANCE_STRATEGIES",
    "BUILTIN_ENCODERS",
    "MAX_NAME_CHARS",
    "PII_TYPES",
    "RESERVED_ROUTE_NAMES",
    "SCAN_ROLES",
    "Action",
    "ApiKey",
    "AuthSettings",
    "BatchesSettings",
    "BreakerSettings",
    "Budget",
    "BuiltinEncoderSpec",
    "CacheSettings",
    "Default",
    "Deployment",
    "Difficulty",
    "DispatchSettings",
    "EncoderSpec",
    "InjectionSettings",
    "IntentSettings",
    "LimitSettings",
    "Model",
    "OpenAIEncoderSpec",
    "PiiSettings",
    "Price",
    "Provider",
    "Reasoning",
    "ReasoningSettings",
    "Registry",
    "RetrySettings",
    "Route",
    "RoutePolicy",
    "RouteTo",
    "Rule",
    "RuleWhen",
    "SafetyProfile",
    "SafetySettings",
    "StoredResponsesSettings",
    "vertex_base_url",
    "with_article",
]

BUILTIN_ENCODERS = ("minilm", "minilm-int8", "static")
BALANCE_STRATEGIES = ("weighted", "least_in_flight", "latency", "sticky")
Balance = Literal["weighted", "least_in_flight", "latency", "sticky"]
# ``auto`` is routed; ``default`` and ``pinned`` are the routes of the default's requests
# and of a request naming a pool model (`Decision.route`): a route of either name would
# give them its policy (a pinned model got its fallbacks, timeouts and safety profile)
RESERVED_ROUTE_NAMES = frozenset({"auto", "default", "pinned"})
_LLM_NONE = "none"  # the LLM router's answer for the default (`llm_router.NONE`)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# RFC 9110's token: what a header's name is made of (aiohttp sent any other as written,
# and the upstream answered 400; a ':' made it another header)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# what no header value holds (a tab between words is allowed): aiohttp refused them on
# every request; C1 and the Unicode line separators went on as bytes no upstream reads
_HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# a variable written as a shell, Docker Compose or LiteLLM config refers to it
_ENV_REFERENCE = re.compile(
    r"^(?:\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)|os\.environ/([A-Za-z_][A-Za-z0-9_]*))$"
)
_DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
# Google Cloud project ids (and the older domain-scoped ``example.com:name``); Vertex AI
# regions (``us-east5``, ``europe-west1``, ``global``): both go into the URL's path.
_GCP_PROJECT = re.compile(r"^[a-z][a-z0-9.:-]{4,61}[a-z0-9]\Z")
_GCP_REGION = re.compile(r"^[a-z]+(-[a-z0-9]+)*\Z")
_GCP_MULTI_REGIONS = frozenset({"us", "eu"})  # Vertex AI's multi-region endpoints
# what a whole vertex base_url ends in: the requests go to {base_url}/publishers/...
_VERTEX_PATH_END = re.compile(r"/projects/[^/?#]+/locations/[^/?#]+/?$")


def vertex_base_url(project: str, region: str) -> str:
    """Vertex AI's URL of a project's models in one region: the regional host
    (``{region}-aiplatform.googleapis.com``), the global one for ``global``, and the
    multi-region ones for ``us`` and ``eu`` (``aiplatform.us.rep.googleapis.com``, as
    Anthropic's Vertex client makes them: ``us-aiplatform`` is no host)."""
    host = "aiplatform.googleapis.com"
    if region in _GCP_MULTI_REGIONS:
        host = f"aiplatform.{region}.rep.googleapis.com"
    elif region != "global":
        host = f"{region}-{host}"
    return f"https://{host}/v1/projects/{project}/locations/{region}"


def _check_name(value: str) -> str:
    _check_length(value)
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"invalid name {value!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    return value


def _check_length(value: str) -> None:
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(
            f"name too long: {len(value):,} characters (at most {MAX_NAME_CHARS} characters)"
        )


def _free_name_problem(value: str) -> str | None:
    """Why a name with no charset of its own (an alias: what clients send as ``model``;
    a safety profile's) cannot be one: too long, or holding a control character."""
    try:
        _check_length(value)
    except ValueError as exc:
        return str(exc)
    control = _CONTROL.search(value)
    if control is not None:
        return f"name {shown_name(value)} holds a control character ({control.group()!r})"
    return None


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _check_unit(value: float) -> float:
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"must be between 0 and 1, got {value}")
    return value


def _check_url(value: str) -> str:
    """An http(s) URL with a host: ``http://vllm`` (a container's service name) too."""
    scheme, _, rest = value.partition("://")
    host = rest.split("/", 1)[0].rpartition("@")[2]
    if scheme not in ("http", "https") or not host or host.startswith(":"):
        from llmroute.telemetry.store.url import mask_url  # a password in it is not shown

        raise ValueError(f"must be an http:// or https:// URL with a host, got {mask_url(value)!r}")
    if "?" in rest:
        raise ValueError(
            "must not have a query (?...): the requests' paths follow the base URL; for "
            "Azure OpenAI's ?api-version=..., use its v1 API, "
            "https://RESOURCE.openai.azure.com/openai/v1"
        )
    if "#" in rest:
        raise ValueError("must not have a fragment (#...): the requests' paths follow the base URL")
    endpoint = _ENDPOINT_PATH.search(rest)
    if endpoint:
        raise ValueError(
            f"must be the API's base URL, without {endpoint.group(0)!r} (requests go to "
            f"{{base_url}}{endpoint.group(0)})"
        )
    return value


# the path of an endpoint pasted whole as a base URL, which the requests' path would follow
_ENDPOINT_PATH = re.compile(r"/(chat/completions|completions|embeddings|messages)/*$")


def _check_gcp_project(value: str) -> str:
    if not _GCP_PROJECT.match(value):
        raise ValueError(
            f"not a Google Cloud project id: {value!r} (6 to 63 lowercase letters, digits "
            "and '-', starting with a letter)"
        )
    return value


def _check_model_id(value: str) -> str:
    """An upstream model id: sent in bodies, URL paths and log lines as written."""
    control = _CONTROL.search(value)
    if control is not None:
        raise ValueError(
            f"model id {shown(value, 60)} holds a control character ({control.group()!r}): "
            "no upstream serves such an id"
        )
    return value


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        reference = _ENV_REFERENCE.match(value.strip())
        if reference is not None:  # a name, not a secret: it may be shown
            name = next(group for group in reference.groups() if group)
            raise ValueError(
                f"write the variable's name alone, {name!r}: llmroute reads it from the "
                "environment itself (no $, ${...} or os.environ/)"
            )
        raise ValueError(
            "must be the NAME of an environment variable (letters, digits, '_'), not the key itself"
        )
    return value


def _scalar_text(value: Any) -> Any:
    """Header and metadata values: YAML may read ``1`` or ``true``; compare them as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _check_texts(values: Sequence[str], what: str) -> None:
    """Raise when an entry is blank or repeats an earlier one (path: the entry's index)."""
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for index, text in enumerate(values):
        if not text.strip():
            problems.append(((index,), f"{what} must not be empty"))
        elif text in first:
            problems.append(((index,), f"duplicate {what} (same as [{first[text]}])"))
        else:
            first[text] = index
    PathProblems.raise_if_any(problems)


Name = Annotated[str, AfterValidator(_check_name)]
ModelId = Annotated[str, Field(min_length=1), AfterValidator(_check_model_id)]
Unit = Annotated[float, AfterValidator(_check_unit)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Url = Annotated[str, AfterValidator(_check_url)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]
EnvNames = Annotated[tuple[EnvName, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Sha256s = Annotated[tuple[Sha256Hex, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
Text = Annotated[str, BeforeValidator(_scalar_text)]
Patterns = Annotated[tuple[str, ...], BeforeValidator(_one_or_many), Field(min_length=1)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _numbers_written_as_numbers(cls, data: Any) -> Any:
        """A number field given `true`, `yes` or a quoted `'0.3'` is refused: pydantic
        would read `threshold: true` as 1.0 and `max_tokens: yes` as 1, a typo that
        loads and changes routing."""
        if isinstance(data, dict):
            problems: list[Problem] = [
                ((name,), f"must be a number, not {_written(data[name])}")
                for name, _ in _number_fields(cls)
                if isinstance(data.get(name), bool)
                or (isinstance(data.get(name), str) and not _EXPONENT.fullmatch(data[name]))
            ]
            problems += [
                ((name,), _out_of_range(data[name]))
                for name, real in _number_fields(cls)
                if _past_range(data.get(name), real)
            ]
            PathProblems.raise_if_any(problems)
        return data

    @model_validator(mode="before")
    @classmethod
    def _booleans_written_as_booleans(cls, data: Any) -> Any:
        """A boolean field given a quoted `'yes'`, `"false"` or a number is refused:
        pydantic would read `enabled: "no"` as false and `streams: 1` as true, and a
        quoted boolean is a mistake worth naming, not guessing."""
        if isinstance(data, dict):
            problems: list[Problem] = [
                ((name,), f"must be true or false, not {_written_scalar(data[name])}")
                for name in _bool_fields(cls)
                if isinstance(data.get(name), str | int | float)
                and not isinstance(data[name], bool)
            ]
            PathProblems.raise_if_any(problems)
        return data


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _bare(annotation: Any) -> Any:
    """`Annotated[float, ...]` as `float`."""
    if typing.get_origin(annotation) is Annotated:
        return typing.get_args(annotation)[0]
    return annotation


# `1e-3` is a number in YAML 1.2 and JSON; PyYAML (YAML 1.1) reads it as a string
_EXPONENT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


def _written(value: bool | str) -> str:
    if isinstance(value, bool):  # as YAML wrote it (`yes` and `on` are read as true)
        return f"the boolean {str(value).lower()}"
    return f"the string {value!r}"


@functools.cache
def _number_fields(model: type[BaseModel]) -> tuple[tuple[str, bool], ...]:
    """The fields of `model` that take a number and nothing else (None aside), each with
    whether it takes a float."""
    out = []
    for name, info in model.model_fields.items():
        union = typing.get_args(info.annotation) if _is_union(info.annotation) else ()
        kinds = {_bare(a) for a in union or (info.annotation,)}
        kinds.discard(type(None))
        if kinds and kinds <= {int, float}:
            out.append((name, float in kinds))
    return tuple(out)


_INT64 = 2**63 - 1  # what Redis, PostgreSQL and numpy count to


def _past_range(value: Any, real: bool) -> bool:
    """Whether an integer YAML read is past what the field holds: a float (``1e308``), or
    a 64-bit integer (pydantic took a 400-digit ``rpm``)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    if not real:
        return abs(value) > _INT64
    try:
        float(value)
    except OverflowError:
        return True
    return False


def _out_of_range(value: int) -> str:
    # a 400-digit value is not echoed; past 4,300 digits str() cannot write it
    return f"out of range: an integer of {decimal_digits(value):,} digits"


@functools.cache
def _bool_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of `model` that take a boolean and nothing else (None aside)."""
    out = []
    for name, info in model.model_fields.items():
        union = typing.get_args(info.annotation) if _is_union(info.annotation) else ()
        kinds = {_bare(a) for a in union or (info.annotation,)}
        kinds.discard(type(None))
        if kinds == {bool}:
            out.append(name)
    return tuple(out)


def _written_scalar(value: str | float) -> str:
    return f"the string {value!r}" if isinstance(value, str) else f"the number {value!r}"


# -- encoder -----------------------------------------------------------------------------


def _scripts(value: Any) -> Any:
    """``encoder.scripts``: ``any``, one script name or a list of them (any case), as
    ``"any"`` or a tuple of lower-case names; each bad entry is reported at its index."""
    from llmroute.encoders.scripts import ANY, SCRIPTS  # numpy, only when it is set

    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() == ANY:
            return ANY
        value = [value]
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be {ANY!r}, a script name or a list of them")
    if not value:
        raise ValueError(f"must name at least one script, or be {ANY!r}")
    problems: list[Problem] = []
    names: list[str] = []
    for index, entry in enumerate(value):
        name = entry.strip().lower() if isinstance(entry, str) else None
        if name is None:
            problems.append(((index,), f"must be a script name, not {_written_value(entry)}"))
        elif name == ANY:
            problems.append(((index,), f"{ANY!r} stands alone: write scripts: {ANY}"))
        elif name not in SCRIPTS:
            problems.append(
                (
                    (index,),
                    f"unknown script {entry!r}{did_you_mean(name, SCRIPTS)}; scripts: "
                    f"{', '.join(SCRIPTS)}",
                )
            )
        elif name in names:
            problems.append(((index,), f"{name!r} is already listed (at [{names.index(name)}])"))
        names.append(name or "")
    PathProblems.raise_if_any(problems)
    return tuple(names)


def _written_value(value: Any) -> str:
    return f"the {type(value).__name__} {value!r}" if value is not None else "null"


# what the encoder reads: None is what it declares itself (the built-ins: latin; an
# embeddings endpoint: any), "any" turns the intent layer's script check off
Scripts = Annotated[Literal["any"] | tuple[str, ...] | None, BeforeValidator(_scripts)]


class BuiltinEncoderSpec(_Frozen):
    """An encoder that ships with llmroute and runs offline on CPU."""

    kind: Literal["builtin"] = "builtin"
    name: Literal["minilm", "minilm-int8", "static"]
    max_tokens: int = Field(default=256, ge=3, le=512)
    truncate: Literal["head", "tail", "head_tail"] = "head"
    scripts: Scripts = None


class OpenAIEncoderSpec(_Frozen):
    """An OpenAI-compatible ``/embeddings`` endpoint (hosted, vLLM, Ollama, TEI ...)."""

    kind: Literal["openai"]
    base_url: Url
    model: ModelId
    api_key_env: EnvName | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    headers_env: dict[str, EnvName] = Field(default_factory=dict)  # header -> variable
    batch_size: int = Field(default=64, ge=1)
    timeout_s: Seconds = 10.0
    dimensions: int | None = Field(default=None, ge=1)
    scripts: Scripts = None

    @model_validator(mode="after")
    def _headers_once(self) -> Self:
        PathProblems.raise_if_any(
            [
                *_header_text(self.headers, self.headers_env, ascii_only=True),
                *_header_clashes(self.headers, self.headers_env),
                *_credential_headers(self.headers),
                *_per_request_headers(("headers", self.headers), ("headers_env", self.headers_env)),
                *_two_credentials(self.base_url, self.api_key_env, self.headers_env),
            ]
        )
        return self


def _two_credentials(
    base_url: str, api_key_env: str | None, headers_env: Mapping[str, str]
) -> list[Problem]:
    """A ``user:password@`` in a base URL and an ``Authorization`` from the environment
    (`api_key_env`: None where the key travels in another header): one of them went
    unused without a word (an encoder's httpx sent the URL's as Basic in place of the
    other; a provider's transport the other, dropping the URL's)."""
    if not _url_has_credentials(base_url):
        return []
    fields: list[tuple[str, ...]] = [("api_key_env",)] if api_key_env else []
    fields += [("headers_env", name) for name in headers_env if name.lower() == "authorization"]
    return [
        (
            field,
            "the base_url carries credentials (user:password@) too, and one request sends "
            "one Authorization: keep the key here and the base_url without them, or the "
            "URL's alone",
        )
        for field in fields
    ]


def _url_has_credentials(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.username or parts.password)


# a ``router-<name>-<threshold>`` model named where no request could ever reach one
_NO_DIFFICULTY_ROUTER = (
    "%s names a difficulty router, and this registry declares none (default.difficulty): "
    "every request for it would be a 404"
)


def _header_text(
    headers: Mapping[str, str], from_env: Mapping[str, str], *, ascii_only: bool = False
) -> list[Problem]:
    """A header name HTTP cannot carry, or a `headers` value holding a control character
    (or, for httpx, which sends ASCII alone, a character past ASCII). The value is never
    shown: a header may hold a secret."""
    problems: list[Problem] = [
        (
            (field, name),
            "not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~: no spaces, no ':')",
        )
        for field, names in (("headers", headers), ("headers_env", from_env))
        for name in names
        if not _HEADER_NAME.fullmatch(name)
    ]
    for name, value in headers.items():
        unsent = _unsendable(value, ascii_only)
        if unsent is not None:
            said = f"the value {unsent[0]} (the value is not shown: it may be a secret)"
            problems.append((("headers", name), said))
    return problems


def _unsendable(value: str, ascii_only: bool) -> tuple[str, bool] | None:
    """Why a header cannot carry `value` (``holds a control character ('\\n'), which no
    HTTP header carries``), and whether for a control character; None when it can.
    `ascii_only`: httpx's, which sends ASCII alone."""
    control = _HEADER_CONTROL.search(value)
    if control is not None:
        said = f"holds a control character ({control.group()!r}), which no HTTP header carries"
        return said, True
    if ascii_only and not value.isascii():
        return (
            "holds a character past ASCII, which the embeddings client (httpx) does not send",
            False,
        )
    return None


def _header_clashes(headers: Mapping[str, str], from_env: Mapping[str, str]) -> list[Problem]:
    """A header set both in `headers` and in `headers_env` (names ignore case)."""
    plain = {name.lower() for name in headers}
    return [
        (("headers_env", name), f"header {name!r} is also set in 'headers'; set it in one")
        for name in from_env
        if name.lower() in plain
    ]


_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}
)
# words of a header's name (split at '-', '_' and '.'), not substrings: x-portkey-config
# and x-portkey-provider hold no secret, though "key" is in "portkey"
_CREDENTIAL_WORDS = frozenset(
    {
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "auth",
        "authorization",
        "authentication",
        "credential",
        "credentials",
        # written as one word (X-ApiKey, X-AuthToken)
        "apikey",
        "apitoken",
        "authtoken",
        "accesstoken",
        "accesskey",
        "secretkey",
        "clientsecret",
        "sessiontoken",
        "subscriptionkey",
    }
)
_HEADER_WORD_SPLIT = re.compile(r"[-_.]")
# named with the word "key" and no credential, but a token for one request (the IETF
# draft's Idempotency-Key, Stripe's): a fixed value would make an upstream that honours
# it take every later request for a retry of the first
_PER_REQUEST_HEADERS = frozenset({"idempotency-key", "x-idempotency-key"})


def _credential_headers(headers: Mapping[str, str]) -> list[Problem]:
    """A header in `headers` whose name says it carries a credential (Authorization,
    x-api-key, Ocp-Apim-Subscription-Key, X-Auth-Token ...): the file is committed and
    diffed, so its value goes in the environment, as `api_key_env` refuses `api_key`."""
    return [
        (
            ("headers", name),
            f"header {name!r} carries a credential: never put secrets in the registry. Put "
            f"it in an environment variable and name that in headers_env ({{{name}: VAR}})"
            + (", or the key alone in api_key_env" if name.lower() == "authorization" else ""),
        )
        for name in headers
        if name.lower() not in _PER_REQUEST_HEADERS
        and (
            name.lower() in _CREDENTIAL_HEADERS
            or not _CREDENTIAL_WORDS.isdisjoint(_HEADER_WORD_SPLIT.split(name.lower()))
        )
    ]


def _per_request_headers(*where: tuple[str, Mapping[str, str]]) -> list[Problem]:
    """An idempotency key written once for every request the provider is sent."""
    return [
        (
            (field, name),
            f"header {name!r} names one request: a fixed value would make an upstream that "
            "honours it answer every later request as a retry of the first. Leave it out",
        )
        for field, headers in where
        for name in headers
        if name.lower() in _PER_REQUEST_HEADERS
    ]


def env_headers(from_env: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """`headers_env` resolved: each header whose variable is set (and not empty)."""
    return {name: environ[var] for name, var in from_env.items() if environ.get(var)}


def unset_credentials(
    api_key_env: str | None, from_env: Mapping[str, str], environ: Mapping[str, str]
) -> list[str]:
    """The variables an HTTP client's credentials name that are unset or empty."""
    names = ([api_key_env] if api_key_env else []) + list(from_env.values())
    return [name for name in names if not environ.get(name)]


class UnsendableCredential(ConfigError):
    """A credential variable whose value no HTTP header carries (`check_credential_text`):
    the probe fails that provider's rows, as an unset one's, and probes the others."""


def check_credential_text(
    where: str,
    api_key_env: str | None,
    from_env: Mapping[str, str],
    environ: Mapping[str, str],
    unnamed: Sequence[str] = (),
    *,
    ascii_only: bool = False,
) -> None:
    """`ConfigError` at the field of the first credential variable (`api_key_env`, then
    `headers_env`'s, then the `unnamed` ones the client reads though the file names none
    of them, at `where`) whose value holds a control character: each one goes in a
    header, and aiohttp refused every request ("Forbidden control character detected in
    headers"); a file's last line break, read with it, is the usual one. `ascii_only`
    (httpx's, which sends ASCII alone): one past ASCII too. The variable is named, never
    its value."""
    fields = [(".api_key_env", api_key_env)] if api_key_env else []
    fields += [(f".headers_env.{header}", var) for header, var in from_env.items()]
    fields += [("", var) for var in unnamed]
    for field, var in fields:
        unsent = _unsendable(environ.get(var, ""), ascii_only)
        if unsent is not None:
            said, control = unsent
            hint = " (a line break read from a file with it?)" if control else ""
            raise UnsendableCredential(
                f"environment variable {var} {said}{hint}; its value is not shown",
                field=f"{where}{field}",
            )


def _encoder_shorthand(value: Any) -> Any:
    """``builtin:minilm`` is short for ``{kind: builtin, name: minilm}``."""
    if not isinstance(value, str):
        return value
    kind, _, name = value.partition(":")
    if kind != "builtin" or name not in BUILTIN_ENCODERS:
        choices = [f"builtin:{n}" for n in BUILTIN_ENCODERS]
        raise ValueError(
            f"unknown encoder {value!r}{did_you_mean(value, choices)}; use one of "
            f"{', '.join(choices)}, or a mapping with kind: openai for an embeddings endpoint"
        )
    return {"kind": "builtin", "name": name}


EncoderSpec = Annotated[
    BuiltinEncoderSpec | OpenAIEncoderSpec,
    Field(discriminator="kind"),
    BeforeValidator(_encoder_shorthand),
]


# -- providers and models ----------------------------------------------------------------


# Provider kinds whose upstream takes Anthropic's Messages body (Claude, wherever it is
# served): they get Anthropic's parameters (``thinking``, ``output_config``, a default
# ``max_tokens``) where other kinds get OpenAI's.
ANTHROPIC_KINDS: frozenset[str] = frozenset({"anthropic", "bedrock", "vertex"})
# An AWS region (us-east-1, eu-central-2, us-gov-west-1, ap-southeast-5)
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+\Z")


class Provider(_Frozen):
    """Where models are served. The key is read from `api_key_env`, never from the file.

    Kinds ``openai`` and ``anthropic`` are HTTP APIs at `base_url` (defaulted to the
    vendor's). Kind ``bedrock`` is Claude on Amazon Bedrock in `region` (its
    ``bedrock-runtime`` endpoint, unless `base_url` names another: a VPC endpoint, a
    proxy), docs/providers.md. Kind ``vertex`` is Claude on Google Cloud's Vertex AI: its
    `base_url` is made from `project` and `region` (or given whole), its token comes from
    Google's Application Default Credentials, or from `api_key_env` when that is set. Kind
    ``llamacpp`` runs GGUF models in this process with llama.cpp (the ``local`` extra,
    docs/local.md): it has no `base_url`; its models name their GGUF file in ``model``;
    `n_ctx`, `n_threads`, `max_concurrency`, `chat_format`, `max_tokens` and
    `temperature` apply to it alone. Kind ``echo`` answers in this process without any
    model (the last user message, or `reply`, after `delay_s`): for trying the gateway
    and testing client applications without a model server or tokens spent.
    """

    kind: Literal["openai", "anthropic", "bedrock", "vertex", "llamacpp", "echo"]
    base_url: Url | None = None  # set (or defaulted) for the HTTP kinds; None in-process
    # kinds bedrock and vertex: the cloud's region (an AWS or a Vertex AI one), which
    # makes the base_url unless it is given whole; vertex also its project
    region: str | None = None
    project: Annotated[str, AfterValidator(_check_gcp_project)] | None = None
    api_key_env: EnvName | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # header -> the environment variable holding its value (a secret a proxy wants)
    headers_env: dict[str, EnvName] = Field(default_factory=dict)
    timeout_s: Seconds = 60.0  # the whole request (a stream: each wait for more bytes)
    connect_timeout_s: Seconds = 5.0
    first_token_timeout_s: Seconds | None = None  # streams: until the first event
    stream_timeout_s: Seconds | None = None  # streams: until the last event
    # kind openai only: Anthropic-style cache_control markers sent on, or dropped
    cache_control: Literal["drop", "send"] = "drop"
    # kind openai only: "google" sends an OAuth2 token from Google's Application Default
    # Credentials (Vertex AI's OpenAI-compatible endpoint: Gemini and Model Garden models)
    auth: Literal["key", "google"] = "key"
    # kind llamacpp only:
    n_ctx: int = Field(default=4096, ge=256)  # the context window, in tokens
    n_threads: int | None = Field(default=None, ge=1)  # default: the cores this process may use
    max_concurrency: int = Field(default=1, ge=1)  # generations at once, per loaded model
    chat_format: str | None = Field(default=None, min_length=1)  # default: the GGUF's template
    max_tokens: int = Field(default=512, ge=1)  # the longest answer (also the default)
    temperature: float | None = Field(default=None, ge=0, le=2)  # when the request sets none
    # kind echo only:
    reply: str | None = None  # the answer; None: the last user message, echoed
    delay_s: float = Field(default=0.0, ge=0, le=600)  # before the answer (a stream: each word)

    @model_validator(mode="before")
    @classmethod
    def _default_base_url(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "base_url" not in data and data.get("kind") == "vertex":
            project, region = str(data.get("project")), str(data.get("region"))
            if _GCP_PROJECT.match(project) and _GCP_REGION.match(region):
                return {**data, "base_url": vertex_base_url(project, region)}
            return data
        if isinstance(data, Mapping) and "base_url" not in data:
            url = _DEFAULT_BASE_URLS.get(str(data.get("kind")))
            aws = data.get("region")
            if data.get("kind") == "bedrock" and isinstance(aws, str) and _AWS_REGION.match(aws):
                url = f"https://bedrock-runtime.{aws}.amazonaws.com"
            if url is not None:
                return {**data, "base_url": url}
        return data

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Self:
        local = self.kind in ("llamacpp", "echo")
        wrong = {
            "llamacpp": _HTTP_ONLY | _ECHO_ONLY | _REGION_ONLY | _VERTEX_ONLY,
            "echo": _HTTP_ONLY | _LOCAL_ONLY | _REGION_ONLY | _VERTEX_ONLY,
            "bedrock": _LOCAL_ONLY | _ECHO_ONLY | _VERTEX_ONLY,
            "vertex": _LOCAL_ONLY | _ECHO_ONLY,
        }.get(self.kind, _LOCAL_ONLY | _ECHO_ONLY | _REGION_ONLY | _VERTEX_ONLY)
        problems: list[Problem] = [
            (
                (key,),
                f"{key!r} is not used by {with_article(self.kind)} provider"
                + (" (in-process)" * local),
            )
            for key in sorted(wrong & self.model_fields_set)
        ]
        if self.kind == "bedrock":
            problems.extend(_bedrock_problems(self.region, self.base_url))
        elif self.kind == "vertex":
            problems.extend(self._vertex_problems())
        elif not local and self.base_url is None:
            problems.append((("base_url",), f"a {self.kind} provider needs a base_url"))
        problems.extend(_header_text(self.headers, self.headers_env))
        problems.extend(_header_clashes(self.headers, self.headers_env))
        problems.extend(_credential_headers(self.headers))
        problems.extend(
            _per_request_headers(("headers", self.headers), ("headers_env", self.headers_env))
        )
        if self.base_url is not None:
            problems.extend(self._url_credentials(self.base_url))
        if self.kind == "llamacpp" and self.chat_format is not None:
            problems.extend(_chat_format_problems(self.chat_format))
        if self.auth == "google" and self.kind != "openai":
            problems.append(
                (("auth",), "'auth: google' is for openai providers (vertex ones always use it)")
            )
        elif self.auth == "google" and self.api_key_env is not None:
            problems.append(
                (
                    ("api_key_env",),
                    "'auth: google' gets its token from Google's credentials; api_key_env "
                    "is not used with it",
                )
            )
        if self.kind != "openai" and "cache_control" in self.model_fields_set:
            problems.append(
                (
                    ("cache_control",),
                    "'cache_control' is for openai providers (anthropic ones always send "
                    "the markers, in-process ones have no prompt cache to mark)",
                )
            )
        PathProblems.raise_if_any(problems)
        return self

    def _url_credentials(self, base_url: str) -> list[Problem]:
        """A base URL's ``user:password@`` beside what the provider sends as its
        ``Authorization`` (the key, a headers_env one, Google's token): the transport
        sends the URL's as Basic only where no Authorization is set, so they went unused
        without a word. An anthropic key travels in ``x-api-key``: both are sent."""
        key_env = None if self.kind == "anthropic" else self.api_key_env
        problems = _two_credentials(base_url, key_env, self.headers_env)
        google = self.auth == "google" or (self.kind == "vertex" and not self.api_key_env)
        if google and _url_has_credentials(base_url):
            problems.append(
                (
                    ("auth",) if self.auth == "google" else ("base_url",),
                    "the base_url carries credentials (user:password@), and every request "
                    "sends Google's token as its Authorization: take them out of the base_url",
                )
            )
        return problems

    def _vertex_problems(self) -> list[Problem]:
        """A vertex provider's place: `project` and `region`, or a whole `base_url`."""
        if self.region is not None and not _GCP_REGION.match(self.region):
            return [
                (("region",), f"not a Vertex AI region: {self.region!r} (like us-east5, or global)")
            ]
        given = {"project", "region"} & self.model_fields_set
        made = (
            vertex_base_url(self.project, self.region)
            if self.project is not None and self.region is not None
            else None
        )
        if "base_url" in self.model_fields_set and given and self.base_url != made:
            return [
                (
                    (key,),
                    f"{key!r} is part of the base_url when one is given; set either "
                    "base_url or project and region",
                )
                for key in sorted(given)
            ]
        if self.base_url is None:
            missing = {"project", "region"} - given
            return [
                ((key,), f"a vertex provider needs {key!r} (or a base_url)")
                for key in sorted(missing)
            ]
        if not _VERTEX_PATH_END.search(urlsplit(self.base_url).path):
            # else every request is Google's 404, read as a wrong model id
            return [
                (
                    ("base_url",),
                    "a vertex provider's base_url ends in /projects/PROJECT/locations/REGION "
                    "(the requests go to {base_url}/publishers/anthropic/models/MODEL"
                    ":rawPredict); or set project and region instead",
                )
            ]
        return []

    @property
    def http_url(self) -> str:
        """`base_url`, for the HTTP kinds (which always have one)."""
        if self.base_url is None:
            raise ValueError(f"a {self.kind} provider has no base_url")
        return self.base_url


def _chat_format_problems(name: str) -> list[Problem]:
    """A `chat_format` the installed llama-cpp-python does not know (each request was a
    502); without it installed the name is not refused, only warned of by ``registry
    check`` (`llmroute.registry.chat_formats`)."""
    known = chat_formats.installed()
    message = None if known is None else chat_formats.unknown(name, known)
    return [] if message is None else [(("chat_format",), message)]


def _bedrock_problems(region: str | None, base_url: str | None) -> list[Problem]:
    """A bedrock provider's region: an AWS one, and given unless `base_url` is."""
    if region is not None and not _AWS_REGION.match(region):
        return [(("region",), f"{region!r} is not an AWS region (such as us-east-1)")]
    if region is None and base_url is None:
        return [(("region",), "a bedrock provider needs a region (or a base_url)")]
    return []


_HTTP_ONLY = frozenset({"base_url", "api_key_env", "headers", "headers_env", "connect_timeout_s"})
_REGION_ONLY = frozenset({"region"})  # bedrock and vertex
_LOCAL_ONLY = frozenset(
    {"n_ctx", "n_threads", "max_concurrency", "chat_format", "max_tokens", "temperature"}
)
_ECHO_ONLY = frozenset({"reply", "delay_s"})
_VERTEX_ONLY = frozenset({"project"})


class Price(_Frozen):
    """USD per million tokens. `cached_input` prices the prompt tokens the provider read
    from its prompt cache (``usage.prompt_tokens_details.cached_tokens``); without it they
    cost `input`."""

    input: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    output: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cached_input: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # USD per 1,000 searches, for rerank models billed per search (Cohere's search units)
    search: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class Reasoning(_Frozen):
    """How a model does extended thinking, and the budget the reasoning gate turns on.

    `param` picks the request parameter: ``reasoning_effort`` (OpenAI), ``thinking``
    (Anthropic ``budget_tokens``), ``enable_thinking`` (vLLM/Qwen
    ``chat_template_kwargs``); ``auto`` uses ``thinking`` on Anthropic providers and
    ``reasoning_effort`` elsewhere. `turn_off` says what a request the gate judges simple
    gets: thinking turned off explicitly where the provider can (``true``), or nothing
    sent. (Not ``off``: YAML 1.1 reads an ``off:`` key as the boolean false.)

    `thinking` says how a model that takes ``thinking`` turns it on: ``adaptive``
    (``{type: adaptive}`` with ``output_config.effort``: Claude Opus 4.6, Sonnet 4.6
    and later, the only way on Opus 4.7 and later, which refuse ``budget_tokens`` with
    a 400), ``budget`` (``{type: enabled, budget_tokens}``: older models, which refuse
    adaptive), or ``auto``: adaptive for the model ids known to take it
    (`llmroute.registry.claude_thinking`).
    """

    budget_tokens: int | None = Field(default=None, ge=1024)
    effort: Literal["minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    param: Literal["auto", "reasoning_effort", "thinking", "enable_thinking"] = "auto"
    thinking: Literal["auto", "adaptive", "budget"] = "auto"
    turn_off: bool = True

    @model_validator(mode="after")
    def _thinking_for_thinking(self) -> Self:
        """`thinking` (and the Anthropic-only effort ``max``) say how Anthropic's
        ``thinking`` parameter is sent; a model told to take another parameter never
        gets it, so setting them there is a mistake, not a preference."""
        if self.param not in ("reasoning_effort", "enable_thinking"):
            return self
        problems: list[Problem] = []
        if self.thinking != "auto":
            problems.append(
                (("thinking",), f"'thinking' is for Anthropic's thinking, not param {self.param}")
            )
        if self.effort == "max":
            problems.append(
                (
                    ("effort",),
                    f"effort 'max' is Anthropic's (OpenAI's highest is 'xhigh'), "
                    f"not for param {self.param}",
                )
            )
        PathProblems.raise_if_any(problems)
        return self


class Budget(_Frozen):
    """At most `usd` spent on the model per calendar `period` (UTC); past it the model is
    skipped (the chain's next model serves) until the next period begins. A `hard`
    budget is never passed: each call holds its worst-case cost before it is sent and
    is not sent when that does not fit in what is left."""

    usd: float = Field(gt=0, allow_inf_nan=False)
    period: Literal["hour", "day", "month"] = "day"
    hard: bool = False


class Deployment(_Frozen):
    """One place a model is served. Several deployments of a model share its traffic."""

    provider: str
    model: ModelId | None = None  # default: the model's `model`
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    rpm: int | None = Field(default=None, ge=1)  # requests per minute sent here at most
    tpm: int | None = Field(default=None, ge=1)  # tokens per minute answered here at most
    # requests in flight here at most (a stream until it ends): past it, the next
    # deployment or the fallback serves
    max_in_flight: int | None = Field(default=None, ge=1)


ANSWER_LIMITS = ("max_completion_tokens", "max_tokens")
"""The request parameters that bound an answer's tokens, the one the API reads first."""

_REQUEST_OWN = frozenset(
    {"model", "messages", "prompt", "input", "stream", "stream_options", "tools", "functions"}
)
"""Body keys that say what is asked, not how: a model's `params` may not default them."""
_UNDROPPABLE = _REQUEST_OWN - {"stream_options"}
"""Of those, the ones a model may not drop: `stream_options` asks for a stream's usage,
which a server that refuses it can do without (its streams' costs are then estimated)."""


def with_article(kind: str) -> str:
    """A kind with its article: "an embedding", "a rerank" (for messages)."""
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _check_params(value: dict[str, Any]) -> dict[str, Any]:
    problems: list[Problem] = [
        ((key,), f"{key!r} is the request's own, not a parameter to default")
        for key in value
        if key in _REQUEST_OWN
    ]
    problems += [
        (
            (key,),
            "not a JSON value (YAML's .nan, .inf or a date is none): quote it, or leave it out",
        )
        for key, item in value.items()
        if not _json_value(item)
    ]
    PathProblems.raise_if_any(problems)
    return value


def _json_value(value: object) -> bool:
    """Whether `value` (read from YAML) is one JSON can write: a request parameter is
    sent in every request, and one that is not would fail them all."""
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_value(item) for item in value)
    if isinstance(value, dict):  # number keys (logit_bias: {50256: -100}) are written as text
        return all(
            (k is None or isinstance(k, str | bool | int)) and _json_value(v)
            for k, v in value.items()
        )
    return False


class Model(_Frozen):
    """One entry of the pool: a provider's model under a name routes can target.

    Served by one `provider`, or by several `deployments` balanced by `balance`. Timeouts
    set here override the provider's; a route's override both.
    """

    provider: str | None = None
    model: ModelId
    deployments: tuple[Deployment, ...] = ()
    balance: Balance | None = None  # default: dispatch.balance
    kind: Literal["chat", "embedding", "rerank"] = "chat"
    price: Price = Price()
    context_window: int | None = Field(default=None, gt=0)
    # the longest answer its API gives (what a hard budget holds for a request without
    # max_tokens)
    max_output_tokens: int | None = Field(default=None, gt=0)
    # None: not said (sent anyway); False: never sent a request holding images / tools
    vision: bool | None = None
    tools: bool | None = None
    # its server also serves POST /v1/completions (a base or code model): requests to the
    # gateway's /v1/completions go there raw, suffix (fill in the middle), echo, logprobs
    text_completions: bool = False
    # how its server takes a fill-in-the-middle request, for servers that refuse `suffix`
    # (vLLM, SGLang, llama.cpp server): the prompt written with the model's own tokens
    fim_template: str | None = None
    # request parameters sent to this model when the request does not set them
    params: dict[str, Any] = Field(default_factory=dict)
    # what this model's API calls otherwise (max_tokens -> max_completion_tokens) ...
    rename_params: dict[str, str] = Field(default_factory=dict)
    # ... and what it refuses: removed from every body it is sent
    drop_params: tuple[str, ...] = ()
    description: str | None = None
    # None: not known to think; False: does not think (thinking parameters removed)
    reasoning: Reasoning | Literal[False] | None = None
    timeout_s: Seconds | None = None
    connect_timeout_s: Seconds | None = None
    first_token_timeout_s: Seconds | None = None
    stream_timeout_s: Seconds | None = None
    rpm: int | None = Field(default=None, ge=1)  # its one provider's limit (no deployments)
    tpm: int | None = Field(default=None, ge=1)  # its one provider's token limit
    max_in_flight: int | None = Field(default=None, ge=1)  # its one provider's concurrency
    budget: Budget | None = None

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_params(value)

    @field_validator("fim_template")
    @classmethod
    def _fim_template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            fields = [(n, spec, conv) for _, n, spec, conv in string.Formatter().parse(value)]
        except ValueError as exc:
            raise ValueError(f"not a template: {exc} (write a literal brace twice)") from None
        names = [n for n, spec, conv in fields if n is not None and not spec and not conv]
        if sorted(names) != ["prefix", "suffix"] or len(names) != sum(
            n is not None for n, _, _ in fields
        ):
            raise ValueError(
                "must hold {prefix} and {suffix} once each and no other field, e.g. "
                "'<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>'"
            )
        return value

    @field_validator("rename_params")
    @classmethod
    def _renames(cls, value: dict[str, str]) -> dict[str, str]:
        problems: list[Problem] = []
        for key, new in value.items():
            for name in (key, new):
                if name in _REQUEST_OWN:
                    problems.append(((key,), f"{name!r} is the request's own, not a parameter"))
            if not new:
                problems.append(((key,), "the new name is empty"))
            elif new == key:
                problems.append(((key,), "renamed to itself"))
            elif new in value:
                problems.append(((key,), f"renamed to {new!r}, which is renamed too"))
        PathProblems.raise_if_any(problems)
        return value

    @field_validator("drop_params")
    @classmethod
    def _drops(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        PathProblems.raise_if_any(
            [
                ((i,), f"{name!r} is the request's own, not a parameter to drop")
                if name in _UNDROPPABLE
                else ((i,), "an empty name")
                for i, name in enumerate(value)
                if name in _UNDROPPABLE or not name
            ]
        )
        return value

    @model_validator(mode="after")
    def _params_consistent(self) -> Self:
        """A parameter both set and dropped, or dropped and renamed, says two things."""
        problems: list[Problem] = []
        for i, name in enumerate(self.drop_params):
            if name in self.params:
                problems.append((("drop_params", i), f"{name!r} is dropped but set in params"))
            if name in self.rename_params:
                problems.append((("drop_params", i), f"{name!r} is dropped and renamed"))
            sources = [old for old, new in self.rename_params.items() if new == name]
            if sources:
                problems.append(
                    (("drop_params", i), f"{name!r} is dropped but {sources[0]!r} is renamed to it")
                )
        PathProblems.raise_if_any(problems)
        return self

    @field_validator("reasoning", mode="before")
    @classmethod
    def _reasoning_shorthand(cls, value: Any) -> Any:
        """``reasoning: true`` thinks with the defaults; ``false`` says it does not. A
        quoted ``'false'`` or a number is refused in one line (``0`` loaded as false)."""
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            raise ValueError(f"must be true, false or a mapping, not {_written_scalar(value)}")
        return {} if value is True else value

    @model_validator(mode="after")
    def _one_way_to_serve(self) -> Self:
        if (self.provider is None) == (not self.deployments):
            raise PathProblems(
                [((), "set exactly one of 'provider' or 'deployments' (a list of providers)")]
            )
        return self

    def targets(self) -> tuple[Deployment, ...]:
        """Where the model is served: its deployments, or its one provider."""
        if self.deployments:
            return tuple(
                d if d.model is not None else d.model_copy(update={"model": self.model})
                for d in self.deployments
            )
        assert self.provider is not None
        return (
            Deployment(
                provider=self.provider,
                model=self.model,
                rpm=self.rpm,
                tpm=self.tpm,
                max_in_flight=self.max_in_flight,
            ),
        )

    def provider_names(self) -> tuple[str, ...]:
        return tuple(d.provider for d in self.targets())


# -- intent, routes, default -------------------------------------------------------------


class IntentSettings(_Frozen):
    """How the intent layer scores routes; every key has a default."""

    method: Literal["linear", "centroid", "knn"] = "linear"
    k: int = Field(default=5, ge=1)
    threshold: Unit = 0.5
    window: int = Field(default=1, ge=1)
    out_of_scope: list[str] = Field(default_factory=list)

    @field_validator("out_of_scope")
    @classmethod
    def _texts(cls, value: list[str]) -> list[str]:
        _check_texts(value, "out-of-scope example")
        return value


class RoutePolicy(_Frozen):
    """What dispatch does for a route: timeouts, retries, fallbacks, safety profile and
    request parameters."""

    timeout_s: Seconds | None = None
    connect_timeout_s: Seconds | None = None
    first_token_timeout_s: Seconds | None = None
    stream_timeout_s: Seconds | None = None
    retries: int | None = Field(default=None, ge=0, le=10)  # default: dispatch.retries
    fallback: tuple[str, ...] = ()
    context_fallback: str | None = None  # a larger-context model for over-long requests
    content_fallback: str | None = None  # the model a request refused by a filter goes to
    safety: str | None = None
    # request parameters this route's requests get when they do not set them (before the
    # model's own `params`)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_params(value)

    @field_validator("fallback")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        problems: list[Problem] = [
            ((i,), f"model {name!r} is already in the fallback chain")
            for i, name in enumerate(value)
            if name in value[:i]
        ]
        PathProblems.raise_if_any(problems)
        return value


class Route(_Frozen):
    """A named intent: example prompts, and the model that serves matching requests."""

    name: Name
    description: str | None = None
    examples: tuple[str, ...] = Field(min_length=1)
    target: str
    reasoning_target: str | None = None  # the route's reasoning tier, when the gate fires
    cascade: Cascade | None = None
    threshold: Unit | None = None
    policy: RoutePolicy = RoutePolicy()

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower() in RESERVED_ROUTE_NAMES:
            raise ValueError(f"{value!r} is reserved; choose another route name")
        return value

    @field_validator("examples")
    @classmethod
    def _examples(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _check_texts(value, "example")
        return value


class Difficulty(_Frozen):
    """A difficulty router for requests no rule or route claims: the strong model when
    its score reaches `threshold` (or the threshold that sends `strong_share` of the
    router's validation prompts there), else the weak one. `router` is the directory
    written by ``llmroute train difficulty``, relative to the registry file. `unread`:
    what serves a request mostly in scripts the encoder does not read, whose score would
    be noise (strong | weak | score)."""

    router: str = Field(min_length=1)
    strong: str
    weak: str
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    strong_share: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)
    unread: Literal["strong", "weak", "score"] = "strong"

    @model_validator(mode="after")
    def _one_dial(self) -> Self:
        if (self.threshold is None) == (self.strong_share is None):
            raise PathProblems([((), "set exactly one of 'threshold' or 'strong_share'")])
        return self


class Default(_Frozen):
    """The model that serves requests no rule or route claims (or, with `difficulty`,
    the strong or weak model by predicted difficulty), and what dispatch does for them
    (`policy`, as a route's: its fallback chain follows whichever model was picked)."""

    target: str
    description: str | None = None
    difficulty: Difficulty | None = None
    reasoning_target: str | None = None  # the reasoning tier, when the gate fires
    policy: RoutePolicy = RoutePolicy()

    def picks(self) -> tuple[str, ...]:
        """The models that may be picked to serve the default's requests, before its
        fallbacks: the target, the difficulty router's strong and weak models, the
        reasoning tier."""
        names = [self.target]
        if self.difficulty is not None:
            names += [self.difficulty.strong, self.difficulty.weak]
        if self.reasoning_target is not None:
            names.append(self.reasoning_target)
        return tuple(dict.fromkeys(names))


# -- rules -------------------------------------------------------------------------------


class RuleWhen(_Frozen):
    """Conditions of a rule; every condition present must hold."""

    regex: Patterns | None = None
    keywords: tuple[str, ...] | None = Field(default=None, min_length=1)
    header: dict[str, Text] | None = Field(default=None, min_length=1)
    metadata: dict[str, Text] | None = Field(default=None, min_length=1)
    has_tools: bool | None = None
    has_images: bool | None = None
    min_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        problems: list[Problem] = []
        for index, pattern in enumerate(value or ()):
            try:  # the rules layer joins the patterns into one `(?:a)|(?:b)`
                re.compile(pattern)
                re.compile(f"(?:{pattern})")
            except re.error as exc:
                hint = "; use a scoped flag group such as (?i:...)" if "flags" in str(exc) else ""
                problems.append(((index,), f"invalid regular expression {pattern!r}: {exc}{hint}"))
        PathProblems.raise_if_any(problems)
        return value

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        _check_texts(value or (), "keyword")
        return value

    @field_validator("header")
    @classmethod
    def _header_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        """Header names are case-insensitive: store them lower-cased."""
        if value is None:
            return None
        lowered: dict[str, str] = {}
        for name, wanted in value.items():
            if name.lower() in lowered:
                raise PathProblems([((name,), "header named twice (names ignore case)")])
            lowered[name.lower()] = wanted
        return lowered

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            keys = ", ".join(type(self).model_fields)
            raise PathProblems([((), f"a rule needs at least one condition ({keys})")])
        if (
            self.min_tokens is not None
            and self.max_tokens is not None
            and self.min_tokens > self.max_tokens
        ):
            raise PathProblems([(("min_tokens",), "min_tokens is greater than max_tokens")])
        return self


class Rule(_Frozen):
    """An explicit condition that sends a request to a model or to a route's target."""

    name: Name
    description: str | None = None
    when: RuleWhen
    target: str | None = None
    route: str | None = None

    @model_validator(mode="after")
    def _one_destination(self) -> Self:
        if (self.target is None) == (self.route is None):
            raise PathProblems(
                [((), "set exactly one of 'target' (a model name) or 'route' (a route name)")]
            )
        return self


# -- dispatch ----------------------------------------------------------------------------


class RetrySettings(_Frozen):
    """Retries of one model before its fallback: only on connection errors, 5xx, 408, 409
    and 429 (a timeout goes to the model's next deployment, else the fallback, at once);
    with exponential backoff and full jitter; honouring ``Retry-After``."""

    attempts: int = Field(default=2, ge=0, le=10)  # retries after the first try
    backoff_s: Seconds = 0.25
    max_backoff_s: Seconds = 8.0
    max_retry_after_s: Seconds = 30.0  # a longer Retry-After goes to the fallback at once


def _state_url(value: str) -> str:
    if value == "memory":
        return value
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            "must be 'memory' or a redis://, rediss:// or unix:// URL "
            f"(got {value.split('://')[0]!r})"
        )
    # the state package, only for a URL with a query or a path's db
    if "?" in value or (not value.startswith("unix://") and urlsplit(value).path not in ("", "/")):
        from llmroute.state.redis_conn import query_refusal

        if (why := query_refusal(value)) is not None:
            raise ValueError(why)
    return value


_NAMESPACE = r"^[A-Za-z0-9_.:-]+$"


class BreakerSettings(_Frozen):
    """A circuit breaker per deployment: open after `failures` consecutive failures, or
    when the error rate over `window_s` exceeds `error_rate` (with at least
    `min_requests`); after `cooldown_s`, let `half_open_probes` requests through; close
    on their success, reopen on a failure.

    `url` ``memory`` keeps each process's breakers to itself; a ``redis://`` URL shares
    an opening: a process whose breaker opens says so in Redis for `cooldown_s`, and
    every process reads that at most every `sync_s` per deployment and stays off the
    deployment too. A Redis call slower than `timeout_s` is skipped."""

    enabled: bool = True
    failures: int = Field(default=5, ge=1)
    error_rate: Unit = 0.5
    window_s: Seconds = 30.0
    min_requests: int = Field(default=10, ge=1)
    cooldown_s: Seconds = 30.0
    half_open_probes: int = Field(default=1, ge=1)
    url: str = "memory"
    sync_s: Seconds = 0.5
    timeout_s: Seconds = 0.05
    namespace: str = Field(default="llmroute", min_length=1, pattern=_NAMESPACE)

    _url = field_validator("url")(_state_url)


class LimitSettings(_Frozen):
    """Where the deployments' ``rpm``, ``tpm`` and ``max_in_flight`` limits and the models'
    budgets are counted: ``memory`` (this process) or
    ``redis://...`` (shared by every gateway and SDK pointed at it); a Redis call slower
    than `timeout_s` lets the request through."""

    url: str = "memory"
    timeout_s: Seconds = 0.05
    namespace: str = Field(default="llmroute", min_length=1, pattern=_NAMESPACE)

    _url = field_validator("url")(_state_url)


class DispatchSettings(_Frozen):
    """How requests reach models: retries, circuit breakers, balancing and where the
    deployments' request limits are counted. `stream_hold_s`: how long a stream is held
    back (status line included) while it has sent nothing or says nothing yet, so that a
    failure before its first words can still fall back before anything is sent; then it
    is handed to the client as it is, before its first event if none came (0: never
    held, nor handed over before its first event)."""

    retries: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    balance: Balance = "weighted"
    limits: LimitSettings = LimitSettings()
    stream_hold_s: float = Field(default=5.0, ge=0, le=600, allow_inf_nan=False)


# -- safety and the reasoning gate -------------------------------------------------------

SCAN_ROLES = ("user", "system", "assistant", "tool")
Role = Literal["user", "system", "assistant", "tool"]


class RouteTo(_Frozen):
    """The ``route: <model>`` safety action: send the request to that pool model instead
    (a local or guarded model) and to no fallback."""

    route: str


SimpleAction = Literal["allow", "redact", "block"]
AnswerAction = Literal["allow", "redact"]  # an answer's bytes may be on the wire already
Action = SimpleAction | RouteTo


class InjectionSettings(_Frozen):
    """The jailbreak / prompt-injection detector. `artifact` is ``builtin`` (trained on
    the shipped data, for the built-in encoders) or a directory written by ``llmroute
    train safety``, relative to the registry file. Long texts are scored in overlapping
    windows of `window_chars`, at most `max_windows` per request; the worst window counts.
    Window sizes are Latin characters: a character of another script counts 4, Hangul 8
    (`llmroute.safety.windows`), so the encoder reads a whole window in any script.
    Up to `extra_windows` more, past `max_windows`, are scored by the built-in static
    detector (``builtin:static`` and its shipped artifact), whatever `artifact` is, at
    `extra_threshold` (default: that artifact's calibrated threshold): ~1.5 ms a window
    instead of MiniLM's ~55; 0 turns them off. When the registry's detector is that one
    (``builtin:static`` with ``artifact: builtin``) they are more of its windows, at
    `threshold`, and `extra_threshold` is refused (`Registry`). Text past both is
    *unscanned*. `extra_threshold` with `extra_windows` 0 is refused: it would do
    nothing."""

    enabled: bool = True
    artifact: str = Field(default="builtin", min_length=1)
    threshold: Unit | None = None  # default: the artifact's calibrated threshold
    scan: tuple[Role, ...] = Field(default=("user", "tool"), min_length=1)
    history: bool = False  # also rescan turns before the last assistant message
    window_chars: int = Field(default=1000, ge=100)
    stride_chars: int = Field(default=750, ge=50)
    max_windows: int = Field(default=16, ge=1, le=1024)
    extra_windows: int = Field(default=496, ge=0, le=8192)
    extra_threshold: Unit | None = None  # default: the built-in static artifact's

    @model_validator(mode="after")
    def _stride(self) -> Self:
        if self.stride_chars > self.window_chars:
            raise PathProblems(
                [(("stride_chars",), "must not exceed window_chars (windows would leave gaps)")]
            )
        return self

    @model_validator(mode="after")
    def _unused(self) -> Self:
        """`extra_threshold` with no extra window to score at it: the operator thought it
        applied. (Keys kept while the detector is off are a warning of ``registry check``:
        turning it off for a while keeps its settings.)"""
        if self.enabled and self.extra_windows == 0 and self.extra_threshold is not None:
            raise PathProblems(
                [
                    (
                        ("extra_threshold",),
                        "extra_windows is 0, so no window is scored at it; remove it, or "
                        "set extra_windows",
                    )
                ]
            )
        return self


class PiiSettings(_Frozen):
    """The PII detector. `entities` default to every pattern type; PERSON and LOCATION
    need Presidio (the ``pii`` extra) and a spaCy model the operator installed
    (`ner_model`: its name or directory)."""

    enabled: bool = True
    entities: tuple[str, ...] | None = None
    phone_regions: tuple[str, ...] = ("US", "GB")
    ner_model: str | None = None
    scan: tuple[Role, ...] = Field(default=("user", "system", "assistant", "tool"), min_length=1)
    # the environment variable holding a secret the end-user ids' pseudonyms are keyed
    # with (HMAC-SHA-256); without one they are plain SHA-256 digests
    pseudonym_key_env: EnvName | None = None

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Checked here so that a typo names its line, not only the file (the detector,
        built after the registry loaded, would refuse it too)."""
        if not value:
            raise ValueError("name at least one region (ISO 3166 codes such as 'US', 'GB')")
        from phonenumbers import SUPPORTED_REGIONS  # here: only a registry that sets it pays

        PathProblems.raise_if_any(
            [
                ((i,), f"unknown phone region {name!r}; use ISO 3166 codes such as 'US', 'GB'")
                for i, name in enumerate(value)
                if name.upper() not in SUPPORTED_REGIONS
            ]
        )
        return value

    @field_validator("entities")
    @classmethod
    def _known(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            PathProblems.raise_if_any(
                [
                    (
                        (i,),
                        f"unknown PII type {name!r}{did_you_mean(name, PII_TYPES)}; "
                        f"types: {', '.join(PII_TYPES)}",
                    )
                    for i, name in enumerate(value)
                    if name not in PII_TYPES
                ]
            )
        return value


def _mapping_problems(
    action: object, simple: tuple[str, ...]
) -> list[tuple[tuple[str, ...], str | None]]:
    """The problems of an action written as a mapping that is not ``{route: MODEL}``
    (``{rout: M}``, ``{route: M, x: 1}``): each key beside ``route``, or ``route``
    missing. Found here, they are one error each; left to the union, each branch
    reported its own (``pii.route`` missing, ``pii.EMAIL`` unknown, ...), four lines for
    one typo. `simple`: the actions that are words."""
    if not isinstance(action, dict):
        return []
    hint = "" if "route" in action else f"; an action is {', '.join(simple)} or {{route: MODEL}}"
    extra = [
        ((str(key),), f"unknown key {key!r}{did_you_mean(str(key), ['route'])}{hint}")
        for key in action
        if key != "route"
    ]
    if extra or "route" in action:
        return list(extra)
    return [(("route",), "missing required key 'route'")]


class SafetyProfile(_Frozen):
    """What happens when a detector fires: `injection` (allow | block | route), `pii`
    (allow | redact | block | route, or per type with ``"*"`` for the rest), and
    `unscanned` for text beyond `max_windows` + `extra_windows` (allow | block),
    `unread_scripts` for text the injection classifier did not score because it is mostly
    in scripts the encoder does not read (allow | block | route). `restore`: the answer's
    placeholders go back to the client as the values they replaced. `answer_pii`: what
    happens to PII the model writes in its answer (allow | redact, or per type)."""

    injection: Action = "block"
    pii: Action | dict[str, Action] = "redact"
    unscanned: Literal["allow", "block"] = "block"
    unread_scripts: Action = "allow"
    restore: bool = False
    answer_pii: AnswerAction | dict[str, AnswerAction] = "allow"

    @field_validator("injection", "pii", "unread_scripts", mode="before")
    @classmethod
    def _one_action(cls, value: Any, info: ValidationInfo) -> Any:
        """A misspelt action is one message naming the actions, not one a member of
        the union it failed (``RouteTo: must be a mapping``, five lines for one typo)."""
        whole = info.field_name != "pii"  # nothing to cut out of the text
        if whole and value == "redact":
            what = "an injection" if info.field_name == "injection" else "unread text"
            raise ValueError(f"{what} cannot be redacted; use allow, block or route")
        simple = ("allow", "block") if whole else ("allow", "redact", "block")

        def wrong(action: object) -> str | None:
            if not isinstance(action, str) or action in simple:
                return None
            return (
                f"must be {', '.join(simple)} or {{route: MODEL}}, not {action!r}"
                f"{did_you_mean(action, simple)}"
            )

        if (said := wrong(value)) is not None:
            raise ValueError(said)
        if info.field_name == "pii" and isinstance(value, dict) and "route" in value:
            if len(value) > 1:  # read as neither: three errors, one naming a class
                raise ValueError(
                    "{route: MODEL} stands alone; per PII type, route with "
                    "{TYPE: action, '*': {route: MODEL}}"
                )
        elif info.field_name == "pii" and isinstance(value, dict):
            PathProblems.raise_if_any(
                [
                    ((name, *where), said)
                    for name, action in value.items()
                    for where, said in [*_mapping_problems(action, simple), ((), wrong(action))]
                    if said is not None
                ]
            )
        else:
            PathProblems.raise_if_any(
                [(where, said) for where, said in _mapping_problems(value, simple) if said]
            )
        return value

    @field_validator("pii", "answer_pii")
    @classmethod
    def _pii_types(cls, value: Any) -> Any:
        if isinstance(value, dict):
            known = (*PII_TYPES, "*")
            PathProblems.raise_if_any(
                [
                    (
                        (name,),
                        f"unknown PII type {name!r}{did_you_mean(name, known)}; "
                        f"types: {', '.join(known)}",
                    )
                    for name in value
                    if name not in known
                ]
            )
        return value

    def pii_action(self, pii_type: str) -> Action:
        if isinstance(self.pii, dict):
            return self.pii.get(pii_type, self.pii.get("*", "allow"))
        return self.pii

    def answer_action(self, pii_type: str) -> AnswerAction:
        if isinstance(self.answer_pii, dict):
            return self.answer_pii.get(pii_type, self.answer_pii.get("*", "allow"))
        return self.answer_pii

    def reroutes(self) -> set[str]:
        """The models this profile's ``route:`` actions send requests to."""
        pii = self.pii.values() if isinstance(self.pii, dict) else (self.pii,)
        actions = (self.injection, self.unread_scripts, *pii)
        return {action.route for action in actions if isinstance(action, RouteTo)}

    @property
    def masks_answers(self) -> bool:
        """Whether any PII type in answers is redacted."""
        kinds = (
            self.answer_pii.values() if isinstance(self.answer_pii, dict) else (self.answer_pii,)
        )
        return "redact" in kinds


class SafetySettings(_Frozen):
    """The safety layer: detectors, named profiles, and the profile for requests whose
    route names none (`profile`). Routes pick a profile with ``policy.safety``."""

    injection: InjectionSettings = InjectionSettings()
    pii: PiiSettings = PiiSettings()
    profiles: dict[str, SafetyProfile] = Field(
        default_factory=lambda: {"standard": SafetyProfile()}
    )
    profile: str = "standard"
    log_blocked_text: bool = False  # operators may opt in to logging what was blocked


class ReasoningSettings(_Frozen):
    """The reasoning gate: `triggers` (case-insensitive regexes; the built-in list when
    unset), questions with at least `min_parts` parts, requests over `long_tokens`, and a
    learned `scorer` (``builtin``, a directory from ``llmroute train reasoning``, or
    null for rules only) at `threshold` (default: the artifact's)."""

    enabled: bool = True
    triggers: tuple[str, ...] | None = None
    min_parts: int = Field(default=3, ge=2)
    long_tokens: int = Field(default=1500, ge=1)
    scorer: str | None = "builtin"
    threshold: Unit | None = None

    @field_validator("triggers")
    @classmethod
    def _compiles(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            problems: list[Problem] = []
            for i, pattern in enumerate(value):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    problems.append(((i,), f"invalid regular expression {pattern!r}: {exc}"))
            PathProblems.raise_if_any(problems)
        return value


# -- cascade and the LLM router -----------------------------------------------------------


GateKind = Literal["heuristic", "learned", "self_consistency", "verifier"]

_GATE_KEYS: dict[str, tuple[str, ...]] = {
    "heuristic": ("refusal", "truncated", "json_format", "min_chars", "max_chars"),
    "learned": ("artifact", "threshold"),
    "self_consistency": ("samples", "agreement"),
    "verifier": ("model", "threshold"),
}
"""The keys each kind of gate reads; another kind's key is refused, not ignored."""


class Gate(_Frozen):
    """A quality gate a cascade tier's answer must pass, or the request escalates.

    Only the keys of its `kind` apply: ``heuristic`` (refusals and hedging, an empty or
    truncated answer, JSON that does not parse or match the requested schema, length
    bounds); ``learned`` (a scorer over the embedding of prompt and answer, from
    ``llmroute train gate``: `artifact`, `threshold`); ``self_consistency`` (`samples`
    answers from the tier, escalate when fewer than `agreement` of them share the final
    answer); ``verifier`` (`model` is asked whether the answer is correct; escalate
    below `threshold`).
    """

    kind: GateKind = "heuristic"
    refusal: bool = True
    truncated: bool = True
    json_format: bool = True
    min_chars: int = Field(default=1, ge=0)
    max_chars: int | None = Field(default=None, ge=1)
    artifact: str = "builtin"
    threshold: Unit | None = None
    samples: int = Field(default=3, ge=2, le=10)
    agreement: Unit = 0.6
    model: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"kind": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Self:
        """A key of another kind is an error: `{kind: self_consistency, threshold: 0.8}`
        would load and gate at the default `agreement`, a typo that changes routing."""
        keys = _GATE_KEYS[self.kind]
        PathProblems.raise_if_any(
            [
                (
                    (key,),
                    f"{key!r} is not used by {with_article(self.kind)} gate; its keys: "
                    + ", ".join(keys),
                )
                for key in sorted(self.model_fields_set - {"kind", *keys})
            ]
        )
        if self.max_chars is not None and self.min_chars > self.max_chars:
            # no length passes both bounds: every answer would escalate
            raise PathProblems(
                [
                    (
                        ("max_chars",),
                        f"max_chars {self.max_chars} is below min_chars {self.min_chars}:"
                        " no answer passes, every one would escalate",
                    )
                ]
            )
        return self


class CascadeTier(_Frozen):
    """One tier: its model and, optionally, its own gates (else the cascade's)."""

    model: str
    gates: tuple[Gate, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"model": data} if isinstance(data, str) else data


class Cascade(_Frozen):
    """Try the tiers in order; each answer but the last tier's must pass the gates.

    ``cascade: [small, mid, large]`` is short for ``{tiers: [small, mid, large]}``. With
    `stream` ``buffer`` a streaming client gets the accepted tier's stream, replayed once
    its gates passed; ``passthrough`` streams the first tier without gating.
    """

    tiers: tuple[CascadeTier, ...] = Field(min_length=2)
    gates: tuple[Gate, ...] = (Gate(),)
    stream: Literal["buffer", "passthrough"] = "buffer"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"tiers": data} if isinstance(data, list | tuple) else data

    @model_validator(mode="after")
    def _last_tier_ungated(self) -> Self:
        """The last tier is served without gates (nothing follows to escalate to): gates
        given there would load and never run, so they are refused."""
        last = len(self.tiers) - 1
        if self.tiers[last].gates:
            raise PathProblems(
                [
                    (
                        ("tiers", last, "gates"),
                        "the last tier's answer is served without gates (there is no"
                        " tier to escalate to): remove its gates",
                    )
                ]
            )
        return self

    def gates_of(self, tier: CascadeTier) -> tuple[Gate, ...]:
        return self.gates if tier.gates is None else tier.gates

    def written_gates(self) -> Iterator[tuple[tuple[str | int, ...], Gate]]:
        """Every gate the cascade writes, with its path within the cascade (``("gates",
        0)``, ``("tiers", 1, "gates", 0)``): for errors that name the gate's line."""
        for k, gate in enumerate(self.gates):
            yield ("gates", k), gate
        for j, tier in enumerate(self.tiers):
            for k, gate in enumerate(tier.gates or ()):
                yield ("tiers", j, "gates", k), gate


class LlmFallback(_Frozen):
    """The LLM router: when the intent layer's margin is below `margin`, `model` picks
    the route from the route names and descriptions, within `timeout_s`, else the
    intent layer's best guess stands. `top_k` offers the model only the intent layer's
    best `top_k` routes (and ``none``) instead of every route: a short prompt and an
    easier choice for a small model. The model's verdicts on the last `memo` distinct
    requests are reused for `memo_ttl_s` seconds: a repeated request does not pay the
    call again."""

    enabled: bool = True
    model: str
    margin: Unit = 0.1
    timeout_s: Seconds = 0.3
    max_chars: int = Field(default=2000, ge=100)  # the request, truncated for the prompt
    max_concurrency: int = Field(default=4, ge=1)
    top_k: int | None = Field(default=None, ge=2)
    memo: int = Field(default=4096, ge=0)  # verdicts remembered per process; 0: none
    memo_ttl_s: Seconds = 600.0


# -- telemetry, shadow routing, drift -------------------------------------------------


PROMPT_MODES = ("off", "hash", "redacted", "full")


class TelemetrySettings(_Frozen):
    """The decision log. `url` is ``sqlite:///PATH`` (relative to the working directory)
    or ``postgresql://...``; ``$LLMROUTE_TELEMETRY_URL`` overrides it (``off`` turns the
    log off). `prompts` says what of the request text is stored: nothing, its SHA-256,
    the text with PII replaced by placeholders (safety's redaction), or the text;
    `responses` the same for the answers (off unless asked: they can be long and hold
    whatever the model said). `retention_days`: decisions older than that are erased
    (with their feedback and shadow rows) by the gateway's writer, at start and hourly;
    None keeps them."""

    enabled: bool = True
    url: str = "sqlite:///llmroute-telemetry.db"
    prompts: Literal["off", "hash", "redacted", "full"] = "hash"
    # the answers: not stored, stored with PII replaced by placeholders, or stored
    responses: Literal["off", "redacted", "full"] = "off"
    max_response_chars: int = Field(default=32_000, ge=100)  # longer answers are cut
    max_prompt_chars: int = Field(default=32_000, ge=100)  # longer prompts are stored cut
    # embeddings' and rerank's text (whole corpora): their hash only unless asked
    embeddings_text: bool = False
    queue_size: int = Field(default=10_000, ge=1)
    batch_size: int = Field(default=500, ge=1)
    flush_seconds: Seconds = 0.2
    pool_size: int = Field(default=4, ge=1)  # PostgreSQL connections
    retention_days: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @field_validator("prompts", "responses", "url", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        """YAML 1.1 reads an unquoted ``off`` as false: it means "off" here."""
        return "off" if value is False else value

    @model_validator(mode="after")
    def _known_url(self) -> Self:
        """The URL of a log that is on is checked at load, like the other sections'
        URLs, so that `registry check` and a reload refuse what `serve` would refuse at
        start."""
        from llmroute.errors import ConfigError
        from llmroute.telemetry.store.url import check_store_url

        if self.enabled and self.url.strip().lower() not in ("", "off", "none"):
            try:
                check_store_url(self.url)
            except ConfigError as exc:
                raise PathProblems([(("url",), exc.message)]) from None
        return self


class JudgeSettings(_Frozen):
    """How a shadow pair is judged: ``exact`` (normalised final answers match) or
    ``model`` (the named pool model is asked whether the routed answer is as good)."""

    kind: Literal["exact", "model"] = "model"
    model: str | None = None
    max_chars: int = Field(default=6000, ge=200)  # each answer, truncated for the judge

    @model_validator(mode="after")
    def _model_settings_for_a_model_judge(self) -> Self:
        """`model` and `max_chars` with ``kind: exact`` were accepted and ignored: the
        author meant a model to judge, and none does."""
        PathProblems.raise_if_any(
            [
                (
                    (key,),
                    f"{key!r} only applies to the model judge (kind: model); an exact judge "
                    "compares the answers and asks no model",
                )
                for key in sorted({"model", "max_chars"} & self.model_fields_set)
                if self.kind == "exact"
            ]
        )
        return self


class ShadowSettings(_Frozen):
    """Shadow routing: a sampled share of requests also goes to `reference` in the
    background; both answers are stored and judged."""

    rate: Unit
    reference: str
    judge: JudgeSettings | None = None
    routes: tuple[str, ...] | None = None  # only these routes (all when absent)
    max_concurrency: int = Field(default=4, ge=1)
    timeout: Seconds = 60.0


class AffinitySettings(_Frozen):
    """Conversation affinity: the later turns of a conversation go to the model its
    earlier turns went to, instead of each turn being routed on its own text (a model
    switched mid-conversation loses the provider's prompt cache and answers in another
    voice). `mode` ``upgrade`` (default) keeps the remembered model unless the turn's own
    decision costs more, which then becomes the conversation's model (never downgrade);
    ``keep`` always keeps it. A conversation is named by the ``x-llmroute-session``
    header, else by its opening (system prompt and first user message), within one
    client key and end user; it is remembered for `ttl_s` after its last turn, in
    memory (this process, at most `max_entries`) or in Redis (every gateway)."""

    mode: Literal["upgrade", "keep"] = "upgrade"
    ttl_s: Seconds = 3600.0
    url: str = "memory"
    max_entries: int = Field(default=100_000, ge=1)
    timeout_s: Seconds = 0.05
    namespace: str = Field(default="llmroute", min_length=1, pattern=_NAMESPACE)

    _url = field_validator("url")(_state_url)


class StoredResponsesSettings(_Frozen):
    """Stored responses for the Responses API front (``POST /v1/responses``): with this
    section a response is kept (unless its request says ``store: false``) so that a later
    request can continue it by ``previous_response_id`` and ``GET`` / ``DELETE
    /v1/responses/{id}`` find it. What is kept is the conversation's text as the client
    sent and received it (the next turn needs it verbatim), for `ttl_s` after it was
    answered, readable only with the client key that made it; in memory (this process,
    at most `max_entries` / `max_bytes`, least recently used first out) or in Redis
    (every gateway). Without this section nothing is stored. `max_background`: how many
    ``background: true`` requests one gateway process answers at a time (0: none);
    `lease_s`: how long a background response stays ``in_progress`` once the process
    making it has stopped renewing it (crashed, killed): the next read keeps it failed.
    `max_key_responses` / `max_key_bytes`: the most one client key keeps (memory and
    Redis; none: no bound per key but, in memory, the store's): past either, its least
    recently written or continued response goes, never another key's."""

    url: str = "memory"
    ttl_s: Seconds = 86_400.0
    max_entries: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    timeout_s: Seconds = 1.0
    namespace: str = Field(default="llmroute", min_length=1, pattern=_NAMESPACE)
    max_background: int = Field(default=256, ge=0)
    lease_s: Seconds = Field(default=30.0, ge=1.0)
    max_key_responses: int | None = Field(default=None, ge=1)
    max_key_bytes: int | None = Field(default=None, ge=1024)

    _url = field_validator("url")(_state_url)


class BatchesSettings(_Frozen):
    """OpenAI's Batch API (``/v1/files``, ``/v1/batches``): with this section a client
    uploads a JSONL file of requests and the gateway answers them in the background,
    `concurrency` at a time per batch and `max_running` batches at a time per process,
    each request routed and dispatched as if it had been sent alone; the answers make an
    output file. Files and batches are kept `ttl_s` (from upload, from the batch's
    creation), readable only with the client key that made them, in memory (this
    process, at most `max_entries` / `max_bytes`, a full store evicting the oldest of the
    key holding the most) or in Redis (every gateway). An uploaded file may hold at most
    `max_file_bytes` and `max_requests` lines; each client key at most `max_key_files`
    files of `max_key_bytes` in all (an upload past either is refused; none: no
    per-key bound but the memory store's) and `max_key_batches` batches running or
    queued (a batch past it is refused; none: no bound); a batch
    whose process stops is taken over by another gateway (Redis: each looks every
    `lease_s`, and a read takes it over at once; after a crash, once its `lease_s`
    lapses), or kept failed with the answers it had made (memory). Live traffic first:
    each request of a batch waits up to `yield_s` for the live requests in flight on its
    process to finish before it is sent. Without this section the endpoints answer 404."""

    url: str = "memory"
    ttl_s: Seconds = 7 * 86_400.0
    max_entries: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    max_file_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    max_requests: int = Field(default=50_000, ge=1)
    max_key_files: int | None = Field(default=None, ge=1)
    max_key_bytes: int | None = Field(default=None, ge=1024)
    max_key_batches: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=8, ge=1, le=1024)
    max_running: int = Field(default=4, ge=1)
    timeout_s: Seconds = 5.0
    namespace: str = Field(default="llmroute", min_length=1, pattern=_NAMESPACE)
    lease_s: Seconds = Field(default=30.0, ge=1.0)
    yield_s: float = Field(default=0.05, ge=0.0, le=10.0, allow_inf_nan=False)

    _url = field_validator("url")(_state_url)

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.url == "memory" and self.max_file_bytes > self.max_bytes:
            raise ValueError(
                f"max_file_bytes ({self.max_file_bytes}) is larger than max_bytes "
                f"({self.max_bytes}), all the memory store may hold: a file that size could "
                "never be kept"
            )
        if self.max_key_bytes is not None and self.max_file_bytes > self.max_key_bytes:
            raise ValueError(
                f"max_file_bytes ({self.max_file_bytes}) is larger than max_key_bytes "
                f"({self.max_key_bytes}), all one client key's files may hold: a file that "
                "size could never be uploaded"
            )
        return self


# -- response cache -----------------------------------------------------------------


class ApiKey(_Frozen):
    """One client key of the gateway. The key itself never sits in the file: either
    `key_env` names the environment variable holding it, or `sha256` is the hex SHA-256
    of it (``printf %s "$KEY" | sha256sum``). Either may be a list, so a key can be
    rotated without downtime: list the new one beside the old, move the clients, drop the
    old; both count as this one name (its rpm, budget and telemetry). `admin` keys may
    also read /dashboard and /metrics; `rpm` caps the key's requests per minute, `tpm`
    its tokens per minute (prompt and completion, counted as requests finish) and
    `budget` what its requests may cost per calendar period (all counted where
    ``dispatch.limits`` says); `models` lists the ``model`` values it may send (``auto``,
    route names, pool model names, ``router-*``); `pool` lists the pool models its
    requests may reach at all (serving, fallbacks, cascade tiers and gates, the LLM
    router, shadow copies, embeddings): routing then stays inside it. `tags` are added
    to every request of the key in the decision log (the operator's, where a request's own
    ``x-llmroute-tags`` are what its client asserts); with `header_tags` false the key's
    requests may not carry their own (a chargeback resting on the key's tags alone)."""

    name: Name
    key_env: EnvNames | None = None
    sha256: Sha256s | None = None
    admin: bool = False
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    budget: Budget | None = None
    models: tuple[str, ...] | None = None  # what it may ask for; None: anything
    pool: tuple[str, ...] | None = Field(default=None, min_length=1)  # None: every model
    # tags every request of the key is attributed to, beside its x-llmroute-tags
    tags: tuple[str, ...] = ()
    header_tags: bool = True  # whether its requests may add x-llmroute-tags of their own

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from llmroute.telemetry.attribution import parse_tags

        for tag in value:
            if "," in tag or tag != tag.strip():
                raise ValueError(f"tag {tag!r}: one tag per entry, without spaces around it")
        return parse_tags(",".join(value)) if value else ()

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.key_env is None) == (self.sha256 is None):
            raise ValueError("give exactly one of key_env (a variable holding it) or sha256")
        return self

    def model_refusal(self, model: object, resolved: str | None = None) -> str | None:
        """Why this key may not send `model` (no ``model`` counts as ``auto``): its
        `models` list neither it nor `resolved`, an alias's target; None when it may. The
        gateway's 403 ``model_not_allowed`` says it, and ``llmroute route --key``."""
        if self.models is None:
            return None
        name = model if isinstance(model, str) and model else "auto"
        if name in self.models or resolved in self.models:
            return None
        return f"key {self.name!r} may not use model {shown(name)}; it may use: " + ", ".join(
            self.models
        )


class AuthSettings(_Frozen):
    """Client authentication for the gateway: every request but /health and /ready
    must carry one of `keys` (``Authorization: Bearer KEY``, as OpenAI clients send
    their api_key). `public_metrics` lets /metrics be scraped without a key."""

    keys: tuple[ApiKey, ...] = Field(min_length=1)
    public_metrics: bool = False

    @field_validator("keys")
    @classmethod
    def _unique(cls, value: tuple[ApiKey, ...]) -> tuple[ApiKey, ...]:
        names = [k.name for k in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"key names must be unique; repeated: {', '.join(twice)}")
        return value


CACHE_SCHEMES = ("memory", "redis://", "rediss://", "unix://")
# An entry is held whole in each gateway that stores or serves it (and in one Redis
# value): 64 MiB is 3x the largest chat answer measured (21 MB of logprobs). A larger
# bound (10 GB was accepted) would only let one answer take the memory cache's whole
# `max_bytes`, or a worker's memory.
MAX_CACHE_ENTRY_BYTES = 64 * 1024 * 1024


class SemanticCacheSettings(_Frozen):
    """The response cache's semantic lookup: a request that misses the exact key, whose
    conversation context (system prompt, earlier turns, parameters, routing decision,
    client key) matches a stored one exactly and whose last user message embeds within
    cosine `threshold` of that one's (whose numbers are the same, and which share at
    least `min_word_overlap` of their word pairs: embeddings do not see who does what to
    whom), is answered with the stored answer. Each context
    keeps its `max_per_context` latest messages; the memory store keeps `max_contexts`
    contexts, least recently used first out. Only texts of at most `max_chars`
    characters are looked up by meaning: the encoder sees at most ``max_tokens`` tokens
    (a token is at least one character), and two longer texts that share their first
    ones would embed the same."""

    threshold: float = Field(default=0.97, gt=0, le=1)
    min_word_overlap: float = Field(default=0.5, ge=0, le=1)
    max_chars: int = Field(default=254, ge=1)
    max_per_context: int = Field(default=64, ge=1, le=4096)
    max_contexts: int = Field(default=10_000, ge=1)


class CacheSettings(_Frozen):
    """The response cache: a request identical to an earlier one (same routing decision,
    same body as sent upstream) is answered from the cache within `ttl_s`, without an
    upstream call. `url` is ``memory`` (per process, least recently used entries dropped
    beyond `max_entries` or `max_bytes`) or ``redis://...`` (shared by every gateway that
    points at it); ``$LLMROUTE_CACHE_URL`` overrides it (``off`` turns the cache off).
    Answers over `max_entry_bytes` are not stored; `streams` also stores and replays
    streamed answers; `routes` caches only those routes (all when absent); `semantic`
    adds the lookup by meaning (`SemanticCacheSettings`, off when absent);
    `evict_on_feedback` drops an answer a user judged wrong (thumbs down, or a score
    under 0.5, on ``POST /v1/feedback``) so that nobody is served it again. A Redis call
    slower than `timeout_s`, or a Redis that is down, is a miss, never an error."""

    enabled: bool = True
    url: str = "memory"
    ttl_s: Seconds = 600.0
    max_entries: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    max_entry_bytes: int = Field(default=1024 * 1024, ge=1024, le=MAX_CACHE_ENTRY_BYTES)
    streams: bool = True
    routes: tuple[str, ...] | None = None
    semantic: SemanticCacheSettings | None = None
    evict_on_feedback: bool = True
    timeout_s: Seconds = 0.05
    namespace: str = Field(default="llmroute", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value != "memory" and not value.startswith(CACHE_SCHEMES[1:]):
            raise ValueError(
                "must be 'memory' or a redis://, rediss:// or unix:// URL "
                f"(got {value.split('://')[0]!r})"
            )
        return _state_url(value)


class DriftSettings(_Frozen):
    """Bounds beyond which `llmroute drift` flags a route."""

    margin_drop: float = Field(default=0.05, ge=0)  # median margin fall, absolute
    psi: float = Field(default=0.25, gt=0)  # population stability index of margins
    ks_p: Unit = 0.01  # Kolmogorov–Smirnov p-value below which margins differ
    default_rate_rise: Unit = 0.05  # rise in the share sent to the default route
    min_requests: int = Field(default=30, ge=1)  # per route and window


# -- the registry ------------------------------------------------------------------------


_IN_PROCESS = frozenset({"llamacpp", "echo"})


def _policy_reach(place: Route | Default, safety: SafetySettings | None) -> set[str]:
    """Every model a route's (or the default's) policy bounds: its target and reasoning
    tier (the default's difficulty models), fallbacks, cascade tiers, the verifier gates
    they call, and the models its safety profile reroutes to (a rerouted request keeps
    the route's policy)."""
    policy = place.policy
    names = {place.target, *policy.fallback}
    if safety is not None:
        profile = safety.profiles.get(policy.safety or safety.profile)
        if profile is not None:
            names.update(profile.reroutes())
    optional = (place.reasoning_target, policy.context_fallback, policy.content_fallback)
    names.update(n for n in optional if n is not None)
    if isinstance(place, Default):
        names.update(place.picks())
    elif place.cascade is not None:
        cascade = place.cascade
        names.update(tier.model for tier in cascade.tiers)
        for tier in cascade.tiers:
            names.update(
                g.model for g in cascade.gates_of(tier) if g.kind == "verifier" and g.model
            )
    return names


class Registry(_Frozen):
    """A validated route registry: encoder, providers, model pool, routes, rules, default."""

    version: int = Field(default=1, ge=0)
    encoder: EncoderSpec = BuiltinEncoderSpec(name="minilm")
    providers: dict[str, Provider] = Field(min_length=1)
    models: dict[str, Model] = Field(min_length=1)
    intent: IntentSettings = IntentSettings()
    routes: tuple[Route, ...] = Field(min_length=1)
    default: Default
    rules: tuple[Rule, ...] = ()
    dispatch: DispatchSettings = DispatchSettings()
    safety: SafetySettings | None = None
    reasoning: ReasoningSettings | None = None
    llm_fallback: LlmFallback | None = None
    affinity: AffinitySettings | None = None
    stored_responses: StoredResponsesSettings | None = None
    batches: BatchesSettings | None = None
    telemetry: TelemetrySettings = TelemetrySettings()
    shadow: ShadowSettings | None = None
    drift: DriftSettings = DriftSettings()
    cache: CacheSettings | None = None
    auth: AuthSettings | None = None
    aliases: dict[str, str] = Field(default_factory=dict)

    @field_validator("providers", "models")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems: list[Problem] = []
        for key in value:
            try:
                _check_name(key)
            except ValueError as exc:
                problems.append(((key,), str(exc)))
        PathProblems.raise_if_any(problems)
        return value

    @model_validator(mode="after")
    def _references(self) -> Self:
        PathProblems.raise_if_any(
            [
                *self._model_problems(),
                *self._kind_problems(),
                *self._connect_problems(),
                *self._thinking_problems(),
                *self._budget_problems(),
                *self._text_problems(),
                *self._route_problems(),
                *self._rule_problems(),
                *self._guard_problems(),
                *self._shadow_problems(),
                *self._cascade_problems(),
                *self._cache_problems(),
                *self._auth_problems(),
                *self._alias_problems(),
            ]
        )
        return self

    def _is_name(self, name: str) -> bool:
        """Whether `name` is a ``model`` value without aliases: ``auto``, a route, a pool
        model or a difficulty router string."""
        return (
            name == "auto"
            or name in self.models
            or name.startswith("router-")
            or any(route.name == name for route in self.routes)
        )

    def _missing_router(self, name: str) -> bool:
        """Whether `name` asks for a difficulty router this registry lacks: a route or a
        pool model of that name is served as itself first (`plan.model_layers`)."""
        return (
            name.startswith("router-")
            and self.default.difficulty is None
            and name not in self.models
            and not any(route.name == name for route in self.routes)
        )

    def exact_aliases(self) -> dict[str, str]:
        """The aliases that name one ``model`` value (not glob patterns)."""
        return {alias: t for alias, t in self.aliases.items() if not _is_glob(alias)}

    def resolve_alias(self, name: str) -> str:
        """The ``model`` value `name` stands for: an exact alias's target, else `name`
        itself when it names something, else the first glob alias (file order) it
        matches; `name` unchanged when none does (it is then unknown)."""
        exact = self.aliases.get(name)
        if exact is not None:
            return exact
        if not self.aliases or self._is_name(name):
            return name
        for pattern, target in self.aliases.items():
            if _is_glob(pattern) and fnmatchcase(name, pattern):
                return target
        return name

    def route(self, name: str) -> Route:
        """The route called `name`; KeyError when there is none."""
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(f"no route named {name!r}")

    def model(self, name: str) -> Model:
        """The model called `name`; KeyError when there is none."""
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"no model named {name!r}") from None

    def threshold(self, route: Route) -> float:
        """The route's own threshold, else the registry-wide `intent.threshold`."""
        return self.intent.threshold if route.threshold is None else route.threshold

    def _unknown_model(self, name: str) -> str | None:
        """Why `name` cannot serve chat requests, or None when it can."""
        if name not in self.models:
            known = ", ".join(sorted(self.models))
            return f"unknown model {name!r}{did_you_mean(name, self.models)}; models: {known}"
        if (kind := self.models[name].kind) != "chat":
            return f"model {name!r} is {with_article(kind)} model; chat requests need a chat model"
        return None

    def _not_a_tier(self, name: str) -> str | None:
        """Why `name` cannot be a reasoning tier, or None when it can."""
        if (message := self._unknown_model(name)) is not None:
            return message
        if self.models[name].reasoning is False:
            return f"model {name!r} is declared 'reasoning: false'; a reasoning tier must think"
        return None

    def _unknown_provider(self, name: str) -> str | None:
        if name in self.providers:
            return None
        known = ", ".join(sorted(self.providers))
        hint = did_you_mean(name, self.providers)
        return f"unknown provider {name!r}{hint}; providers: {known}"

    def _model_problems(self) -> Iterator[Problem]:
        for name, model in self.models.items():
            if model.provider is not None and (message := self._unknown_provider(model.provider)):
                yield ("models", name, "provider"), message
            for i, deployment in enumerate(model.deployments):
                if (message := self._unknown_provider(deployment.provider)) is not None:
                    yield ("models", name, "deployments", i, "provider"), message
            for limit in ("rpm", "tpm", "max_in_flight"):
                if getattr(model, limit) is not None and model.deployments:
                    yield (
                        ("models", name, limit),
                        f"a model with deployments takes '{limit}' on each deployment",
                    )
        if (message := self._unknown_model(self.default.target)) is not None:
            yield ("default", "target"), message
        difficulty = self.default.difficulty
        if difficulty is not None:
            for key, wanted in (("strong", difficulty.strong), ("weak", difficulty.weak)):
                if (message := self._unknown_model(wanted)) is not None:
                    yield ("default", "difficulty", key), message

    def _kind_problems(self) -> Iterator[Problem]:
        """Embedding and rerank models: served over HTTP APIs only OpenAI-compatible
        servers (and the echo) speak; a price per search only for rerankers."""
        for name, model in self.models.items():
            if model.kind != "chat" and any(
                self.providers[d.provider].kind not in ("openai", "echo")
                for d in model.targets()
                if d.provider in self.providers
            ):
                yield (
                    ("models", name, "kind"),
                    f"{model.kind} models must be served by an OpenAI-compatible "
                    "(or echo) provider",
                )
            if model.price.search is not None and model.kind != "rerank":
                yield (
                    ("models", name, "price", "search"),
                    "a price per search is for rerank models (kind: rerank)",
                )

    def _in_process(self, name: str) -> bool:
        """Whether the model `name` is served by in-process providers alone (llamacpp,
        echo): nothing it is sent opens a connection."""
        model = self.models.get(name)
        return model is not None and all(
            d.provider in self.providers and self.providers[d.provider].kind in _IN_PROCESS
            for d in model.targets()
        )

    def _connect_problems(self) -> Iterator[Problem]:
        """`connect_timeout_s` where no connection is opened: on a model served in-process
        alone, or a route every model of which is (a provider of those kinds already
        refuses it). A model with an HTTP deployment too keeps it: it bounds that one."""
        said = "is not used where nothing connects: "
        for name, model in self.models.items():
            if model.connect_timeout_s is not None and self._in_process(name):
                kinds = sorted({self.providers[d.provider].kind for d in model.targets()})
                yield (
                    ("models", name, "connect_timeout_s"),
                    f"'connect_timeout_s' {said}the model is served by "
                    f"{' and '.join(kinds)} providers alone, in this process",
                )
        places: list[tuple[tuple[str | int, ...], Route | Default, str]] = [
            (("routes", i), route, "the route") for i, route in enumerate(self.routes)
        ]
        places.append((("default",), self.default, "the default"))
        for path, place, which in places:
            if place.policy.connect_timeout_s is None:
                continue
            reach = _policy_reach(place, self.safety)
            if all(self._in_process(name) for name in reach):
                yield (
                    (*path, "policy", "connect_timeout_s"),
                    f"'connect_timeout_s' {said}every model of {which} "
                    f"({', '.join(sorted(reach))}) is served in this process "
                    "(llamacpp or echo providers)",
                )

    def _thinking_problems(self) -> Iterator[Problem]:
        """`reasoning.thinking` with ``param: auto`` on a model no Anthropic provider
        serves: ``auto`` is then ``reasoning_effort``, which never sends ``thinking``, so
        the setting did nothing (as with an explicit ``param: reasoning_effort``)."""
        for name, model in self.models.items():
            reasoning = model.reasoning
            if not isinstance(reasoning, Reasoning) or reasoning.param != "auto":
                continue
            if reasoning.thinking == "auto":
                continue
            kinds = {
                self.providers[d.provider].kind
                for d in model.targets()
                if d.provider in self.providers
            }
            if kinds and not kinds & ANTHROPIC_KINDS:
                yield (
                    ("models", name, "reasoning", "thinking"),
                    f"'thinking' is for Anthropic's thinking, but this model is served by"
                    f" {' and '.join(sorted(kinds))} providers, where param auto is"
                    " reasoning_effort: set param: thinking for a proxy that takes"
                    " Anthropic's thinking, or leave 'thinking' out",
                )

    def _text_problems(self) -> Iterator[Problem]:
        for name, model in self.models.items():
            if model.fim_template is not None and not model.text_completions:
                yield (
                    ("models", name, "fim_template"),
                    "a fill-in-the-middle template is for a model declared text_completions: true",
                )
            if not model.text_completions:
                continue
            where = ("models", name, "text_completions")
            if model.kind != "chat":
                yield where, f"{with_article(model.kind)} model completes no text"
            elif any(
                self.providers[d.provider].kind not in ("openai", "echo")
                for d in model.targets()
                if d.provider in self.providers
            ):
                yield (
                    where,
                    "text completions go to POST /completions of an OpenAI-compatible server: "
                    "every provider serving this model must be of kind openai (or echo)",
                )

    def _budget_problems(self) -> Iterator[Problem]:
        """A hard budget holds each call's worst case: the models it applies to need a
        bound on their answers."""
        for name, model in self.models.items():
            if model.budget is not None and model.budget.hard and self._unbounded(model):
                yield (
                    ("models", name, "budget", "hard"),
                    "a hard budget holds each call's worst case, so the model needs a bound on "
                    "its answers: set max_output_tokens (or context_window, or params.max_tokens)",
                )
        for i, key in enumerate(self.auth.keys if self.auth is not None else ()):
            if key.budget is None or not key.budget.hard:
                continue
            reach = key.pool if key.pool is not None else tuple(self.models)
            loose = [m for m in reach if m in self.models and self._unbounded(self.models[m])]
            if loose:
                yield (
                    ("auth", "keys", i, "budget", "hard"),
                    "a hard budget holds each call's worst case, so every model the key may "
                    f"reach (its pool) needs a bound on its answers; {', '.join(loose)} "
                    "has none: set max_output_tokens (or context_window, or params.max_tokens)",
                )

    def _unbounded(self, model: Model) -> bool:
        """Whether the chat model's answers have no bound a worst case could use."""
        if model.kind != "chat":
            return False
        if model.context_window is not None or model.max_output_tokens is not None:
            return False
        if any(key in model.params for key in ANSWER_LIMITS):
            return False
        targets = model.targets()
        kinds = {self.providers[d.provider].kind for d in targets if d.provider in self.providers}
        return not kinds <= ANTHROPIC_KINDS | {"llamacpp", "echo"}  # these always bound one

    def _route_problems(self) -> Iterator[Problem]:
        first: dict[str, int] = {}
        for i, route in enumerate(self.routes):
            if route.name in first:
                yield (
                    ("routes", i, "name"),
                    f"duplicate route name {route.name!r} "
                    f"(first used by routes[{first[route.name]}])",
                )
            first.setdefault(route.name, i)
            if (message := self._unknown_model(route.target)) is not None:
                yield ("routes", i, "target"), message
            own = (route.target, "route")
            yield from self._policy_problems(("routes", i, "policy"), route.policy, own)
        default = self.default
        # with a difficulty router, the target is one pick of several: a fallback naming
        # it serves the strong or weak model's requests (the picked model is skipped)
        mine = (default.target, "default") if default.difficulty is None else None
        yield from self._policy_problems(("default", "policy"), default.policy, mine)

    def _policy_problems(
        self, path: tuple[str | int, ...], policy: RoutePolicy, own: tuple[str, str] | None
    ) -> Iterator[Problem]:
        """The models a policy names: chat models of the pool; a fallback not the
        route's (or the default's) own target, `own`, when there is one."""
        for j, name in enumerate(policy.fallback):
            if (message := self._unknown_model(name)) is not None:
                yield (*path, "fallback", j), message
            elif own is not None and name == own[0]:
                yield (
                    (*path, "fallback", j),
                    f"{name!r} is the {own[1]}'s own target; fallbacks are other models",
                )
        for field in ("context_fallback", "content_fallback"):
            other = getattr(policy, field)
            if other is not None and (message := self._unknown_model(other)) is not None:
                yield (*path, field), message

    def _rule_problems(self) -> Iterator[Problem]:
        first: dict[str, int] = {}
        routes = [route.name for route in self.routes]
        for i, rule in enumerate(self.rules):
            if rule.name in first:
                yield (
                    ("rules", i, "name"),
                    f"duplicate rule name {rule.name!r} (first used by rules[{first[rule.name]}])",
                )
            first.setdefault(rule.name, i)
            if rule.target is not None and (message := self._unknown_model(rule.target)):
                yield ("rules", i, "target"), message
            if rule.route is not None and rule.route not in routes:
                yield (
                    ("rules", i, "route"),
                    f"unknown route {rule.route!r}{did_you_mean(rule.route, routes)}; "
                    f"routes: {', '.join(routes)}",
                )

    def _cascade_problems(self) -> Iterator[Problem]:
        """Cascade tiers, verifier models and the LLM router name chat models; a route's
        target is its cascade's first tier."""
        for i, route in enumerate(self.routes):
            cascade = route.cascade
            if cascade is None:
                continue
            where = ("routes", i, "cascade")
            if cascade.tiers[0].model != route.target:
                yield (
                    (*where, "tiers", 0),
                    (
                        f"the first tier must be the route's target {route.target!r}, "
                        f"not {cascade.tiers[0].model!r}"
                    ),
                )
            for j, tier in enumerate(cascade.tiers):
                if (message := self._unknown_model(tier.model)) is not None:
                    yield (*where, "tiers", j, "model"), message
                if tier.model in (t.model for t in cascade.tiers[:j]):
                    yield (
                        (*where, "tiers", j, "model"),
                        f"model {tier.model!r} is twice in the cascade",
                    )
            yield from self._verifier_problems(where, cascade)
        fallback = self.llm_fallback
        if fallback is not None and (message := self._unknown_model(fallback.model)) is not None:
            yield ("llm_fallback", "model"), message
        if fallback is not None and fallback.enabled:
            yield from self._llm_answer_problems()

    def _llm_answer_problems(self) -> Iterator[Problem]:
        """A route named as the LLM router's answer for the default, which it would
        never be chosen for (the answer sends the request to the default)."""
        for i, route in enumerate(self.routes):
            if route.name == _LLM_NONE:
                yield (
                    ("routes", i, "name"),
                    f"{_LLM_NONE!r} is the LLM router's answer for the default "
                    "(llm_fallback): a route of that name could never be chosen; choose "
                    "another route name",
                )

    def _verifier_problems(
        self, where: tuple[str | int, ...], cascade: Cascade
    ) -> Iterator[Problem]:
        for path, gate in cascade.written_gates():
            if gate.kind != "verifier":
                continue
            if gate.model is None:
                yield (*where, *path, "model"), "a verifier gate needs 'model'"
            elif (message := self._unknown_model(gate.model)) is not None:
                yield (*where, *path, "model"), message

    def _cache_problems(self) -> Iterator[Problem]:
        if self.cache is None:
            return
        semantic = self.cache.semantic
        seen = self.encoder.max_tokens - 2 if isinstance(self.encoder, BuiltinEncoderSpec) else None
        if semantic is not None and seen is not None and semantic.max_chars > seen:
            yield (
                ("cache", "semantic", "max_chars"),
                (
                    f"{semantic.max_chars} is more than the encoder sees for sure ({seen} "
                    "characters: max_tokens less [CLS] and [SEP]); two longer messages that "
                    "share their first ones would embed the same. Lower it, or raise "
                    "encoder.max_tokens"
                ),
            )
        if self.cache.routes is None:
            return
        names = [route.name for route in self.routes]
        known = [*names, "default", "pinned"]
        for i, name in enumerate(self.cache.routes):
            if name not in known:
                hint = did_you_mean(name, known)
                yield ("cache", "routes", i), f"unknown route {name!r}{hint}"

    def _alias_problems(self) -> Iterator[Problem]:
        for alias, target in self.aliases.items():
            path = ("aliases", alias)
            if not alias or not target:
                yield path, "an alias and its target must be non-empty"
            elif (problem := _free_name_problem(alias)) is not None:
                yield path, problem
            elif not _is_glob(alias) and self._is_name(alias):
                yield path, f"alias {alias!r} would hide the route or model of that name"
            elif target in self.aliases:
                yield path, f"target {target!r} is itself an alias: aliases do not chain"
            elif self._missing_router(target):
                yield path, _NO_DIFFICULTY_ROUTER % f"target {target!r}"
            elif not self._is_name(target):
                known = ["auto", *(route.name for route in self.routes), *self.models]
                hint = did_you_mean(target, known)
                yield (
                    path,
                    f"unknown target {target!r}{hint}: use auto, a route, a pool model "
                    "or a router-<name>-<threshold> model",
                )

    def _auth_problems(self) -> Iterator[Problem]:
        if self.auth is None:
            return
        known = ["auto", *(route.name for route in self.routes), *self.models]
        known += [alias for alias in self.aliases if not _is_glob(alias)]
        for i, key in enumerate(self.auth.keys):
            for j, name in enumerate(key.models or ()):
                where = ("auth", "keys", i, "models", j)
                if self._missing_router(name):
                    yield where, _NO_DIFFICULTY_ROUTER % f"model {name!r}"
                elif name not in known and not name.startswith("router-"):
                    hint = did_you_mean(name, known)
                    yield where, f"unknown model {name!r}{hint}"
                elif key.pool is not None and name in self.models and name not in key.pool:
                    yield (
                        ("auth", "keys", i, "models", j),
                        f"{name!r} is not in this key's pool ({', '.join(key.pool)})",
                    )
            for j, name in enumerate(key.pool or ()):
                if name not in self.models:  # chat and embedding models both belong here
                    hint = did_you_mean(name, self.models)
                    models = ", ".join(sorted(self.models))
                    yield (
                        ("auth", "keys", i, "pool", j),
                        f"unknown model {name!r}{hint}; models: {models}",
                    )

    def _shadow_problems(self) -> Iterator[Problem]:
        shadow = self.shadow
        if shadow is None:
            return
        if (message := self._unknown_model(shadow.reference)) is not None:
            yield ("shadow", "reference"), message
        for i, name in enumerate(shadow.routes or ()):
            names = [route.name for route in self.routes]
            if name not in names:
                hint = did_you_mean(name, names)
                yield ("shadow", "routes", i), f"unknown route {name!r}{hint}"
        judge = shadow.judge
        if judge is not None and judge.kind == "model":
            if judge.model is None:
                yield ("shadow", "judge", "model"), "a model judge needs 'model'"
            elif (message := self._unknown_model(judge.model)) is not None:
                yield ("shadow", "judge", "model"), message

    def _guard_problems(self) -> Iterator[Problem]:
        """Safety profiles and reasoning tiers name things that must exist."""
        for i, route in enumerate(self.routes):
            tier = route.reasoning_target
            if tier is not None and (message := self._not_a_tier(tier)) is not None:
                yield ("routes", i, "reasoning_target"), message
        tier = self.default.reasoning_target
        if tier is not None and (message := self._not_a_tier(tier)) is not None:
            yield ("default", "reasoning_target"), message
        safety = self.safety
        profiles = {} if safety is None else safety.profiles
        for i, route in enumerate(self.routes):
            wanted = route.policy.safety
            if wanted is not None and wanted not in profiles:
                yield ("routes", i, "policy", "safety"), self._unknown_profile(wanted, profiles)
        wanted = self.default.policy.safety
        if wanted is not None and wanted not in profiles:
            yield ("default", "policy", "safety"), self._unknown_profile(wanted, profiles)
        if safety is None:
            return
        yield from self._extra_threshold_problems()
        if not profiles:
            yield (
                ("safety", "profiles"),
                "is empty: define the profiles requests get, or leave profiles out for the "
                "built-in 'standard'",
            )
        elif safety.profile not in profiles and "profile" not in safety.model_fields_set:
            # `profiles` replaces the built-in `standard` that `profile` defaults to
            named = " or ".join(f"profile: {name}" for name in sorted(profiles))
            yield (
                ("safety", "profile"),
                f"not given, so {safety.profile!r}, which safety.profiles does not define "
                f"(profiles: {', '.join(sorted(profiles))}); name the profile requests get: "
                f"{named}",
            )
        elif safety.profile not in profiles:
            yield ("safety", "profile"), self._unknown_profile(safety.profile, profiles)
        for name, profile in profiles.items():
            yield from self._profile_problems(name, profile, safety.pii.enabled)

    def _extra_threshold_problems(self) -> Iterator[Problem]:
        """``injection.extra_threshold`` set where the registry's detector is the built-in
        static one: the windows past ``max_windows`` are more of its windows, at
        `threshold` (`llmroute.layers.safety`'s ``_extra_windows``), so it would be
        ignored."""
        safety, encoder = self.safety, self.encoder
        if (
            safety is not None
            and safety.injection.enabled
            and safety.injection.extra_threshold is not None
            and safety.injection.artifact == "builtin"
            and isinstance(encoder, BuiltinEncoderSpec)
            and encoder.name == "static"
        ):
            yield (
                ("safety", "injection", "extra_threshold"),
                "the registry's detector is the built-in static one (encoder builtin:static, "
                "artifact: builtin), so the windows past max_windows are more of its windows, "
                "flagged at injection.threshold: set threshold instead",
            )

    def _profile_problems(self, name: str, profile: SafetyProfile, pii: bool) -> Iterator[Problem]:
        """A profile's reroutes name pool models; redacting answers needs the detector."""
        if (problem := _free_name_problem(name)) is not None:
            yield ("safety", "profiles", name), problem
        elif "+" in name:
            # '+' joins the names of profiles applied together (a route's, then the one a
            # request moved to): a profile named so would be taken for such a pair
            yield (
                ("safety", "profiles", name),
                "a profile's name must not hold '+' (it names two profiles applied "
                "together, as in 'open+strict')",
            )
        actions: list[tuple[tuple[str | int, ...], Action]] = [
            (("injection",), profile.injection),
            (("unread_scripts",), profile.unread_scripts),
        ]
        if isinstance(profile.pii, dict):
            actions.extend((("pii", k), v) for k, v in profile.pii.items())
        else:
            actions.append((("pii",), profile.pii))
        for path, action in actions:
            if isinstance(action, RouteTo) and (message := self._unknown_model(action.route)):
                yield ("safety", "profiles", name, *path, "route"), message
        if profile.masks_answers and not pii:
            yield (
                ("safety", "profiles", name, "answer_pii"),
                "redacting answers needs the PII detector; safety.pii.enabled is false",
            )

    @staticmethod
    def _unknown_profile(name: str, profiles: Mapping[str, SafetyProfile]) -> str:
        if not profiles:
            return f"safety profile {name!r} is named, and the registry has no 'safety' section"
        known = ", ".join(sorted(profiles))
        return f"unknown safety profile {name!r}{did_you_mean(name, profiles)}; profiles: {known}"
