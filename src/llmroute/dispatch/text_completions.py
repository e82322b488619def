"""Requests of the (legacy) completions API, sent raw to the models that continue text.

The gateway's ``/v1/completions`` front converts each request to a chat body, so that it
is routed, scanned by safety, cached, budgeted, recorded and fallen back from like any
other: the prompt is its user message, and a fill-in-the-middle ``suffix`` that
message's second text part (`chat_content`), so safety scans and redacts it and every
estimate counts it. A pool model declared ``text_completions: true`` (a base or code
model whose server also serves ``POST /v1/completions``) is sent the request raw
instead of wrapped in a chat template: `text_body` makes the completions body again from
the chat body as that model gets it (redacted when safety said so), the ``suffix`` sent
as a field or, with the model's ``fim_template``, written into the prompt with the
model's own fill-in-the-middle tokens (for servers that refuse ``suffix``: vLLM,
SGLang, llama.cpp server), and the `TextRequest`'s other fields put back (``echo``,
``logprobs``). Its answers are read into chat shape (`chat_answer`, `chat_event`) for
everything after (metering, cache, fallbacks, the decision log), their text-completion
``logprobs`` carried for the front to return. A request setting one of those fields can
be answered only by such a model: the others in its chain are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmroute.sse import event_of
from llmroute.untrusted_json import loads

__all__ = [
    "CHAT_ONLY",
    "RAW_FIELDS",
    "TextRequest",
    "chat_answer",
    "chat_content",
    "chat_event",
    "text_body",
    "text_logprobs",
]

RAW_FIELDS = ("suffix", "echo", "logprobs")
"""What only a model continuing raw text can serve, in the order a refusal names them."""

# chat parameters a completions endpoint does not take (a route's or model's params may
# set them for the chat requests the same model serves)
CHAT_ONLY = frozenset(
    {
        "messages",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
        "max_completion_tokens",
        "reasoning_effort",
        "reasoning",
        "thinking",
        "chat_template_kwargs",
        "modalities",
        "audio",
        "prediction",
        "web_search_options",
        "store",
        "metadata",
    }
)


@dataclass(frozen=True, slots=True)
class TextRequest:
    """What a completions request asks that a chat body cannot say: whether its chat
    body's user message carries a ``suffix`` (`fim`, its second text part), and the
    other completions-only fields the client set (``echo``, ``logprobs``). Its presence
    on a `Plan` says the request came as a completion: models that continue raw text
    get it raw."""

    fim: bool = False
    fields: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> TextRequest:
        """The raw-only fields `body` sets to something (an empty ``suffix``, ``echo:
        false`` and ``null``s set nothing); their types are the front's to check."""
        fields = tuple((key, body[key]) for key in RAW_FIELDS[1:] if _set(key, body.get(key)))
        return cls(_set("suffix", body.get("suffix")), fields)

    @property
    def raw_only(self) -> str | None:
        """The first field only a raw text model can serve; None when a chat model can
        answer the request too."""
        if self.fim:
            return "suffix"
        return self.fields[0][0] if self.fields else None


def _set(key: str, value: Any) -> bool:
    if value is None or value is False:
        return False
    return not (key == "suffix" and value == "")


def chat_content(prompt: str, suffix: str | None) -> str | list[dict[str, str]]:
    """The user message of a completion's chat body: the prompt, and the ``suffix`` as
    a second text part (scanned, redacted and counted with it)."""
    if not suffix:
        return prompt
    return [{"type": "text", "text": prompt}, {"type": "text", "text": suffix}]


def text_body(
    sent: Mapping[str, Any],
    text: TextRequest,
    *,
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    fim_template: str | None = None,
    logprobs: bool = True,
) -> dict[str, Any]:
    """The completions body for a model continuing raw text, made from `sent`, the chat
    body as the request left safety: its user message as ``prompt`` (and ``suffix``),
    its parameters less the chat-only ones, `text`'s fields, then `shape` (the model's
    ``params``, renames and drops: it must not rename into `CHAT_ONLY`, whose names
    are dropped after it). With `fim_template` a suffix is written into the
    prompt instead; without `logprobs` none are asked for (the answer's PII mask
    cannot reach them)."""
    body = {k: v for k, v in sent.items() if k not in CHAT_ONLY}
    prompt, suffix = _prompt(sent.get("messages"), text.fim)
    if suffix is not None and fim_template is not None:
        body["prompt"] = fim_template.format(prefix=prompt, suffix=suffix)
    else:
        body["prompt"] = prompt
        if suffix is not None:
            body["suffix"] = suffix
    own = {k for k, _ in text.fields if logprobs or k != "logprobs"}
    body.update((k, v) for k, v in text.fields if k in own)
    if shape is not None:
        body = shape(body)
        body = {k: v for k, v in body.items() if k not in CHAT_ONLY or k in own}
    return body


def _prompt(messages: Any, fim: bool) -> tuple[str, str | None]:
    """The last user message's text (its two parts, with `fim`): the front made it of
    the prompt (and suffix), and redaction may have rewritten it."""
    turns: list[Any] = messages if isinstance(messages, list) else []
    for message in reversed(turns):
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content: Any = message.get("content")
        if isinstance(content, str):
            return content, None
        if not isinstance(content, list):
            break
        texts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        ]
        if fim and len(texts) == 2:
            return texts[0], texts[1]
        return "".join(texts), None
    return "", None


def text_logprobs(value: Any) -> dict[str, Any] | None:
    """`value` when it is a completions API's ``logprobs`` object (``tokens``,
    ``token_logprobs`` ...), else None: a chat model's logprobs mean something else."""
    if isinstance(value, dict) and ("tokens" in value or "token_logprobs" in value):
        return value
    return None


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
    if (logprobs := text_logprobs(choice.get("logprobs"))) is not None:
        out["logprobs"] = logprobs
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
