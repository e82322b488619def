"""Token usage and cost of a served request.

Providers report usage; when one does not, the tokens are counted with the WordPiece
tokenizer that ships in the package (the static encoder's copy, so counting needs no
model files) and the usage is marked ``estimated``. Cost comes from the registry's
prices (USD per million tokens). Both land in the response's ``usage`` as extra fields
(``cost_usd``, ``estimated``), which OpenAI clients keep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from tokenizers import Tokenizer

from llmroute.registry.schema import Price
from llmroute.sse import chunk_of, event_of
from llmroute.token_estimate import CHARS_PER_TOKEN, ceil_tokens, quarter_tokens

__all__ = [
    "StreamUsage",
    "Usage",
    "count_tokens",
    "estimated_prompt_tokens",
    "input_tokens_at_most",
    "priced",
    "priced_embedding",
    "prompt_chars",
    "prompt_text",
    "prompt_tokens",
    "prompt_tokens_at_most",
    "text_tokens_at_most",
]

_PER_MESSAGE = 4  # role and separators, as chat templates add them


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    estimated: bool

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "estimated": self.estimated,
        }


@cache
def _tokenizer() -> Tokenizer:
    path = resources.files("llmroute.encoders") / "data" / "tokenizer.json"
    tokenizer = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


_EXACT_UP_TO = 65_536  # characters counted whole; a longer text is sampled
_SAMPLES = 256
_ALIGN = re.compile(r"\s")
_ALIGN_LOOK = 64  # characters searched for a space to start or end a slice at


def count_tokens(text: str) -> int:
    """Tokens in `text` by the packaged WordPiece tokenizer: within about 15 % of the
    BPE tokenizers of hosted models on English text; an estimate, never billing.

    A text over 64 KiB is counted on 256 evenly spaced slices of about 256 characters,
    each started and ended at a space where one is near (a word cut in two counts as
    more tokens), and scaled by its length, because counting costs ~1 µs a character on
    the event loop: a 3.9 MB prompt took 6 s whole, 0.03 s so. Over 56 windows of
    100-400 kB of this project's docs, code and the MMLU file, the estimate stayed within
    1.8 % of the exact count (docs/benchmarks.md)."""
    if not text:
        return 0
    tokenizer = _tokenizer()

    def encode(piece: str) -> int:
        return _counted(tokenizer.encode(piece, add_special_tokens=False), tokenizer)

    if len(text) <= _EXACT_UP_TO:
        return encode(text)
    width = _EXACT_UP_TO // _SAMPLES
    step = (len(text) - width) / (_SAMPLES - 1)
    sampled = chars = 0
    for i in range(_SAMPLES):
        start = _aligned(text, round(i * step))
        piece = text[start : _aligned(text, max(start, round(i * step)) + width)]
        sampled += encode(piece)
        chars += len(piece)
    return round(sampled * len(text) / max(chars, 1))


_UNK_CHARS_PER_TOKEN = 3  # what a BPE tokenizer makes of base64, hex, minified code


def _counted(encoding: Any, tokenizer: Tokenizer) -> int:
    """The tokens of `encoding`, with each ``[UNK]`` (WordPiece gives one for a whole
    word past 100 characters: base64, a long URL, a text with no spaces) counted at
    about three characters a token, as the BPE tokenizers of hosted models count it,
    not as one."""
    ids = encoding.ids
    unk = tokenizer.token_to_id("[UNK]")
    if unk not in ids:
        return len(ids)
    extra = 0
    for token_id, (start, end) in zip(ids, encoding.offsets, strict=True):
        if token_id == unk and end - start > _UNK_CHARS_PER_TOKEN:
            extra += (end - start) // _UNK_CHARS_PER_TOKEN - 1
    return len(ids) + extra


def _aligned(text: str, at: int) -> int:
    """`at`, moved just past the next whitespace within `_ALIGN_LOOK` characters (or
    left where it is: a text with no spaces there, dense code or base64)."""
    if at <= 0 or at >= len(text) or text[at - 1].isspace():
        return min(max(at, 0), len(text))
    found = _ALIGN.search(text, at, at + _ALIGN_LOOK)
    return found.end() if found is not None else at


def _content_text(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield part["text"]


def _calls(holder: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """The tool calls of a message, whatever a client or upstream put there."""
    calls = holder.get("tool_calls")
    if isinstance(calls, list):
        yield from (call for call in calls if isinstance(call, Mapping))


def _thinking_text(message: Mapping[str, Any]) -> Iterable[str]:
    """An assistant turn's thinking sent back (``thinking_blocks``): Claude may count it
    as input (always for the turn a tool loop continues, on newer models for every
    turn). A redacted block's ``data`` is encrypted thinking, counted at its length."""
    blocks = message.get("thinking_blocks")
    for block in blocks if isinstance(blocks, list) else ():
        if isinstance(block, Mapping):
            text = block.get("thinking", block.get("data"))
            if isinstance(text, str):
                yield text


