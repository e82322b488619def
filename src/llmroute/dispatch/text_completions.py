"""Requests of the (legacy) completions API, sent raw to the models that continue text.

The gateway's ``/v1/completions`` front converts each request to a chat body, so that it
is routed, cached, budgeted, recorded and fallen back from like any other. A pool model
declared ``text_completions: true`` (a base or code model whose server also serves
``POST /v1/completions``: vLLM, llama.cpp server, Ollama) is sent the request as its
client wrote it instead of wrapped in a chat template: `text_body` makes it again from
the chat body as that model gets it (redacted when safety said so, with the route's and
the model's params), the completions-only fields of the `TextRequest` put back
(``suffix`` for fill-in-the-middle, ``echo``, ``logprobs``). Its answers are read into
chat shape (`chat_answer`, `chat_event`) for everything after (metering, cache,
fallbacks, the decision log), their text-completion ``logprobs`` carried unchanged for
the front to return. A request that sets one of those fields can be answered only by
such a model: the others in its chain are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmroute.sse import event_of
from llmroute.untrusted_json import loads

__all__ = ["RAW_FIELDS", "TextRequest", "chat_answer", "chat_event", "text_body"]

RAW_FIELDS = ("suffix", "echo", "logprobs")
"""What only a model continuing raw text can serve, in the order a refusal names them."""

# chat parameters a completions endpoint does not take (a route's or model's params may
# set them for the chat requests the same model serves)
_CHAT_ONLY = frozenset(
    {
        "messages",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
        "reasoning_effort",
        "modalities",
        "audio",
        "prediction",
        "web_search_options",
    }
)


@dataclass(frozen=True, slots=True)
class TextRequest:
    """A completions request's own fields, those a chat body cannot carry (the ones the
    client set, in `RAW_FIELDS` order). Its presence on a `Plan` says the request came as
    a completion: models that continue raw text get it raw."""

    fields: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> TextRequest:
        """The `RAW_FIELDS` `body` sets to something (an empty ``suffix``, ``echo:
        false`` and ``null``s set nothing); their types are the front's to check."""
        return cls(tuple((key, body[key]) for key in RAW_FIELDS if _set(key, body.get(key))))

    @property
    def raw_only(self) -> str | None:
        """The first field only a raw text model can serve; None when a chat model can
        answer the request too."""
        return self.fields[0][0] if self.fields else None


def _set(key: str, value: Any) -> bool:
    if value is None or value is False:
        return False
    return not (key == "suffix" and value == "")


def text_body(sent: Mapping[str, Any], text: TextRequest) -> dict[str, Any]:
    """The completions body for a model continuing raw text, made from `sent`, the chat
    body as that model gets it: its user message as ``prompt``, its parameters (less
    the chat-only ones), and `text`'s fields."""
    body = {k: v for k, v in sent.items() if k not in _CHAT_ONLY}
    body["prompt"] = _prompt(sent.get("messages"))
    body.update(text.fields)
    return body


def _prompt(messages: Any) -> str:
    """The last user message's text: the front made it of the prompt, and redaction may
    have rewritten it."""
    turns: list[Any] = messages if isinstance(messages, list) else []
    for message in reversed(turns):
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content: Any = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(
                str(part.get("text", ""))
                for part in content
                if isinstance(part, Mapping) and part.get("type") == "text"
            )
    return ""


def _chat_id(value: Any) -> str:
    text = value if isinstance(value, str) else ""
    return "chatcmpl-" + text.removeprefix("cmpl-") if text else ""


def _choice(choice: Mapping[str, Any], index: int, key: str) -> dict[str, Any]:
    text = choice.get("text")
    content = text if isinstance(text, str) else ""
    given = choice.get("index")
    said: dict[str, Any] = {"content": content}
    if key == "message":
        said["role"] = "assistant"
    out: dict[str, Any] = {
        "index": given if isinstance(given, int) and not isinstance(given, bool) else index,
        key: said,
        "finish_reason": choice.get("finish_reason"),
    }
    if isinstance(choice.get("logprobs"), dict):
        out["logprobs"] = choice["logprobs"]
    return out


def _choices(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    choices = data.get("choices")
    return [
        _choice(choice, i, key)
        for i, choice in enumerate(choices if isinstance(choices, list) else ())
        if isinstance(choice, Mapping)
    ]


def chat_answer(data: Mapping[str, Any]) -> dict[str, Any]:
    """A ``text_completion`` object as the ``chat.completion`` dispatch reads."""
    out = {k: v for k, v in data.items() if k not in ("id", "object", "choices")}
    out.update(id=_chat_id(data.get("id")), object="chat.completion")
    out["choices"] = _choices(data, "message")
    return out


def chat_event(event: bytes) -> bytes:
    """A ``text_completion`` stream event as a ``chat.completion.chunk`` event (``[DONE]``
    and what is not a JSON object go on as they are)."""
    if not event.startswith(b"data:") or event.startswith(b"data: [DONE]"):
        return event
    try:
        data = loads(event[5:].strip())
    except (ValueError, UnicodeDecodeError):
        return event
    if not isinstance(data, dict) or "error" in data:
        return event
    out = {k: v for k, v in data.items() if k not in ("id", "object", "choices")}
    out.update(id=_chat_id(data.get("id")), object="chat.completion.chunk")
    out["choices"] = _choices(data, "delta")
    return event_of(out)
