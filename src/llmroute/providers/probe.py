"""Ask each model of a registry's pool once, before it serves traffic: is its server
reachable, are the credentials accepted, does the server know the model's name, and
(with `chat`) does the model answer. What `llmroute registry probe` prints.

A listing (``GET /models``) costs nothing and catches the common mistakes: a wrong
``base_url``, an unset or refused key, a model name the server does not have. Only
`chat` spends tokens: one short request per model and deployment, thinking turned off
where the registry says how; for a model declared ``text_completions``, also one
fill-in-the-middle completion as the gateway would send it (``suffix`` as the field, or
written in by the model's ``fim_template``), which tells a server that refuses the field
(vLLM) before an editor does.
"""

from __future__ import annotations

import asyncio
import difflib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from yarl import URL

from llmroute.errors import (
    LlmrouteError,
    ProviderError,
    ProviderMisconfigured,
    UpstreamRejected,
    counted,
)
from llmroute.providers.base import (
    NOT_A_MODEL_LIST,
    ChatProvider,
    EmbeddingProvider,
    ModelLister,
    RerankProvider,
    TextProvider,
    Timeouts,
)
from llmroute.providers.bedrock import missing_credentials
from llmroute.providers.build import build_http
from llmroute.providers.vertex import VertexProvider
from llmroute.registry.schema import (
    Model,
    OpenAIEncoderSpec,
    Provider,
    Registry,
    UnsendableCredential,
    unset_credentials,
)

__all__ = [
    "PROBE_MAX_TOKENS",
    "PROBE_PREFIX",
    "PROBE_PROMPT",
    "PROBE_SUFFIX",
    "Probe",
    "Status",
    "probe_pool",
    "text_probe_body",
]

Status = Literal["ok", "warn", "fail"]
PROBE_PROMPT = "Reply with the single word OK."
PROBE_DOCUMENTS = ("OK", "a document that says something else")  # what a reranker orders
PROBE_MAX_TOKENS = 16
PROBE_PREFIX = "def add(a, b):\n    "
PROBE_SUFFIX = "\n\nprint(add(1, 2))\n"
ENCODER_ROW = "(encoder)"  # the row of a registry's remote routing encoder
_CONCURRENCY = 8
_MAX_SUGGESTIONS = 3


@dataclass(frozen=True, slots=True)
class Probe:
    """One pool model on one deployment: what was asked and what came back."""

    model: str  # the pool model's name (`ENCODER_ROW` for the routing encoder)
    provider: str
    upstream: str  # the provider's name for the model
    where: str  # the base URL without credentials or query; a GGUF's path
    status: Status
    detail: str
    listed: bool | None = None  # in the server's model list; None: not listed or not asked
    latency_ms: float | None = None  # of the chat call (with `chat`) or of the listing
    served_as: str | None = None  # the answer's ``model`` when it names another

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Listing:
    ids: frozenset[str] | None  # None: the server answered but lists nothing we can read
    error: ProviderError | None
    latency_ms: float
    note: str | None = None  # why there is no listing, when none was asked for


# Vertex AI lists no publisher models (Claude's) under a project: only the token is got.
_VERTEX_NOTE = "a Google access token was issued; Vertex AI lists no Claude models (--chat asks)"


async def probe_pool(
    registry: Registry,
    *,
    models: Sequence[str] = (),
    chat: bool = False,
    timeout_s: float = 30.0,
    environ: Mapping[str, str],
    base_dir: Path,
) -> list[Probe]:
    """One `Probe` per (pool model, deployment) of `models` (default: every model, and
    then a remote routing encoder), in that order."""
    names = list(models) or list(registry.models)
    providers: dict[str, ChatProvider] = {}
    try:
        listings = await _listings(registry, names, providers, environ, timeout_s)
        jobs: list[Callable[[], Awaitable[Probe]]] = []
        for name in names:
            model = registry.models[name]
            for target in model.targets():
                assert target.model is not None
                spec = registry.providers[target.provider]
                if spec.kind == "llamacpp":
                    row = _Row(name, model, target.provider, spec, target.model, "")
                    jobs.append(_local_job(row, registry, chat, timeout_s, base_dir))
                    continue
                if spec.kind == "echo":
                    row = _Row(name, model, target.provider, spec, target.model, "(in-process)")
                    jobs.append(_echo_job(row, chat, timeout_s))
                    continue
                where = _where(spec.base_url)
                row = _Row(name, model, target.provider, spec, target.model, where)
                jobs.append(_job(row, listings.get(target.provider), providers, chat, timeout_s))
        if not models and isinstance(registry.encoder, OpenAIEncoderSpec):
            jobs.append(_encoder_job(registry, timeout_s, environ))
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def bounded(job: Callable[[], Awaitable[Probe]]) -> Probe:
            async with gate:
                return await job()

        return list(await asyncio.gather(*(bounded(job) for job in jobs)))
    finally:
        await asyncio.gather(
            *(provider.aclose() for provider in providers.values()), return_exceptions=True
        )