def _prompt_pieces(body: Mapping[str, Any], *, thinking: bool = False) -> Iterable[str]:
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, Mapping):
            yield from _content_text(message.get("content"))
            for call in _calls(message):
                yield json.dumps(call.get("function", {}))
            if thinking:
                yield from _thinking_text(message)
    if body.get("tools"):
        yield json.dumps(body["tools"])
    if messages is None:  # a completions body, as a raw text model gets it
        for key in ("prompt", "suffix"):
            if isinstance(text := body.get(key), str):
                yield text


def prompt_text(body: Mapping[str, Any]) -> str:
    """The text of a chat body's messages and tool definitions, for counting."""
    return "\n".join(_prompt_pieces(body))


def prompt_chars(body: Mapping[str, Any]) -> int:
    """The length of `prompt_text` without building it (on every request)."""
    return sum(len(piece) + 1 for piece in _prompt_pieces(body))


def prompt_tokens_at_most(body: Mapping[str, Any]) -> int:
    """A generous bound on a chat body's prompt tokens, as cheap as `prompt_chars`: its
    UTF-8 bytes over two, and each message's separators. English runs about four
    characters a token and code about three, so this counts them twice and one and a half
    times over; CJK text (three bytes a character) is counted one and a half tokens a
    character. Text no tokenizer can compress (random symbols) may count more, and so
    may Hebrew and emoji under GPT-4's cl100k (246 tokens for a Hebrew text this counts
    232; docs/benchmarks.md "Pre-flight token estimates per script"): a hard budget held
    with it can be passed by that much there.
    Thinking blocks sent back count too: whether the model bills them depends on it."""
    pieces = sum(
        len(piece.encode("utf-8", "surrogatepass")) + 1
        for piece in _prompt_pieces(body, thinking=True)
    )
    messages = body.get("messages")
    turns = len(messages) if isinstance(messages, list) else 0
    return -(-pieces // 2) + _PER_MESSAGE * turns


def input_tokens_at_most(value: Any) -> int:
    """`prompt_tokens_at_most` for an embeddings ``input``: texts at their UTF-8 bytes
    over two, token arrays by length."""
    return _embedding_tokens(value, text_tokens_at_most)


def text_tokens_at_most(text: str) -> int:
    """A bound on a text's tokens as cheap as its length: its UTF-8 bytes over two."""
    return -(-len(text.encode("utf-8", "surrogatepass")) // 2)


def _embedding_tokens(value: Any, count: Callable[[str], int]) -> int:
    """Tokens of an embeddings ``input``: each text as `count` says, token arrays by
    length."""
    if isinstance(value, str):
        return count(value)
    if not isinstance(value, list):
        return 0
    return sum(
        count(item) if isinstance(item, str) else len(item) if isinstance(item, list) else 1
        for item in value
    )


def estimated_text_tokens(text: str) -> int:
    """The cheap pre-flight estimate of a text's tokens: four ASCII characters a token,
    two characters a token of other alphabets, one token a CJK (or other three-byte)
    character, two an emoji (`llmroute.token_estimate`), rounded up: a short text is a
    token, not none (a key's ``tpm`` counted "hi" as free). ASCII text costs its length
    alone."""
    return ceil_tokens(text)


def estimated_input_tokens(value: Any) -> int:
    """`estimated_text_tokens` for an embeddings ``input`` (token arrays by length)."""
    return _embedding_tokens(value, estimated_text_tokens)


def estimated_prompt_tokens(body: Mapping[str, Any]) -> int:
    """The cheap pre-flight estimate that context windows and a key's held ``tpm`` use,
    counted as `estimated_text_tokens` counts (English four characters a token, CJK a
    token a character), rounded up; `prompt_tokens` is the finer one ``count_tokens``
    reports."""
    quarters = 0
    for piece in _prompt_pieces(body):  # each piece's "\n" separator is one ASCII quarter
        quarters += (len(piece) if piece.isascii() else quarter_tokens(piece)) + 1
    return -(-quarters // CHARS_PER_TOKEN)


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """A chat body's prompt tokens as `count_tokens` estimates them (messages, tool
    definitions, and the separators chat templates add)."""
    return _prompt_tokens(body)


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    messages = body.get("messages")
    turns = len(messages) if isinstance(messages, list) else 0
    return count_tokens(prompt_text(body)) + _PER_MESSAGE * turns


def _completion_text(data: Mapping[str, Any]) -> str:
    pieces: list[str] = []
    choices = data.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, Mapping) else None
        if isinstance(message, Mapping):
            if isinstance(message.get("reasoning_content"), str):  # thinking is billed as output
                pieces.append(message["reasoning_content"])
            pieces.extend(_content_text(message.get("content")))
            pieces.extend(json.dumps(call.get("function", {})) for call in _calls(message))
    return "\n".join(pieces)


def _reported(usage: Any) -> tuple[int, int] | None:
    if not isinstance(usage, Mapping):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None


def _cached(usage: Any) -> int:
    """Prompt tokens the provider read from its prompt cache (0 when it says nothing)."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, Mapping) else None
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    return cached if isinstance(cached, int) and not isinstance(cached, bool) else 0


def _cost(price: Price, prompt: int, completion: int, cached: int = 0) -> float:
    cached = min(max(cached, 0), prompt) if price.cached_input is not None else 0
    dollars = (prompt - cached) * price.input + completion * price.output
    if cached:
        dollars += cached * (price.cached_input or 0.0)
    return round(dollars / 1e6, 10)


def priced(
    data: dict[str, Any], body: Mapping[str, Any], price: Price, *, completion: str | None = None
) -> Usage:
    """The usage of a completion (reported, else counted), with its cost; written into
    ``data["usage"]`` (reported fields kept) and returned. `completion` is the generated
    text when `data` has no choices (a stream's last chunk)."""
    reported = _reported(data.get("usage"))
    cached = 0
    if reported is None:
        text = _completion_text(data) if completion is None else completion
        prompt, generated, estimated = _prompt_tokens(body), count_tokens(text), True
    else:
        (prompt, generated), estimated = reported, False
        cached = _cached(data.get("usage"))
    usage = Usage(prompt, generated, _cost(price, prompt, generated, cached), estimated)
    reported_usage = data.get("usage")
    extra: dict[str, Any] = reported_usage if isinstance(reported_usage, dict) else {}
    data["usage"] = {**extra, **usage.to_dict()}
    return usage


def _input_tokens(value: Any) -> int:
    """Tokens of an embeddings ``input``: text counted, token arrays by length."""
    return _embedding_tokens(value, count_tokens)


def priced_embedding(data: dict[str, Any], body: Mapping[str, Any], price: Price) -> Usage:
    """The usage of an embeddings answer (its reported ``prompt_tokens``, else the input
    counted) with its cost, written into ``data["usage"]`` like a completion's."""
    reported = data.get("usage")
    extra: dict[str, Any] = reported if isinstance(reported, dict) else {}
    reported_tokens = extra.get("prompt_tokens")
    if isinstance(reported_tokens, int) and not isinstance(reported_tokens, bool):
        tokens, estimated = max(reported_tokens, 0), False
    else:
        tokens, estimated = _input_tokens(body.get("input")), True
    usage = Usage(tokens, 0, _cost(price, tokens, 0), estimated)
    data["usage"] = {
        **extra,
        "prompt_tokens": usage.prompt_tokens,
        "total_tokens": usage.prompt_tokens,
        "cost_usd": usage.cost_usd,
        "estimated": usage.estimated,
    }
    return usage


def usage_wanted(body: Mapping[str, Any]) -> bool:
    """Whether a stream's client asked for its usage chunk."""
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def asking_usage(body: dict[str, Any]) -> dict[str, Any]:
    """A stream's body asking the upstream for its usage chunk: what a stream costs is
    then the provider's count, not an estimate, whether or not the client asked (most
    OpenAI SDK users never do); `StreamUsage` leaves the chunk out for a client that did
    not. Other bodies as they are."""
    if body.get("stream") is not True or usage_wanted(body):
        return body
    options = body.get("stream_options")
    kept = options if isinstance(options, Mapping) else {}
    return {**body, "stream_options": {**kept, "include_usage": True}}


# a null usage as servers write it: last and compact (OpenAI's, vLLM's: one check), else
# anywhere, compact or spaced; a match is structure, never string content (where each
# quote is escaped), but may be a nested object's key: cut only where it is the one
_LAST_NULL_USAGE = b',"usage":null}\n\n'
_NULL_USAGE = (b',"usage":null', b', "usage": null')
_USAGE_KEY = b'"usage"'


def _without_usage(event: bytes, chunk: dict[str, Any]) -> bytes:
    """`event` without its chunk's ``"usage": null``: cut from the bytes where it is
    written as servers write it (no new JSON for each event of a stream: about 0.2 µs
    an event, docs/benchmarks.md), else the chunk written again without it. Last in the
    object, the key is the chunk's own; elsewhere only when no other is written (a
    choice's ``"usage": null`` would be found instead)."""
    if event.endswith(_LAST_NULL_USAGE):
        return event[: -len(_LAST_NULL_USAGE)] + b"}\n\n"
    if event.count(_USAGE_KEY) == 1:
        for written in _NULL_USAGE:
            at = event.rfind(written)
            if at >= 0:
                return event[:at] + event[at + len(written) :]
    del chunk["usage"]
    return event_of(chunk)


class StreamUsage:
    """Watches a stream's events: prices the usage chunk when the upstream sends one,
    and otherwise counts the streamed text so the usage can be estimated at the end.

    `observe` returns the event to send on (the usage chunk rewritten with the cost);
    `final_event` returns a usage chunk to send before ``[DONE]`` when the client asked
    for usage (``stream_options.include_usage``) and the upstream sent none.
    """

    def __init__(self, body: Mapping[str, Any], price: Price) -> None:
        self._body = body
        self._price = price
        self._wanted = usage_wanted(body)
        self._text: list[str] = []
        self._last: dict[str, Any] | None = None
        self.usage: Usage | None = None

    def observe(self, event: bytes) -> bytes | None:
        """The event to send on; None for the usage chunk the gateway asked for
        (`asking_usage`) when the client did not."""
        chunk = chunk_of(event)
        if chunk is None:
            return event
        self._last = chunk
        choices = chunk.get("choices")
        # `dict`, not `Mapping`: what `chunk_of` gives is JSON, and an ABC's isinstance
        # costs several times as much (a few an event)
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                self._counted(delta)
        usage = chunk.get("usage")
        if usage is None:
            # OpenAI writes ``"usage": null`` on every chunk of a stream that asks for
            # usage, and omits it otherwise: the gateway's asking is not the client's
            if self._wanted or "usage" not in chunk:
                return event
            return _without_usage(event, chunk)
        if _reported(usage) is None:
            return event
        self.usage = priced(chunk, self._body, self._price)
        if not self._wanted:
            if not choices:
                return None
            del chunk["usage"]  # on the last words' chunk, as some servers send it
        return event_of(chunk)

    def _counted(self, delta: dict[str, Any]) -> None:
        """What a delta generated, for the estimate: thinking, text and tool-call
        arguments (all billed as output)."""
        for key in ("reasoning_content", "content"):
            text = delta.get(key)
            if isinstance(text, str):
                self._text.append(text)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for key in ("name", "arguments"):
                    text = function.get(key)
                    if isinstance(text, str):
                        self._text.append(text)

    def finish(self) -> Usage:
        """The usage once the stream has ended: reported, else estimated."""
        if self.usage is None:
            self.usage = priced({}, self._body, self._price, completion="".join(self._text))
        return self.usage

    def estimate(self) -> Usage | None:
        """Its prompt alone, counted and marked estimated (as a cut call's): what a stream
        whose answer a bug failed to price is charged; None when that fails too."""
        try:
            return priced({}, self._body, self._price, completion="")
        except Exception:
            return None

    def final_event(self) -> bytes | None:
        if not self._wanted or self.usage is not None:
            return None
        usage = self.finish()
        last = self._last or {}
        chunk = {
            "id": last.get("id", "chatcmpl-llmroute"),
            "object": "chat.completion.chunk",
            "created": last.get("created", 0),
            "model": last.get("model", ""),
            "choices": [],
            "usage": usage.to_dict(),
        }
        return event_of(chunk)
