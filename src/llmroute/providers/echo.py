"""`EchoProvider`: a provider of kind ``echo``, which answers in this process without any
model. It says the request's last user message back (or the provider's `reply`), in
OpenAI's wire format, with token counts from the packaged tokenizer, after `delay_s`.

Models declared ``text_completions`` get raw completions too (`complete_text`): the
prompt said back as a model would get it, so the fill-in-the-middle template and what
safety redacted can be seen. What it is for: trying the gateway and the SDK end to end
before any model server exists, and testing client applications (streams, tool loops
that end, retries against a slow model) without spending tokens. It never pretends to
be a model: every answer names the pool model's ``model`` as given in the registry, and
``system_fingerprint`` says ``llmroute-echo``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np

from llmroute.dispatch.rerank import rerank_texts
from llmroute.dispatch.usage import count_tokens, prompt_tokens, usage_wanted
from llmroute.errors import UpstreamRejected
from llmroute.providers.base import Timeouts
from llmroute.registry.schema import Provider
from llmroute.sse import DONE, event_of

__all__ = ["ECHO_DIMENSIONS", "EchoProvider"]

ECHO_DIMENSIONS = 64  # embedding size when the request does not ask for `dimensions`
_MAX_DIMENSIONS = 8192  # OpenAI's largest embedding has 3,072; a bigger ask is a mistake
_FINGERPRINT = "llmroute-echo"
_WORD = re.compile(r"\w+")
_MAX_CHOICES = 128  # OpenAI's most for n


class EchoProvider:
    """One in-process echo for a provider of kind ``echo``."""

    def __init__(self, name: str, spec: Provider) -> None:
        self.name = name
        self._reply = spec.reply
        self._delay_s = spec.delay_s

    async def complete(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        words, finish = self._answer(body)
        await asyncio.sleep(self._delay_s)
        text = "".join(words)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
            for i in range(_choices(body, self.name))
        ]
        return {
            "id": f"chatcmpl-echo-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
            "usage": _usage(body, text, len(choices)),
        }

    async def stream(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> AsyncIterator[bytes]:
        """One chunk a word, each after `delay_s` (the first too): a slow model's stream;
        with ``n``, each word once for every choice, as OpenAI interleaves them."""
        words, finish = self._answer(body)
        count = _choices(body, self.name)
        base = {
            "id": f"chatcmpl-echo-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": _FINGERPRINT,
        }

        def chunk(index: int, delta: dict[str, Any], reason: str | None = None) -> bytes:
            choice = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}
            return event_of({**base, "choices": [choice]})

        await asyncio.sleep(self._delay_s)
        for index in range(count):
            yield chunk(index, {"role": "assistant", "content": ""})
        for i, word in enumerate(words):
            if i:
                await asyncio.sleep(self._delay_s)
            for index in range(count):
                yield chunk(index, {"content": word})
        for index in range(count):
            yield chunk(index, {}, finish)
        if usage_wanted(body):
            usage = _usage(body, "".join(words), count)
            yield event_of({**base, "choices": [], "usage": usage})
        yield DONE

    async def complete_text(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        """A raw completion (a model declared ``text_completions``): the prompt said back
        as the model would get it (with its ``fim_template`` applied), and a ``suffix``
        sent as the field after ``[suffix]``; the prompt before it with ``echo``."""
        chat = _as_chat(body)
        words, finish = self._answer(chat)
        count = _choices(body, self.name)
        await asyncio.sleep(self._delay_s)
        text = "".join(words)
        if body.get("echo") is True:
            text = str(body.get("prompt", "")) + text
        return {
            "id": f"cmpl-echo-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": _FINGERPRINT,
            "choices": [
                {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
                for i in range(count)
            ],
            "usage": _usage(chat, "".join(words), count),
        }

    async def stream_text(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> AsyncIterator[bytes]:
        """`complete_text`'s words, one ``text_completion`` chunk each, as `stream`."""
        chat = _as_chat(body)
        words, finish = self._answer(chat)
        if body.get("echo") is True:
            words = [str(body.get("prompt", "")), *words]
        base = {
            "id": f"cmpl-echo-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": _FINGERPRINT,
        }

        def chunk(text: str, reason: str | None = None) -> bytes:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
            return event_of({**base, "choices": [choice]})

        for word in words:
            await asyncio.sleep(self._delay_s)
            yield chunk(word)
        yield chunk("", finish)
        if usage_wanted(body):
            usage = _usage(chat, "".join(words), 1)
            yield event_of({**base, "choices": [], "usage": usage})
        yield DONE

    async def embed(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        """Deterministic unit vectors, one per input text (the same text, the same
        vector), `dimensions` long when the request asks; base64 strings of their float32
        bytes with ``encoding_format: base64`` (what OpenAI's client asks for by default)."""
        given = body.get("input")
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise UpstreamRejected(
                self.name, "the echo provider embeds a string or a list of strings", status=400
            )
        size = body.get("dimensions", ECHO_DIMENSIONS)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= _MAX_DIMENSIONS:
            raise UpstreamRejected(
                self.name,
                f"'dimensions' must be an integer from 1 to {_MAX_DIMENSIONS}",
                status=400,
            )
        await asyncio.sleep(self._delay_s)
        encode = _base64 if body.get("encoding_format") == "base64" else None
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _vector(t, size) if encode is None else encode(_vector(t, size)),
            }
            for i, t in enumerate(texts)
        ]
        tokens = sum(count_tokens(t) for t in texts)
        return {
            "object": "list",
            "model": model,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def rerank(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        """The documents ordered by the share of the query's words each holds (ties in
        their given order), the best `top_n`; each with its text when the request sets
        ``return_documents``. Not a model's judgement: a stand-in that keeps its shape."""
        query, texts = rerank_texts(body)
        if not query or not texts:
            raise UpstreamRejected(
                self.name, "the echo provider reranks a query over a list of documents", status=400
            )
        wanted = set(_WORD.findall(query.lower()))
        scores = [
            len(wanted & set(_WORD.findall(text.lower()))) / max(len(wanted), 1) for text in texts
        ]
        order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
        top_n = body.get("top_n")
        if isinstance(top_n, int) and not isinstance(top_n, bool) and top_n > 0:
            order = order[:top_n]
        results: list[dict[str, Any]] = []
        for i in order:
            result: dict[str, Any] = {"index": i, "relevance_score": round(scores[i], 6)}
            if body.get("return_documents") is True:
                result["document"] = {"text": texts[i]}
            results.append(result)
        await asyncio.sleep(self._delay_s)
        tokens = sum(count_tokens(query) + count_tokens(text) for text in texts)
        return {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": model,
            "results": results,
            "usage": {"total_tokens": tokens},
        }

    async def aclose(self) -> None:
        return None

    def _answer(self, body: Mapping[str, Any]) -> tuple[list[str], str]:
        """The answer's words (each with the whitespace before it, so that they join to
        the text as it was: its newlines and indentation kept) and its finish reason:
        ``length`` when the request's ``max_tokens`` (or ``max_completion_tokens``) cut it."""
        text = self._reply if self._reply is not None else _last_user_text(body)
        words = _WORDS.findall(text.rstrip())
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(words):
            return words[:limit], "length"
        return words, "stop"


_WORDS = re.compile(r"\s*\S+")


def _last_user_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    part["text"]
                    for part in content
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str)
                )
    return ""


def _as_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """A raw completions body as the chat body `_answer` and `_usage` read: its prompt,
    and a ``suffix`` field after ``[suffix]``, as the user's message."""
    prompt = str(body.get("prompt", ""))
    suffix = body.get("suffix")
    said = f"{prompt} [suffix] {suffix}" if isinstance(suffix, str) and suffix else prompt
    return {**body, "messages": [{"role": "user", "content": said}]}


def _base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: base64``: the float32 values' little-endian bytes."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _choices(body: Mapping[str, Any], provider: str) -> int:
    """The request's ``n`` (1 when unset), refused past OpenAI's most (128) as it would."""
    n = body.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return 1
    if n > _MAX_CHOICES:
        raise UpstreamRejected(provider, f"'n' must be at most {_MAX_CHOICES}", status=400)
    return n


def _usage(body: Mapping[str, Any], text: str, choices: int) -> dict[str, int]:
    prompt = prompt_tokens(body)
    completion = count_tokens(text) * choices if text else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _vector(text: str, dims: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "replace")).digest()[:8], "big")
    vector = np.random.default_rng(seed).standard_normal(dims)
    return [float(x) for x in vector / np.linalg.norm(vector)]
