"""Chat body fields addressed to a proxy, not to a model, as LiteLLM's proxy takes them:
what an app migrating from it sends, and what no OpenAI-compatible upstream reads.

- Its tags (top-level ``tags``, ``metadata.tags`` or ``litellm_metadata.tags``: lists
  of strings) are the request's tags, as ``x-llmroute-tags`` is (checked by the same
  rules), so spend by tag keeps working; they are not sent upstream.
- ``litellm_metadata`` (what LiteLLM reads where ``metadata`` is the API's own:
  Responses, Messages, embeddings, batches) is the gateway's alone: an object, its
  ``tags`` the request's, the rest (trace ids, a user's name) sent to no model, on
  every API; OpenAI refuses a field it does not know, on every one of its models.
- ``metadata`` is the gateway's too (routing rules read it) and goes upstream only as
  OpenAI takes it: an object of at most 16 string pairs sent with ``"store": true``.
  OpenAI refuses any other (``The 'metadata' parameter is only allowed when 'store' is
  enabled``; a non-string value), on every one of its models, so passing it on made a
  400 that no fallback could fix.
- The fields that steer LiteLLM itself (``fallbacks``, ``num_retries``,
  ``mock_response``, ``caching``, a key or an upstream address) are refused before
  routing, naming the gateway's way to say the same: served without them, the request
  would quietly lose what the app asked for (an OpenAI upstream refused them anyway).

Every front refuses those fields the same way (`refuse_proxy_fields`): chat, text
completions and ``/v1/route`` with the whole chat check, Messages and Responses
beside their own ``metadata``, and embeddings and rerank, whose bodies otherwise go
upstream as sent (`unrouted_body`, which leaves out their ``metadata`` too: those APIs have
none): a body's ``api_key`` must never reach a provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from llmroute.errors import InvalidRequest, json_kind, shown
from llmroute.telemetry.attribution import check_tags

__all__ = [
    "METADATA_KEYS",
    "REFUSED",
    "body_tags",
    "check_proxy_fields",
    "metadata_fault",
    "openai_metadata",
    "refuse_proxy_fields",
    "routed_metadata",
    "unrouted_body",
    "without_proxy_fields",
]

METADATA_KEYS = 16  # OpenAI's metadata: at most 16 keys of 64 characters, values of 512
_KEY_CHARS = 64
_VALUE_CHARS = 512

_FALLBACKS = (
    "a route's or the default's policy.fallback (policy.context_fallback, policy.content_fallback)"
)
_SECRETS = (
    "the Authorization header for a client key, and the registry's providers for "
    "upstream keys and addresses"
)
# LiteLLM's own fields, and what says the same here (docs/registry.md, docs/gateway.md)
REFUSED: Mapping[str, str] = {
    "fallbacks": _FALLBACKS,
    "context_window_fallbacks": _FALLBACKS,
    "content_policy_fallbacks": _FALLBACKS,
    "num_retries": "the registry's dispatch.retries (a route's or the default's policy.retries)",
    "mock_response": "a model of an echo provider (docs/registry.md, Echo providers)",
    "caching": "the registry's cache section, and the request's Cache-Control header",
    "cache": "the registry's cache section, and the request's Cache-Control header",
    "user_api_key": _SECRETS,
    "api_key": _SECRETS,
    "api_base": _SECRETS,
    "base_url": _SECRETS,
}
_REFUSED_KEYS = frozenset(REFUSED)
_LITELLM_METADATA = "litellm_metadata"
_DROPPED = frozenset({"tags", _LITELLM_METADATA})  # the gateway's, in any body
_OWN_KEYS = _REFUSED_KEYS | _DROPPED
_UNROUTED_OWN = _DROPPED | {"metadata"}  # the gateway's, in an embeddings body
_UNROUTED_KEYS = _REFUSED_KEYS | _UNROUTED_OWN
_THEIR_TAGS = f"{_LITELLM_METADATA}.tags"


def check_proxy_fields(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The request's tags the body names (`body_tags`); `InvalidRequest` for a proxy
    field the gateway does not take (`REFUSED`, never echoing its value: it may be a
    key), a ``metadata`` that is not an object, or tags that break ``x-llmroute-tags``'
    rules."""
    refuse_proxy_fields(body)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest("'metadata' must be an object", param="metadata", code="invalid_type")
    return body_tags(body)


def refuse_proxy_fields(body: Mapping[str, Any]) -> None:
    """`InvalidRequest` for a LiteLLM field of `REFUSED` that is not null, naming the
    gateway's way and never echoing its value (it may be a key)."""
    if _REFUSED_KEYS.isdisjoint(body):  # the usual body: one pass in C
        return
    for key, value in body.items():
        if key in REFUSED and value is not None:
            raise InvalidRequest(
                f"'{key}' is LiteLLM's proxy's field, which this gateway does not take: "
                f"use {REFUSED[key]}",
                param=key,
                code="unsupported_parameter",
            )


