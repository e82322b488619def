"""``POST /v1/completions``: OpenAI's (legacy) text-completions API in front of the router.

Clients that speak only this API (older SDK code, evaluation harnesses, IDE autocomplete,
scripts written for a vLLM or llama.cpp server) send a ``prompt`` and read
``choices[].text``. Each request is converted to a chat body (the prompt as one user
message), routed, dispatched, cached, recorded and traced exactly as
``/v1/chat/completions`` serves it (`serve_chat`), and the answer converted back: a
``text_completion`` object, or its event stream. A ``suffix`` rides as the message's
second text part, so routing, safety and every estimate see it. A pool model declared
``text_completions: true`` (a base or code model whose server serves ``/v1/completions``)
gets the request raw instead, as its client wrote it
(`llmroute.dispatch.text_completions`): ``suffix`` (fill in the middle, as the field or
in the model's ``fim_template``), ``echo`` and ``logprobs`` then work, and a request
setting one of them skips the chain's chat models (400 naming the field when none is
left). Refused with a 400 naming the parameter:
``best_of`` above ``n``, several prompts in one request, and prompts given as token ids
(a request is routed by its text). ``max_tokens`` defaults to 16, as the API says.
Errors are OpenAI's error JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llmroute.chat_checks import BELOW_MIN, INVALID_TYPE, check_sizes, check_stream_options
from llmroute.dispatch.text_completions import (
    RAW_FIELDS,
    TextRequest,
    chat_content,
    text_logprobs,
)
from llmroute.dispatch.usage import usage_wanted
from llmroute.errors import InvalidRequest
from llmroute.proxy_fields import check_proxy_fields
from llmroute.server.chunk_translation import ChunkTranslator, clean_completion
from llmroute.server.errors import GatewayError
from llmroute.server.field_checks import (
    INTEGER,
    NUMBER,
    OBJECT,
    STRING,
    STRING_OR_STRINGS,
    Fields,
    check_fields,
)
from llmroute.server.fronts import Stateless, serve_converted
from llmroute.sse import DONE, event_of

__all__ = [
    "COMPLETIONS_FRONT",
    "CompletionStream",
    "completions",
    "to_chat_body",
    "to_completion",
]

DEFAULT_MAX_TOKENS = 16  # the API's default: a client that leaves it out gets that many
# completions-only fields, handled here and not passed on as chat parameters
_OWN = frozenset({"prompt", "max_tokens", "stream", "stream_options", "best_of", *RAW_FIELDS})
# chat finish reasons that mean nothing to a completions client
_FINISH = {"tool_calls": "stop", "function_call": "stop"}
# the types of the fields passed on as chat parameters (the others are checked as read)
_PASSED: Fields = {
    "temperature": NUMBER,
    "top_p": NUMBER,
    "presence_penalty": NUMBER,
    "frequency_penalty": NUMBER,
    "seed": INTEGER,
    "logit_bias": OBJECT,
    "stop": STRING_OR_STRINGS,
    "user": STRING,
}


def _bad(param: str, message: str, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def _prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if prompt is None or prompt == []:
        raise _bad("prompt", "'prompt' is required: the text to complete")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        raise _bad(
            "prompt",
            f"'prompt' holds {len(prompt)} prompts: this gateway routes each prompt on its "
            "own, so send one prompt per request",
        )
    raise _bad(
        "prompt",
        "'prompt' must be a string: prompts given as token ids cannot be routed by their text",
    )


def _count(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        code = INVALID_TYPE if isinstance(value, bool) or not isinstance(value, int) else BELOW_MIN
        raise _bad(key, f"'{key}' must be a positive integer", code)
    return value


def to_chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body for a completions request; 400 (`GatewayError`) naming
    the field for what is malformed or cannot be served by a chat model."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "'model' is required: auto, a route or a pool model")
    prompt = _prompt(body)
    try:
        check_sizes(body)  # logit_bias: the chat endpoint's bound, before it is written again
    except InvalidRequest as exc:
        raise _bad(exc.param, exc.message, exc.code) from None
    check_fields(body, _PASSED)
    _check_raw_fields(body)
    try:  # LiteLLM's fields, metadata and tags as the chat endpoint checks them: the rest
        tags = check_proxy_fields(body)  # of the body goes on to the chat path, and upstream
    except InvalidRequest as exc:
        raise _bad(exc.param, exc.message, exc.code) from None
    n = _count(body, "n", 1)
    if _count(body, "best_of", n) != n:
        raise _bad(
            "best_of",
            "'best_of' above 'n' asks the server to pick the best of several answers by "
            "their logprobs, which this gateway does not: leave it out or equal to 'n'",
        )
    chat: dict[str, Any] = {k: v for k, v in body.items() if k not in _OWN}
    if tags:  # all the request's, as a converted body says them (`note_converted_tags`)
        chat["tags"] = list(tags)
    else:
        chat.pop("tags", None)
    suffix = body.get("suffix")
    # a suffix rides as the message's second part: routed, scanned, redacted and counted
    content = chat_content(prompt, suffix if isinstance(suffix, str) else None)
    chat["messages"] = [{"role": "user", "content": content}]
    chat["max_tokens"] = _count(body, "max_tokens", DEFAULT_MAX_TOKENS)
    try:
        check_stream_options(body)  # the chat endpoint's own check: one message for both
    except InvalidRequest as exc:
        raise _bad(exc.param, exc.message, exc.code) from None
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the translator decides what goes out
    return chat


def _check_raw_fields(body: dict[str, Any]) -> None:
    """The types of the fields only a raw text model serves (whether one is in the
    chain is dispatch's to say)."""
    suffix, echo, logprobs = (body.get(key) for key in RAW_FIELDS)
    if suffix is not None and not isinstance(suffix, str):
        raise _bad("suffix", "'suffix' must be a string: the text after the completion")
    if echo is not None and not isinstance(echo, bool):
        raise _bad("echo", "'echo' must be true or false")
    if logprobs is not None and (
        isinstance(logprobs, bool) or not isinstance(logprobs, int) or logprobs < 0
    ):
        raise _bad("logprobs", "'logprobs' must be a whole number of top tokens (0 or more)")


def _completion_id(chat_id: str) -> str:
    return "cmpl-" + chat_id.removeprefix("chatcmpl-") if chat_id else "cmpl-llmroute"


def _finish(reason: Any) -> str | None:
    return None if reason is None else _FINISH.get(reason, reason)


def to_completion(data: dict[str, Any], model: str, body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion as the ``text_completion`` its client asked for."""
    data = clean_completion(data)
    usage = data.get("usage") or {}
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {
        "id": _completion_id(data["id"]),
        "object": "text_completion",
        "created": data.get("created", 0),
        "model": model,
        "system_fingerprint": data.get("system_fingerprint"),
        "choices": [
            {
                "text": choice["message"].get("content") or choice["message"].get("refusal") or "",
                "index": index,
                "logprobs": text_logprobs(choice.get("logprobs")),
                "finish_reason": _refused_or(choice["message"], _finish(choice["finish_reason"])),
            }
            for index, choice in enumerate(data["choices"])
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _refused_or(message: dict[str, Any], finish: str | None) -> str | None:
    """An OpenAI model's refusal (its text is the completion's) finishes as the content
    filter's verdict would: the legacy API has no other word for it."""
    return "content_filter" if message.get("refusal") and not message.get("content") else finish


class CompletionStream(ChunkTranslator):
    """A chat stream relayed as a completions stream: a ``text_completion`` chunk per
    text delta (and per finish reason), the usage chunk when the client asked for it
    (``stream_options.include_usage``), an error event if the stream broke, then
    ``[DONE]``."""

    def __init__(self, model: str, body: dict[str, Any]) -> None:
        self._model = model
        self._usage_wanted = usage_wanted(body)
        self._id = "cmpl-llmroute"
        self._created = 0
        self._fingerprint: str | None = None
        self._usage: dict[str, Any] | None = None
        self._refused: set[int] = set()  # choices whose text is an OpenAI model's refusal

    def _chunk(self, chunk: dict[str, Any]) -> Iterator[bytes]:
        if chunk["id"]:
            self._id = _completion_id(chunk["id"])
        self._created = chunk.get("created", self._created)
        self._fingerprint = chunk.get("system_fingerprint", self._fingerprint)
        if "error" in chunk:
            error = {"message": chunk["error"]["message"], "type": "server_error"}
            code = chunk["error"].get("code", "upstream_error")  # a bug's: internal_error
            yield event_of({"error": {**error, "param": None, "code": code}})
            yield from self.close()
            return
        if "usage" in chunk:
            self._usage = chunk["usage"]
        for choice in chunk.get("choices", ()):
            text = choice["delta"].get("content")
            if not text and (text := choice["delta"].get("refusal")):
                self._refused.add(choice["index"])
            finish = _finish(choice["finish_reason"])
            if finish is not None and choice["index"] in self._refused:
                finish = "content_filter"
            if text or finish is not None:
                logprobs = text_logprobs(choice.get("logprobs"))
                yield self._event([self._choice(choice["index"], text or "", finish, logprobs)])

    def _choice(
        self, index: int, text: str, finish: str | None, logprobs: Any = None
    ) -> dict[str, Any]:
        return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return event_of(
            {
                "id": self._id,
                "object": "text_completion",
                "created": self._created,
                "model": self._serving(self._model),  # a late fallback's model, once it answers
                "system_fingerprint": self._fingerprint,
                "choices": choices,
                **extra,
            }
        )

    def close(self) -> Iterator[bytes]:
        if self._done:
            return
        self._done = True
        if self._usage_wanted and self._usage is not None:
            prompt = self._usage.get("prompt_tokens", 0)
            completion = self._usage.get("completion_tokens", 0)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            yield self._event([], usage=usage)
        yield DONE


COMPLETIONS_FRONT = Stateless(to_chat_body, CompletionStream, to_completion)


async def completions(request: Request) -> Response:
    return await serve_converted(request, COMPLETIONS_FRONT, TextRequest.of)