@dataclass(frozen=True, slots=True)
class _Row:
    model_name: str
    model: Model
    provider_name: str
    spec: Provider
    upstream: str
    where: str

    def probe(self, status: Status, detail: str, **more: Any) -> Probe:
        return Probe(
            self.model_name, self.provider_name, self.upstream, self.where, status, detail, **more
        )


async def _listings(
    registry: Registry,
    names: Sequence[str],
    providers: dict[str, ChatProvider],
    environ: Mapping[str, str],
    timeout_s: float,
) -> dict[str, _Listing | str]:
    """Each HTTP provider the models use, listed once: its `_Listing`, or why it is not
    called at all (its first unset credential variable, one holding a control
    character)."""
    used = dict.fromkeys(
        target.provider for name in names for target in registry.models[name].targets()
    )
    out: dict[str, _Listing | str] = {}
    pending: dict[str, Awaitable[_Listing]] = {}
    for provider_name in used:
        spec = registry.providers[provider_name]
        if spec.kind in ("llamacpp", "echo"):
            continue
        if spec.kind == "bedrock":
            missing = missing_credentials(spec, environ)
            unset = [missing] if missing else []
        else:
            unset = unset_credentials(spec.api_key_env, spec.headers_env, environ)
        if unset:
            out[provider_name] = f"{unset[0]} is not set"
            continue
        try:
            client = build_http(provider_name, spec, environ)
        except UnsendableCredential as exc:  # as an unset one; any other ConfigError
            out[provider_name] = exc.message  # stops the probe at its file and line
            continue
        providers[provider_name] = client
        pending[provider_name] = _list(client, _timeouts(spec, timeout_s))
    for provider_name, listing in zip(
        pending, await asyncio.gather(*pending.values()), strict=True
    ):
        out[provider_name] = listing
    return out


async def _list(client: ChatProvider, timeouts: Timeouts) -> _Listing:
    started = time.perf_counter()
    if isinstance(client, VertexProvider):
        return await _authenticate(client, timeouts)
    if not isinstance(client, ModelLister):
        return _Listing(None, None, 0.0)
    try:
        async with asyncio.timeout(timeouts.total_s):
            ids = await client.list_models(timeouts=timeouts)
    except TimeoutError:
        return _Listing(None, _timed_out(client.name, timeouts), _ms(started))
    except ProviderError as exc:
        return _Listing(None, exc, _ms(started))
    return _Listing(frozenset(ids) or None, None, _ms(started))


async def _authenticate(client: VertexProvider, timeouts: Timeouts) -> _Listing:
    """What a Vertex provider can be asked without a model: a token."""
    started = time.perf_counter()
    try:
        await client.authenticate(timeouts=timeouts)
    except ProviderError as exc:
        return _Listing(None, exc, _ms(started))
    return _Listing(None, None, _ms(started), note=_VERTEX_NOTE)


def _job(
    row: _Row,
    listing: _Listing | str | None,
    providers: Mapping[str, ChatProvider],
    chat: bool,
    timeout_s: float,
) -> Callable[[], Awaitable[Probe]]:
    async def run() -> Probe:
        if isinstance(listing, str) or listing is None:
            return row.probe("fail", f"{listing or 'a credential is not set'}; nothing was sent")
        refused = _refusal(row, listing.error, chat)
        if refused is not None:
            return refused
        listed, note = _listed(row, listing)
        if not chat:
            return row.probe(
                "ok" if listed else "warn",
                note,
                listed=listed,
                latency_ms=listing.latency_ms,
            )
        asked = await _chat_and_text(row, providers[row.provider_name], timeout_s, listed, note)
        if asked.status == "ok" and _failed_listing(listing.error):
            return replace(asked, status="warn")  # it answers; its server is partly failing
        return asked

    return run


