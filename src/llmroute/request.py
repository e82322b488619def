"""`RouteRequest`: the normalised view of one request that every decision layer reads.

Clients send a plain string or an OpenAI chat-completions body; layers should not care
which. The text that is embedded is the last user turn by default, or a window of the
most recent user turns (`intent.window` in the registry), so a follow-up such as "and in
French?" is read with the turn it follows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from llmroute.errors import RoutingError
from llmroute.token_estimate import CHARS_PER_TOKEN, ceil_tokens, quarter_tokens

__all__ = ["RouteRequest", "estimate_tokens", "holds_images", "image_count"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


def estimate_tokens(text: str) -> int:
    """A cheap token estimate: four characters a token of English, a token a Chinese
    character (`llmroute.token_estimate`).

    Rules run before the encoder, so they cannot use its tokenizer; the estimate is good
    enough for "is this a long-context request" conditions, in any script.
    """
    return ceil_tokens(text)


def holds_images(messages: object) -> bool:
    """Whether a chat body's `messages` carry an image (an ``image_url`` content part,
    in any turn: earlier turns' images are sent to the model too). The Anthropic and
    Responses fronts convert their image blocks to such parts first."""
    return any(_image_parts(messages))


def image_count(messages: object) -> int:
    """How many images a chat body's `messages` carry (as `holds_images` finds them)."""
    return sum(1 for _ in _image_parts(messages))


def _image_parts(messages: object) -> Iterator[Mapping[str, Any]]:
    if not isinstance(messages, list):
        return
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "image_url":
                    yield part


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One request as the decision layers see it.

    >>> RouteRequest.from_input("write a haiku").text
    'write a haiku'
    """

    text: str
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    has_tools: bool = False
    requested_model: str | None = None
    body: Mapping[str, Any] | None = None
    _quarters: int = field(default=-1, init=False, repr=False, compare=False)

    @property
    def has_images(self) -> bool:
        """Whether the body's messages carry an image; walked when asked (a `has_images`
        rule), not for every request."""
        return self.body is not None and holds_images(self.body.get("messages"))

    @property
    def estimated_quarters(self) -> int:
        """The text's estimate in quarters of a token (`llmroute.token_estimate`), counted
        once a request: non-ASCII text costs three encodes of it, and every token-bound
        rule and the reasoning gate's long trigger read it."""
        quarters = self._quarters
        if quarters < 0:
            quarters = quarter_tokens(self.text)
            object.__setattr__(self, "_quarters", quarters)  # a cache: same value always
        return quarters

    @property
    def estimated_tokens(self) -> int:
        """`estimate_tokens` of the text (rounded up), from `estimated_quarters`."""
        return -(-self.estimated_quarters // CHARS_PER_TOKEN)

    @classmethod
    def from_input(
        cls,
        request: str | Mapping[str, Any] | RouteRequest,
        *,
        headers: Mapping[str, str] | None = None,
        window: int = 1,
    ) -> RouteRequest:
        """Build from a string, an OpenAI chat-completions body, or pass a request through."""
        hdrs = _lower_keys(headers)
        if isinstance(request, RouteRequest):
            if headers is None:
                return request
            merged = {**request.headers, **hdrs}
            return cls(
                request.text,
                MappingProxyType(merged),
                request.metadata,
                request.has_tools,
                request.requested_model,
                request.body,
            )
        if isinstance(request, str):
            return cls(text=request, headers=hdrs)
        if isinstance(request, Mapping):
            return cls._from_body(request, hdrs, window)
        raise RoutingError(
            f"a request must be a string or a chat-completions object, not {type(request).__name__}"
        )

    @classmethod
    def _from_body(
        cls, body: Mapping[str, Any], headers: Mapping[str, str], window: int
    ) -> RouteRequest:
        if "messages" in body:
            text = _text_of_messages(body["messages"], window)
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"]
        elif body.get("prompt") is not None:
            raise RoutingError("'prompt' must be a string")
        else:
            raise RoutingError("the request body has no 'messages' (or 'prompt') to route on")
        model = body.get("model")
        return cls(
            text=text,
            headers=headers,
            metadata=_metadata_of(body),
            has_tools=bool(body.get("tools") or body.get("functions")),
            requested_model=model if isinstance(model, str) else None,
            body=body,
        )


def _lower_keys(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    if not headers:
        return _EMPTY
    return MappingProxyType({str(k).lower(): str(v) for k, v in headers.items()})


# OpenAI's newer name for the end user first, as the Responses front reads them and
# `telemetry.attribution.end_user_of` does
_END_USER_KEYS = ("safety_identifier", "user")


def _metadata_of(body: Mapping[str, Any]) -> Mapping[str, str]:
    """What rules read as the request's metadata: its ``metadata`` values as text (a
    string as it is; any other as compact JSON, `_as_text`), but a null (no value) and a
    ``tags`` list (the request's tags, `llmroute.proxy_fields.body_tags`), then the end
    user as ``user``."""
    meta: dict[str, str] = {}
    raw = body.get("metadata")
    if isinstance(raw, Mapping):
        # a null is no value (Anthropic's ``user_id`` may be one), not the text "None"
        meta.update(
            {
                str(k): v if isinstance(v, str) else _as_text(v)
                for k, v in raw.items()
                if v is not None and not (k == "tags" and isinstance(v, list))
            }
        )
    for key in _END_USER_KEYS:  # rules read the end user as `user`, whichever names it
        if isinstance(body.get(key), str) and body[key]:
            meta.setdefault("user", body[key])
            break
    return MappingProxyType(meta) if meta else _EMPTY


def _as_text(value: object) -> str:
    """A metadata value that is not a string, as a rule matches it: compact JSON as the
    client could write it (``true``, ``3``, ``{"a":1}``, ``["x"]``), never Python's repr
    (``True``, ``{'a': 1}``), which no rule written from the JSON sent would match. A
    value JSON cannot write (an SDK caller's date, Decimal or set; a circular one) is its
    ``str``, as every value was: routing is not where a Python body fails."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _text_of_messages(messages: object, window: int) -> str:
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
        raise RoutingError("'messages' must be a list of message objects")
    if not messages:
        raise RoutingError("'messages' is empty: there is nothing to route on")
    turns: list[str] = []
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if not isinstance(message, Mapping):
            raise RoutingError(f"messages[{index}] must be an object with 'role' and 'content'")
        if message.get("role") == "user":
            turns.append(_content_text(message.get("content"), index))
            if len(turns) >= window:
                break
    if not turns:
        # No user turn (e.g. a system-only prompt): route on the last message of any role.
        turns.append(_content_text(messages[-1].get("content"), len(messages) - 1))
    return "\n".join(reversed(turns))


def _content_text(content: object, index: int) -> str:
    """Text of a message's content: a string, or the text parts of a content-part list
    (a part that is no object, or a text that is no string, is a `RoutingError`: it would
    reach the model unread by routing and safety)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for at, part in enumerate(content):
            # what the gateway's check refuses too (chat_checks): a part routing cannot read
            if not isinstance(part, Mapping):
                raise RoutingError(
                    f"messages[{index}].content[{at}] must be an object with a 'type'"
                )
            text = part.get("text")
            if isinstance(text, str):
                parts.append(text)
            elif "text" in part or part.get("type") == "text":
                raise RoutingError(f"messages[{index}].content[{at}].text must be a string")
        return "\n".join(parts)
    raise RoutingError(f"messages[{index}].content must be a string or a list of content parts")