def body_tags(body: Mapping[str, Any], *, in_metadata: bool = True) -> tuple[str, ...]:
    """The request's tags its body names (``tags``, then ``metadata.tags`` unless
    `in_metadata` is false: an API whose ``metadata`` is all its own, then
    ``litellm_metadata.tags``), duplicates dropped; `InvalidRequest` naming the field for
    a ``litellm_metadata`` that is not an object, or tags that are not a list of strings
    or break ``x-llmroute-tags``' rules (the one holding the tag, or the first of them
    for too many together). A ``metadata.tags`` string is OpenAI metadata like any other
    value, not tags."""
    metadata = body.get("metadata") if in_metadata else None
    top, inner = body.get("tags"), metadata.get("tags") if isinstance(metadata, dict) else None
    litellm = body.get(_LITELLM_METADATA)
    if top is None and inner is None and litellm is None:  # the usual body
        return ()
    if litellm is not None and not isinstance(litellm, dict):
        raise InvalidRequest(
            f"'{_LITELLM_METADATA}' must be an object",
            param=_LITELLM_METADATA,
            code="invalid_type",
        )
    theirs = None if litellm is None else litellm.get("tags")
    found: list[str] = []
    first = None
    for param, value in (("tags", top), ("metadata.tags", inner), (_THEIR_TAGS, theirs)):
        if value is None or (param == "metadata.tags" and isinstance(value, str)):
            continue
        if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
            raise InvalidRequest(
                f"'{param}' must be a list of strings", param=param, code="invalid_type"
            )
        own = tuple(dict.fromkeys(tag.strip() for tag in value if tag.strip()))
        _check(own, param)
        found.extend(own)
        first = first or param
    tags = tuple(dict.fromkeys(found))
    if first is not None:
        _check(tags, first)  # how many, all together
    return tags


def _check(tags: tuple[str, ...], param: str) -> None:
    try:
        check_tags(tags)
    except ValueError as exc:
        raise InvalidRequest(f"'{param}': {exc}", param=param, code="invalid_value") from None


def openai_metadata(value: object) -> TypeGuard[dict[str, str]]:
    """Whether `value` is ``metadata`` as OpenAI takes it: at most 16 keys of at most 64
    characters, each a string of at most 512."""
    return (
        isinstance(value, dict)
        and len(value) <= METADATA_KEYS
        and all(
            isinstance(k, str)
            and len(k) <= _KEY_CHARS
            and isinstance(v, str)
            and len(v) <= _VALUE_CHARS
            for k, v in value.items()
        )
    )


def metadata_fault(value: dict[str, Any]) -> str | None:
    """Why `value`, an object, is not ``metadata`` as OpenAI takes it (`openai_metadata`),
    naming the key at fault but never echoing a value (it may hold an e-mail address);
    None when it is."""
    if len(value) > METADATA_KEYS:
        return f"'metadata' has {len(value)} keys: at most {METADATA_KEYS}"
    for key, item in value.items():
        if len(key) > _KEY_CHARS:
            return f"'metadata' key {shown(key, 40)} is longer than {_KEY_CHARS} characters"
        if not isinstance(item, str):
            return f"'metadata.{key}' must be a string, not {json_kind(item)}"
        if len(item) > _VALUE_CHARS:
            return f"'metadata.{key}' is longer than {_VALUE_CHARS} characters"
    return None


def routed_metadata(metadata: object) -> dict[str, Any] | None:
    """A Messages or Responses body's ``metadata`` for the chat body it is converted to,
    where routing rules read it as they read a chat's (`RouteRequest.metadata`): without
    a ``tags`` list (the request's tags, which the chat body carries as ``tags``); None
    when nothing is left. No model is sent it: a converted body never says ``store``
    (`without_proxy_fields`)."""
    if not isinstance(metadata, dict):
        return None
    kept = {k: v for k, v in metadata.items() if not (k == "tags" and isinstance(v, list))}
    return kept or None


def without_proxy_fields(body: dict[str, Any]) -> dict[str, Any]:
    """`body` as an upstream is sent it: without its tags (``metadata.tags`` too), its
    ``litellm_metadata``, a ``metadata`` OpenAI would refuse (not OpenAI's shape, or
    sent without ``"store": true``), or a LiteLLM field sent as null (a field left out:
    OpenAI refuses a key it does not know, whatever its value). Returns `body` itself
    when nothing is removed (the common case: a lookup and a set test)."""
    metadata = body.get("metadata")
    if metadata is None and _OWN_KEYS.isdisjoint(body):
        return body
    sent = _openai_part(metadata) if body.get("store") is True else None
    if sent is metadata and _DROPPED.isdisjoint(body) and not _nulls(body):
        return body
    out = {k: v for k, v in body.items() if k not in _DROPPED and not (k in REFUSED and v is None)}
    if metadata is not None:
        if sent:
            out["metadata"] = sent
        else:
            out.pop("metadata", None)
    return out


def _openai_part(metadata: object) -> dict[str, str] | None:
    """What of ``metadata`` OpenAI takes: the whole, or the rest beside LiteLLM's tags
    (a list, or null: the gateway's), when that is OpenAI's shape; else None."""
    if isinstance(metadata, dict) and "tags" in metadata and not isinstance(metadata["tags"], str):
        metadata = {k: v for k, v in metadata.items() if k != "tags"}
    return metadata if openai_metadata(metadata) else None


def _nulls(body: Mapping[str, Any]) -> bool:
    return any(body.get(key, 0) is None for key in _REFUSED_KEYS.intersection(body))


def unrouted_body(body: dict[str, Any]) -> dict[str, Any]:
    """An embeddings or rerank `body` (passed upstream as sent otherwise) as its upstream
    is sent it, once `check_proxy_fields` has passed it: without LiteLLM's tags (the
    request's), its ``metadata`` and ``litellm_metadata``, or a LiteLLM field sent as
    null. OpenAI's embeddings API has no ``metadata`` and refuses a field it does not
    know, on every model (a 400 no fallback could fix), nor do Cohere's, Voyage's or
    Jina's name one: a body's is LiteLLM's, so the gateway's, as a chat's that OpenAI
    would refuse is (`without_proxy_fields`). Returns `body` itself when nothing is
    removed."""
    if _UNROUTED_KEYS.isdisjoint(body):
        return body
    return {
        k: v for k, v in body.items() if k not in _UNROUTED_OWN and not (k in REFUSED and v is None)
    }