def _refusal(row: _Row, error: ProviderError | None, chat: bool) -> Probe | None:
    """A listing that failed in a way a chat call would fail too (credentials refused,
    the server not reached), or, without `chat`, whose server answered it with an error:
    the row's failure. A server that does not list (404, 405, 501) is no failure, and
    with `chat` neither is a listing that failed otherwise: the answer settles it."""
    if error is None:
        return None
    refused = isinstance(error, UpstreamRejected | ProviderMisconfigured)
    google = row.spec.auth == "google" or (row.spec.kind == "vertex" and not row.spec.api_key_env)
    if refused and google:
        return row.probe("fail", error.message)  # Google's credentials, in its own words
    if refused and error.status in (401, 403):
        sources = [row.spec.api_key_env, *row.spec.headers_env.values()]
        named = ", ".join(name for name in sources if name)
        said = (
            f"the key comes from {named}"
            if named
            else "the registry gives this provider no api_key_env or headers_env"
        )
        return row.probe("fail", f"credentials refused (HTTP {error.status}); {said}")
    if not _failed_listing(error):
        return None  # refused for another reason (404, 501: the server lists nothing)
    if error.status is None and not _unreadable(error):
        return row.probe("fail", error.message)  # not reached: a chat would go the same way
    if chat:
        return None
    return row.probe("fail", f"{_listing_failure(error)} (--chat asks the model itself)")


def _failed_listing(error: ProviderError | None) -> bool:
    """Whether the listing failed (5xx, 429, an answer that is no model list, no
    answer), rather than being refused by a server that lists nothing (404, 405, 501
    Not Implemented)."""
    if error is None or isinstance(error, UpstreamRejected | ProviderMisconfigured):
        return False
    return error.status != 501


# the transport's words for an answer it could not read (a catch-all HTML page where
# the listing should be, a JSON list, too much): the server was reached, and answered
# what is no model list, which a chat may still get past
_UNREADABLE = (
    "upstream returned a body that is not JSON",
    "upstream returned JSON that is not an object",
    NOT_A_MODEL_LIST,
    "upstream answered with more than ",
)


def _unreadable(error: ProviderError) -> bool:
    """Whether the listing came back, with no status to say it failed, but could not be
    read: a listing that failed, not a server out of reach."""
    return error.status is None and error.message.startswith(_UNREADABLE)


def _listing_failure(error: ProviderError) -> str:
    return f"listing its models failed: {error.message}"


def _listed(row: _Row, listing: _Listing) -> tuple[bool | None, str]:
    """Whether the server lists the model, and a note saying so for the operator."""
    upstream = row.upstream
    if row.spec.kind == "bedrock":
        return None, "not listed: Bedrock's runtime endpoint lists no models (--chat asks it)"
    if listing.error is not None and _failed_listing(listing.error):
        return None, _listing_failure(listing.error)
    if listing.error is not None:
        status = listing.error.status
        return None, f"reachable; the server does not list its models (HTTP {status})"
    if listing.note is not None:
        return None, listing.note
    if listing.ids is None:
        return None, "reachable; the server listed no models"
    names = {_bare(name): name for name in listing.ids}
    if _bare(upstream) in names:
        return True, "listed by the server"
    if len(names) == 1:
        return False, f"not the one model the server lists, {next(iter(names.values()))}"
    close = difflib.get_close_matches(_bare(upstream), list(names), n=_MAX_SUGGESTIONS)
    hint = f"; closest: {', '.join(names[c] for c in close)}" if close else ""
    return False, f"not among the {len(names)} models the server lists{hint}"


def _bare(model_id: str) -> str:
    """A model id as servers list it in several spellings: Gemini's ``models/`` prefix
    and Ollama's ``:latest`` tag removed."""
    bare = model_id.removeprefix("models/")
    return bare.removesuffix(":latest")


async def _chat(
    row: _Row, provider: ChatProvider, timeout_s: float, listed: bool | None, note: str
) -> Probe:
    timeouts = _timeouts(row.spec, timeout_s)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeouts.total_s):
            if row.model.kind == "embedding":
                answer = await _embed(row, provider, timeouts)
            elif row.model.kind == "rerank":
                answer = await _rerank(row, provider, timeouts)
            else:
                answer = await provider.complete(row.upstream, probe_body(row), timeouts=timeouts)
    except TimeoutError:
        return row.probe(
            "fail", f"{_timed_out(row.provider_name, timeouts).message}; {note}", listed=listed
        )
    except ProviderError as exc:
        return row.probe("fail", f"{exc.message}{_hint(exc)}; {note}", listed=listed)
    elapsed = _ms(started)
    served = answer.get("model")
    served_as = served if isinstance(served, str) and served != row.upstream else None
    said = _answered(row.model, answer)
    return row.probe(
        "ok",
        f"{said} in {elapsed:.0f} ms; {note}",
        listed=listed,
        latency_ms=elapsed,
        served_as=served_as,
    )


