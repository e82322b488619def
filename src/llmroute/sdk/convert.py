"""Wire data → what the SDK returns: openai's pydantic types when ``openai`` is
installed (it is optional), else plain dicts; and the ``llmroute`` field on each."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from llmroute.decision import Decision
from llmroute.errors import LlmrouteError, ProviderError, Quoted
from llmroute.untrusted_json import loads

__all__ = [
    "as_chunk",
    "as_completion",
    "event_json",
    "jsonable",
    "load_types",
    "name_decision",
    "routing_info",
    "types_loaded",
]

FIELD = "llmroute"


def routing_info(
    decision: Decision, model: str, provider: str, attempts: Sequence[str]
) -> dict[str, Any]:
    """The ``llmroute`` field: the decision, and the pool model that actually served."""
    return {
        "decision_id": decision.id,
        "route": decision.route,
        "model": model,
        "layer": decision.layer,
        "confidence": decision.confidence,
        "provider": provider,
        "attempts": list(attempts),
    }


def name_decision(exc: BaseException, decision_id: str) -> None:
    """`exc`, raised by a call once routed, names its decision (`decision_id`): what
    the gateway's ``x-request-id`` tells its client, the key to the call's record. One
    already naming one (a `PolicyViolation`) is left as it is."""
    if isinstance(exc, LlmrouteError) and exc.decision_id is None:
        exc.decision_id = decision_id


@functools.cache
def _openai_chat_types() -> Any:
    try:
        return importlib.import_module("openai.types.chat")
    except ImportError:
        return None


def load_types() -> None:
    """Import openai's types now, in the calling thread: the import takes a second or
    more, once, and the conversions run on an event loop, which it would stall."""
    _openai_chat_types()


def types_loaded() -> bool:
    """Whether `load_types` has run (or a conversion has)."""
    return _openai_chat_types.cache_info().currsize > 0


def _build(type_name: str, data: dict[str, Any]) -> Any:
    types = _openai_chat_types()
    if types is None:
        return data
    cls = getattr(types, type_name)
    try:
        return cls.model_validate(data)
    except ValueError:  # pydantic's ValidationError: an upstream a little off the spec
        return cls.model_construct(**data)  # openai's own lenient construction


def as_completion(data: Mapping[str, Any], info: dict[str, Any]) -> Any:
    """The completion; with ``openai``, its ``_request_id`` is the decision id, as the
    gateway's ``x-request-id`` makes it for a client there."""
    completion = _build("ChatCompletion", {**data, FIELD: info})
    if not isinstance(completion, dict):
        completion._request_id = info["decision_id"]
    return completion


def as_chunk(data: Mapping[str, Any], info: dict[str, Any]) -> Any:
    return _build("ChatCompletionChunk", {**data, FIELD: info})


def event_json(event: bytes, provider: str) -> dict[str, Any] | None:
    """The JSON object of one SSE event; None for ``[DONE]`` and events without data.
    An error event raises `ProviderError` (the gateway's relay ends broken streams
    with one)."""
    lines = event.decode().splitlines()
    payload = "\n".join(line[5:].removeprefix(" ") for line in lines if line.startswith("data:"))
    if not payload or payload == "[DONE]":
        return None
    try:
        data = loads(payload)
    except ValueError:
        raise ProviderError(provider, "the stream sent an event that is not JSON") from None
    if not isinstance(data, dict):
        raise ProviderError(provider, "the stream sent an event that is not a JSON object")
    error = data.get("error")
    if error is not None:
        raise _stream_error(provider, error)
    return data


def _stream_error(provider: str, error: Any) -> ProviderError:
    if not isinstance(error, dict):
        return ProviderError(provider, ("the stream ended with an error", Quoted(f": {error}")))
    code = error.get("code")
    said = Quoted(f": {error.get('message', 'unknown error')}")  # an upstream's, relayed
    return ProviderError(
        provider,
        ("the stream ended with an error", said),
        code=code if isinstance(code, str) else None,
    )


def jsonable(value: Any) -> Any:
    """`value` with pydantic models (openai's message objects, say) dumped to dicts, so
    a previous reply's message can be sent back as is."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_unset=True)
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