async def _chat_and_text(
    row: _Row, provider: ChatProvider, timeout_s: float, listed: bool | None, note: str
) -> Probe:
    """`_chat`, and for a model declared ``text_completions`` a fill-in-the-middle
    completion too: that one failing fails the row; the chat failing (a base model
    without a chat template) only warns, since completions are what it is for."""
    chatted = await _chat(row, provider, timeout_s, listed, note)
    if not row.model.text_completions or not isinstance(provider, TextProvider):
        return chatted
    timeouts = _timeouts(row.spec, timeout_s)
    how = "fim_template" if row.model.fim_template is not None else "suffix"
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeouts.total_s):
            answer = await provider.complete_text(
                row.upstream, text_probe_body(row), timeouts=timeouts
            )
    except TimeoutError:
        failed = _timed_out(row.provider_name, timeouts).message
        return row.probe("fail", f"completion: {failed}; chat: {chatted.detail}", listed=listed)
    except ProviderError as exc:
        hint = ""
        if how == "suffix" and exc.status == 400 and "suffix" in exc.message.lower():
            hint = " (the server refuses the suffix field: give the model a fim_template)"
        failed = f"completion with a {how}: {exc.message}{hint}; chat: {chatted.detail}"
        return row.probe("fail", failed, listed=listed)
    elapsed = _ms(started)
    usage = answer.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    done = f"completed with a {how}" + (
        f" ({counted(tokens, 'token')})" if isinstance(tokens, int) else ""
    )
    done += f" in {elapsed:.0f} ms"
    if chatted.status == "ok":
        return replace(chatted, detail=f"{done}; {chatted.detail}")
    return row.probe("warn", f"{done}; chat refused: {chatted.detail}", listed=listed)


def text_probe_body(row: _Row) -> dict[str, Any]:
    """The fill-in-the-middle completion sent to a model declared ``text_completions``,
    as the gateway would send a client's: its params, renames and drops, the suffix as
    the field or in its ``fim_template``, a short answer."""
    from llmroute.dispatch.model_params import for_model
    from llmroute.dispatch.text_completions import CHAT_ONLY, TextRequest, chat_content, text_body

    content = chat_content(PROBE_PREFIX, PROBE_SUFFIX)
    chat = {"messages": [{"role": "user", "content": content}], "max_tokens": PROBE_MAX_TOKENS}
    return text_body(
        chat,
        TextRequest(fim=True),
        shape=lambda body: for_model(body, row.model, not_renamed_to=CHAT_ONLY),
        fim_template=row.model.fim_template,
    )


async def _embed(row: _Row, provider: ChatProvider, timeouts: Timeouts) -> dict[str, Any]:
    if not isinstance(provider, EmbeddingProvider):
        raise UpstreamRejected(
            row.provider_name, f"a {row.spec.kind} provider serves no embeddings"
        )
    from llmroute.dispatch.model_params import for_model

    body = for_model({"input": [PROBE_PROMPT]}, row.model)
    return await provider.embed(row.upstream, body, timeouts=timeouts)


async def _rerank(row: _Row, provider: ChatProvider, timeouts: Timeouts) -> dict[str, Any]:
    if not isinstance(provider, RerankProvider):
        raise UpstreamRejected(row.provider_name, f"a {row.spec.kind} provider serves no reranking")
    from llmroute.dispatch.model_params import for_model

    body = for_model({"query": PROBE_PROMPT, "documents": list(PROBE_DOCUMENTS)}, row.model)
    return await provider.rerank(row.upstream, body, timeouts=timeouts)


def _hint(exc: ProviderError) -> str:
    """What to change when the server refused a parameter the gateway would send too."""
    if exc.status == 400 and "unsupported" in exc.message.lower():
        return " (the model's rename_params / drop_params fit what it is sent)"
    return ""


def probe_body(row: _Row) -> dict[str, Any]:
    """The chat request sent to a model: a one-word question, the model's `params`, a
    short answer (unless its params set the length), thinking off where it can be, the
    model's renamed and dropped parameters as the gateway would send them."""
    from llmroute.dispatch.model_params import for_model
    from llmroute.dispatch.reasoning_params import with_reasoning

    body: dict[str, Any] = {"messages": [{"role": "user", "content": PROBE_PROMPT}]}
    body = for_model(with_reasoning(body, row.model, row.spec.kind, False), row.model)
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body = for_model({**body, "max_tokens": PROBE_MAX_TOKENS}, row.model)
    return body


def _answered(model: Model, answer: Mapping[str, Any]) -> str:
    """`answered` with what came back: the embedding's size, or the reply's tokens."""
    if model.kind == "rerank":
        results = answer.get("results")
        return (
            f"reranked ({counted(len(results), 'result')})"
            if isinstance(results, list)
            else "reranked"
        )
    if model.kind == "embedding":
        data = answer.get("data")
        first = data[0] if isinstance(data, list) and data else None
        vector = first.get("embedding") if isinstance(first, dict) else None
        return (
            f"embedded ({counted(len(vector), 'dimension')})"
            if isinstance(vector, list)
            else "embedded"
        )
    usage = answer.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return f"answered ({counted(tokens, 'token')})" if isinstance(tokens, int) else "answered"


def _local_job(
    row: _Row, registry: Registry, chat: bool, timeout_s: float, base_dir: Path
) -> Callable[[], Awaitable[Probe]]:
    """A llama.cpp model: the provider's GGUF files are checked (one missing stops the
    gateway from building the provider); with `chat` it is loaded (in a thread:
    seconds) and asked."""

    async def run() -> Probe:
        from llmroute.providers.llamacpp import build_llamacpp, check_llamacpp, resolve_gguf

        at = row
        try:
            at = replace(row, where=str(resolve_gguf(row.upstream, base_dir)))
            await asyncio.to_thread(check_llamacpp, row.provider_name, registry, base_dir)
        except LlmrouteError as exc:
            return at.probe("fail", str(exc))
        if not chat:
            return at.probe("ok", "in-process (llama.cpp): the GGUF file is present")
        started = time.perf_counter()
        try:
            provider = await asyncio.to_thread(
                build_llamacpp, row.provider_name, row.spec, registry, base_dir
            )
            try:
                answer = await provider.complete(
                    row.upstream, probe_body(row), timeouts=_timeouts(row.spec, timeout_s)
                )
            finally:
                await provider.aclose()
        except ProviderError as exc:
            return at.probe("fail", exc.message)
        except LlmrouteError as exc:
            return at.probe("fail", str(exc))
        elapsed = _ms(started)
        said = _answered(row.model, answer)
        return at.probe("ok", f"{said} in {elapsed:.0f} ms, loading included", latency_ms=elapsed)

    return run


def _echo_job(row: _Row, chat: bool, timeout_s: float) -> Callable[[], Awaitable[Probe]]:
    """An echo model: nothing to reach; with `chat` it is asked like any other."""
    note = "in-process echo: answers without a model"

    async def run() -> Probe:
        if not chat:
            return row.probe("ok", note)
        from llmroute.providers.echo import EchoProvider

        return await _chat(row, EchoProvider(row.provider_name, row.spec), timeout_s, None, note)

    return run


def _encoder_job(
    registry: Registry, timeout_s: float, environ: Mapping[str, str]
) -> Callable[[], Awaitable[Probe]]:
    """The registry's remote embeddings endpoint, which routing itself calls: one text."""
    spec = registry.encoder
    assert isinstance(spec, OpenAIEncoderSpec)

    async def run() -> Probe:
        where = _where(spec.base_url)

        def probe(status: Status, detail: str, **more: Any) -> Probe:
            return Probe(ENCODER_ROW, "encoder", spec.model, where, status, detail, **more)

        unset = unset_credentials(spec.api_key_env, spec.headers_env, environ)
        if unset:
            return probe("fail", f"{unset[0]} is not set; nothing was sent")
        from llmroute.assemble import build_encoder

        started = time.perf_counter()
        try:
            encoder = build_encoder(registry)
            try:
                async with asyncio.timeout(timeout_s):
                    vectors = await asyncio.to_thread(encoder.encode, [PROBE_PROMPT])
            finally:
                close = getattr(encoder, "close", None)
                if callable(close):
                    close()
        except TimeoutError:
            return probe("fail", f"no answer within {timeout_s:g}s")
        except LlmrouteError as exc:
            return probe("fail", str(exc))
        elapsed = _ms(started)
        dims = vectors.shape[1] if vectors.ndim == 2 else 0
        said = f"embedded ({counted(dims, 'dimension')}) in {elapsed:.0f} ms"
        return probe("ok", said, latency_ms=elapsed)

    return run


def _timeouts(spec: Provider, timeout_s: float) -> Timeouts:
    return Timeouts(connect_s=min(spec.connect_timeout_s, timeout_s), total_s=timeout_s)


def _timed_out(provider: str, timeouts: Timeouts) -> ProviderError:
    return ProviderError(provider, f"no answer within {timeouts.total_s:g}s")


def _where(base_url: object) -> str:
    """A base URL as it may be printed: no user, password, query or fragment."""
    url = URL(str(base_url))
    return str(url.with_user(None).with_query(None).with_fragment(None))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
