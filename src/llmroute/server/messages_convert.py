"""Anthropic Messages ⇄ OpenAI chat completions, for the gateway's ``POST /v1/messages``
front, without I/O so each rule is testable alone.

A Messages request becomes the chat body the router and the dispatcher already serve
(`to_chat_body`); the OpenAI answer becomes a Messages answer (`to_message`), and an
OpenAI stream a Messages event stream (`StreamTranslator`). What cannot be carried is
refused with a 400 naming the field (server tools, documents, ...); what is only a hint
for Anthropic's own servers is dropped (``service_tier``), and ``top_k`` rides apart for
an Anthropic provider only: docs/gateway.md lists them. Field types are checked first
(`llmroute.server.messages_checks`). Thinking
blocks cross both ways as the chat shape's ``thinking_blocks`` (signatures unchanged),
which an Anthropic provider sends back and other providers leave out. ``thinking`` is
kept (dispatch says it in the serving model's own dialect), and so are ``cache_control``
markers, on the chat shapes' content parts and tools, where an Anthropic provider reads
them back (others drop them unless told).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

from starlette.responses import JSONResponse

from llmroute.dispatch.anthropic_only import ANTHROPIC_ONLY
from llmroute.proxy_fields import routed_metadata
from llmroute.server.chunk_translation import ChunkTranslator, clean_completion
from llmroute.server.errors import GatewayError
from llmroute.server.messages_checks import check_messages_body
from llmroute.untrusted_json import MAX_DEPTH, loads

log = logging.getLogger("llmroute.server")

__all__ = [
    "COUNT_TOKENS_PATH",
    "MESSAGES_PATH",
    "StreamTranslator",
    "error_body",
    "error_response",
    "to_chat_body",
    "to_message",
]

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def _bad(param: str, message: str) -> GatewayError:
    return GatewayError(400, message, param=param)


# ---------------------------------------------------------------- requests


def to_chat_body(body: dict[str, Any], *, counting: bool = False) -> dict[str, Any]:
    """The chat-completions body for a Messages request; 400 (`GatewayError`) naming the
    field for anything malformed or that cannot be carried. `counting` (for
    ``count_tokens``) does not ask for ``max_tokens``."""
    tags = check_messages_body(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "'model' is required: auto, a route or a pool model")
    max_tokens = body.get("max_tokens", 1 if counting else None)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("max_tokens", "'max_tokens' is required and must be a positive integer")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "'messages' is required and must be a non-empty list")
    messages = _system(body.get("system"))
    for i, message in enumerate(raw):
        messages.extend(_message(message, f"messages[{i}]"))
    chat: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    chat.update(_sampling(body))
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    tools = _tools(body["tools"]) if body.get("tools") is not None else []
    choice = _tool_choice(body["tool_choice"]) if body.get("tool_choice") is not None else {}
    if tools:  # OpenAI refuses an empty list, and a tool_choice without tools
        chat["tools"] = tools
        chat.update(choice)
    chat.update(_output_format(body))
    chat.update(_output_effort(body))
    _refuse_beyond(body)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    if (routed := routed_metadata(metadata)) is not None:
        chat["metadata"] = routed
    if body.get("thinking") is not None:
        chat["thinking"] = _thinking(body["thinking"], None if counting else max_tokens)
    if body.get("cache_control") is not None:
        _cache_last(messages, _cache(body, "request"))
    if tags:  # the request's, as a chat body's are: checked again there, sent to no model
        chat["tags"] = list(tags)
    return chat


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling parameters as chat says them; ``top_k`` and ``inference_geo``,
    Anthropic's own, apart for an Anthropic provider only
    (`llmroute.dispatch.anthropic_only`)."""
    out = {key: body[key] for key in ("temperature", "top_p") if body.get(key) is not None}
    own = {key: body[key] for key in ("top_k", "inference_geo") if body.get(key) is not None}
    if own:
        out[ANTHROPIC_ONLY] = own
    return out | _stops(body.get("stop_sequences"))


# top-level fields whose answer the chat shape cannot give: refused, not dropped
_BEYOND = ("mcp_servers", "container")


def _refuse_beyond(body: dict[str, Any]) -> None:
    for key in _BEYOND:
        if body.get(key) is not None:
            raise _bad(key, f"'{key}' is not supported by this gateway")


def _output_format(body: dict[str, Any]) -> dict[str, Any]:
    """Structured outputs (``output_config.format``, or the beta's ``output_format``)
    as chat's ``response_format``: a model that has them answers to the schema, an
    Anthropic one through the gateway is told it."""
    config = body.get("output_config")
    if config is not None and not isinstance(config, dict):
        raise _bad("output_config", "'output_config' must be an object")
    where, fmt = "output_config.format", (config or {}).get("format")
    if fmt is None:
        where, fmt = "output_format", body.get("output_format")
    if fmt is None:
        return {}
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    if (
        not isinstance(fmt, dict)
        or fmt.get("type") != "json_schema"
        or not isinstance(schema, dict)
    ):
        raise _bad(where, f"'{where}' must be {{type: json_schema, schema: {{...}}}}")
    spec = {"name": "output", "schema": schema, "strict": True}
    return {"response_format": {"type": "json_schema", "json_schema": spec}}


_EFFORTS = ("low", "medium", "high", "xhigh", "max")


def _output_effort(body: dict[str, Any]) -> dict[str, Any]:
    """``output_config.effort``, checked, kept as chat's ``output_config.effort``: an
    Anthropic model gets it as it came, and dispatch says it as ``reasoning_effort``
    (or a thinking budget) where the serving model takes that
    (llmroute.dispatch.client_reasoning)."""
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if effort is None:
        return {}
    if effort not in _EFFORTS:
        raise _bad("output_config.effort", f"'output_config.effort' must be one of {_EFFORTS}")
    return {"output_config": {"effort": effort}}


def _cache_last(messages: list[dict[str, Any]], marker: dict[str, Any]) -> None:
    """A request-level ``cache_control`` (automatic prompt caching) as Anthropic places
    it: on the last block that can carry it, the last message's content's end."""
    for message in reversed(messages):
        content = message.get("content")
        if isinstance(content, str) and content:
            message["content"] = [{"type": "text", "text": content, **marker}]
            return
        if isinstance(content, list) and content:
            content[-1] = content[-1] | marker
            return


def _thinking(thinking: Any, max_tokens: int | None) -> dict[str, Any]:
    """The client's thinking choice, checked as Anthropic checks it; dispatch says it in
    the dialect of the model that serves (llmroute.dispatch.client_reasoning)."""
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return {"type": "disabled"}
    if kind == "adaptive":
        display = thinking.get("display")
        if display is None:
            return {"type": "adaptive"}
        if display not in ("summarized", "omitted"):
            raise _bad("thinking.display", "'thinking.display' must be 'summarized' or 'omitted'")
        return {"type": "adaptive", "display": display}
    if kind != "enabled":
        raise _bad("thinking", "'thinking.type' must be 'adaptive', 'enabled' or 'disabled'")
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
        raise _bad("thinking.budget_tokens", "'thinking.budget_tokens' must be at least 1024")
    if max_tokens is not None and budget >= max_tokens:
        raise _bad(
            "thinking.budget_tokens",
            f"'max_tokens' ({max_tokens}) must be greater than 'thinking.budget_tokens' ({budget})",
        )
    return {"type": "enabled", "budget_tokens": budget}


def _stops(stops: Any) -> dict[str, Any]:
    if stops is None:
        return {}
    if not isinstance(stops, list) or not all(isinstance(x, str) for x in stops):
        raise _bad("stop_sequences", "'stop_sequences' must be a list of strings")
    return {"stop": stops}


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if isinstance(system, list):
        parts = [_text_part(block, f"system[{i}]") for i, block in enumerate(system)]
        return [{"role": "system", "content": _joined(parts, "\n\n")}] if parts else []
    raise _bad("system", "'system' must be a string or a list of text blocks")


def _cache(block: dict[str, Any], where: str) -> dict[str, Any]:
    """The block's ``cache_control`` marker, as the chat part carries it ({} if none)."""
    marker = block.get("cache_control")
    if marker is None:
        return {}
    if not isinstance(marker, dict) or not isinstance(marker.get("type"), str):
        raise _bad(f"{where}.cache_control", f"{where}.cache_control must be an object with a type")
    return {"cache_control": marker}


def _text_part(block: Any, where: str) -> dict[str, Any]:
    text = _text_of(block, where)
    return {"type": "text", "text": text, **_cache(block, where)}


def _joined(parts: list[dict[str, Any]], sep: str) -> Any:
    """Text parts as one string, or the parts themselves when one carries a cache marker
    or is not text (the marker needs its part)."""
    if all(p["type"] == "text" and "cache_control" not in p for p in parts):
        return sep.join(p["text"] for p in parts)
    return parts


def _text_of(block: Any, where: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise _bad(where, f"{where} must be a text block")
    text = block.get("text")
    if not isinstance(text, str):
        raise _bad(where, f"{where}.text must be a string")
    return text


def _message(message: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system"):
        raise _bad(where, f"{where} must be an object with role 'user', 'assistant' or 'system'")
    role, content = message["role"], message.get("content")
    if role == "system":  # instructions in the conversation (Claude Code sends them)
        if isinstance(content, list):
            parts = [_text_part(block, f"{where}.content[{i}]") for i, block in enumerate(content)]
            return [{"role": "system", "content": _joined(parts, "\n\n")}] if parts else []
        if not isinstance(content, str):
            raise _bad(where, f"{where}.content must be a string or a list of text blocks")
        return [{"role": "system", "content": content}] if content else []
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _bad(where, f"{where}.content must be a string or a list of content blocks")
    if role == "assistant":
        return [_assistant(content, where)]
    return _user(content, where)


def _assistant(blocks: list[Any], where: str) -> dict[str, Any]:
    texts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    thoughts: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        at = f"{where}.content[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(_text_part(block, at))
        elif kind == "tool_use":
            name, call_id = block.get("name"), block.get("id")
            if not isinstance(name, str) or not isinstance(call_id, str):
                raise _bad(at, f"{at} needs a string 'id' and 'name'")
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            thoughts.append(block)  # as it came: the signature covers every byte
        else:
            raise _bad(at, f"{at}: content block type {kind!r} is not supported here")
    # null content only beside tool calls: OpenAI refuses an assistant message of nothing
    out: dict[str, Any] = {
        "role": "assistant",
        "content": _joined(texts, "") or (None if calls else ""),
    }
    if calls:
        out["tool_calls"] = calls
    if thoughts:
        out["thinking_blocks"] = thoughts
    return out


def _user(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    """Tool results become ``tool`` messages (first, as OpenAI wants them right after the
    assistant's calls); text and images stay one user message. A ``tool`` message holds
    text only, so a result's images (a screenshot, a file a tool read) open that user
    message, each after a line naming its result."""
    tools: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        at = f"{where}.content[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(_text_part(block, at))
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            message, images = _tool_result(block, at)
            tools.append(message)
            if images:
                label = f"[images returned by tool call {message['tool_call_id']}]"
                tool_images.extend([{"type": "text", "text": label}, *images])
        else:
            raise _bad(at, f"{at}: content block type {kind!r} is not supported here")
    out = list(tools)
    parts = tool_images + parts
    if parts:
        out.append({"role": "user", "content": _joined(parts, "\n")})
    return out


def _image_url(block: dict[str, Any], where: str) -> str:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if isinstance(media, str) and isinstance(data, str):
            return f"data:{media};base64,{data}"
    if isinstance(source, dict) and source.get("type") == "url":
        url = source.get("url")
        if isinstance(url, str):
            return url
    raise _bad(where, f"{where}.source must be a base64 image or a url")


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    image = {"type": "image_url", "image_url": {"url": _image_url(block, where)}}
    return image | _cache(block, where)


def _tool_result(block: dict[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``tool`` message, and the result's images (for the user message after it)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise _bad(where, f"{where}.tool_use_id must be a string")
    content = block.get("content", "")
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        parts = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        parts = []
        for j, inner in enumerate(content):
            at = f"{where}.content[{j}]"
            if isinstance(inner, dict) and inner.get("type") == "image":
                images.append(_image_part(inner, at))
            else:
                parts.append(_text_part(inner, at))
    else:
        raise _bad(where, f"{where}.content must be a string or a list of text and image blocks")
    if not parts:
        parts = [{"type": "text", "text": ""}]
    if block.get("is_error") is True:
        parts[0] = {**parts[0], "text": f"Error: {parts[0]['text']}"}
    parts[-1] = parts[-1] | _cache(block, where)  # the result's own marker: on its end
    return {"role": "tool", "tool_call_id": call_id, "content": _joined(parts, "\n")}, images


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "'tools' must be a list")
    out = []
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _bad(at, f"{at}: tool type {kind!r} is not supported (only client tools)")
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not isinstance(schema, dict):
            raise _bad(at, f"{at} needs a string 'name' and an object 'input_schema'")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function, **_cache(tool, at)})
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    mapped: Any
    if kind == "auto":
        mapped = "auto"
    elif kind == "any":
        mapped = "required"
    elif kind == "none":
        mapped = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        mapped = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _bad("tool_choice", "'tool_choice' must be auto, any, none or a named tool")
    out: dict[str, Any] = {"tool_choice": mapped}
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out


# ---------------------------------------------------------------- answers


def _input(arguments: Any) -> Any:
    if not isinstance(arguments, str) or not arguments:
        return {}
    try:
        parsed = loads(arguments, max_depth=MAX_DEPTH)
    except ValueError:
        parsed = None
    # a tool's input is an object: anything else is handed over rather than lost
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def to_message(data: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages answer for an OpenAI chat completion; `model` is the pool model that
    served it. Messages has no ``n``: of several choices (a registry's ``params: {n:
    2}``), the message is the first's, choice 0, as `StreamTranslator` streams it."""
    data = clean_completion(data)
    choice = (data["choices"] or [{}])[0]
    message = choice.get("message") or {}
    blocks: list[dict[str, Any]] = list(message.get("thinking_blocks") or ())
    if isinstance(message.get("content"), str) and message["content"]:
        blocks.append({"type": "text", "text": message["content"]})
    refused = "refusal" in message
    if refused:  # said as Anthropic's models say theirs: text, stop_reason refusal
        blocks.append({"type": "text", "text": message["refusal"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or _made_tool_id(),
                "name": function.get("name") or "",
                "input": _input(function.get("arguments")),
            }
        )
    usage = data.get("usage") or {}
    return {
        "id": f"msg_{data.get('id') or uuid4().hex}",  # an upstream may leave its id out
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": "refusal"
        if refused
        else _stop_reason(
            choice.get("finish_reason"), any(b["type"] == "tool_use" for b in blocks)
        ),
        "stop_sequence": None,
        "usage": _usage(usage),
    }


def _made_tool_id() -> str:
    """A ``tool_use`` id for a call its upstream sent without one (some OpenAI-protocol
    servers leave it out, or send ""): the client sends its ``tool_result`` back with
    it, so each call needs its own, in Anthropic's shape (as the Responses front makes
    ``call_...``)."""
    return f"toolu_{uuid4().hex[:24]}"


def _stop_reason(finish: object, called: bool) -> str:
    """Anthropic's stop reason for OpenAI's finish reason. An answer that calls tools
    stops for them (``tool_use``), whatever the server said: some OpenAI-compatible
    servers finish such answers with ``stop``, and an agent loop that waits for
    ``tool_use`` would never run the tools."""
    stop = _STOP.get(finish if isinstance(finish, str) else "stop", "end_turn")
    return "tool_use" if called and stop == "end_turn" else stop


def _usage(usage: dict[str, Any]) -> dict[str, int]:
    """Anthropic's usage for OpenAI's: tokens read from the prompt cache, and those
    written to it, are counted apart from ``input_tokens``, as Anthropic counts them."""
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    out = {"input_tokens": prompt, "output_tokens": int(usage.get("completion_tokens") or 0)}
    for key, apart in (
        ("cached_tokens", "cache_read_input_tokens"),
        ("cache_write_tokens", "cache_creation_input_tokens"),
    ):
        tokens = details.get(key)
        if isinstance(tokens, int) and 0 < tokens <= out["input_tokens"]:
            out["input_tokens"] -= tokens
            out[apart] = tokens
    return out


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error JSON for a status."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_response(exc: GatewayError) -> JSONResponse:
    """`exc` as Anthropic's clients expect it: its status and headers, their error body."""
    return JSONResponse(
        error_body(exc.status, exc.message), status_code=exc.status, headers=exc.headers
    )


def _whole(pieces: list[str]) -> bool:
    """Whether a call's streamed arguments are whole JSON: nothing more can follow."""
    try:
        loads("".join(pieces))
    except ValueError:
        return False
    return True


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


class StreamTranslator(ChunkTranslator):
    """OpenAI chat-completion chunks in, Messages stream events out. Feed each SSE event
    (bytes, as the gateway relays them) to `feed`; `close` ends the message if the
    stream stopped without ``[DONE]``."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._done = False
        self._index = -1  # the open content block, -1 when none
        self._kind: str | None = None  # its type: "text", "tool_use", "thinking" ...
        self._tools: set[int] = set()  # the OpenAI tool-call indexes seen
        self._call = -1  # the tool-call index whose block is open, -1 when none
        self._arguments: list[str] = []  # its arguments so far
        # calls that began while the open one's arguments were unfinished (an upstream
        # interleaving parallel calls): their block and arguments, sent when it closes
        self._held: dict[int, tuple[dict[str, Any], list[str]]] = {}
        self._dropped = False  # a call's piece came after its block closed
        self._stop = "end_turn"
        self._refused = False  # OpenAI's refusal came: the stop reason is refusal
        self._usage = {"input_tokens": 0, "output_tokens": 0}

    def _chunk(self, chunk: dict[str, Any]) -> Iterator[bytes]:
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            message = str(error.get("message") or "the upstream stream broke off")
            yield _event("error", {"error": {"type": "api_error", "message": message}})
            self._done = True
            return
        yield from self._start(chunk)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = _usage(usage)
        for choice in chunk.get("choices") or ():
            if choice["index"] != 0:  # a registry's ``n``: the message is choice 0's
                continue
            delta = choice.get("delta") or {}
            for block in delta.get("thinking_blocks") or ():
                yield from self._thinking_piece(block)
            for key in ("content", "refusal"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    self._refused = self._refused or key == "refusal"
                    yield from self._text(text)
            for call in delta.get("tool_calls") or ():
                yield from self._tool_delta(call)
            if choice.get("finish_reason"):
                self._stop = _stop_reason(choice["finish_reason"], bool(self._tools))
            if self._refused:
                self._stop = "refusal"

    def _text(self, text: str) -> Iterator[bytes]:
        if self._kind != "text":
            yield from self._open({"type": "text", "text": ""}, "text")
        delta_text = {"type": "text_delta", "text": text}
        yield _event("content_block_delta", {"index": self._index, "delta": delta_text})

    def _thinking_piece(self, block: dict[str, Any]) -> Iterator[bytes]:
        """A piece of a thinking block, as LiteLLM streams them (the text, then the
        signature, which ends the block); a redacted block comes whole."""
        if block.get("type") == "redacted_thinking":
            yield from self._open(block, "redacted_thinking")
            yield from self._close_block()
            return
        if self._kind != "thinking":
            yield from self._open({"type": "thinking", "thinking": "", "signature": ""}, "thinking")
        if block.get("thinking"):
            delta = {"type": "thinking_delta", "thinking": block["thinking"]}
            yield _event("content_block_delta", {"index": self._index, "delta": delta})
        if block.get("signature"):
            delta = {"type": "signature_delta", "signature": block["signature"]}
            yield _event("content_block_delta", {"index": self._index, "delta": delta})
            yield from self._close_block()

    def _start(self, chunk: dict[str, Any]) -> Iterator[bytes]:
        if self._started:
            return
        self._started = True
        message: dict[str, Any] = {
            "id": f"msg_{chunk.get('id') or uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        yield _event("message_start", {"message": message})

    def _open(self, block: dict[str, Any], kind: str) -> Iterator[bytes]:
        yield from self._close_block()
        self._index += 1
        self._kind = kind
        yield _event("content_block_start", {"index": self._index, "content_block": block})

    def _close_block(self) -> Iterator[bytes]:
        if self._kind is not None:
            yield _event("content_block_stop", {"index": self._index})
            self._kind = None
            self._call = -1
        held, self._held = self._held, {}
        for position in sorted(held):  # whole now: one block open at a time
            block, pieces = held[position]
            self._index += 1
            yield _event("content_block_start", {"index": self._index, "content_block": block})
            if pieces:
                delta = {"type": "input_json_delta", "partial_json": "".join(pieces)}
                yield _event("content_block_delta", {"index": self._index, "delta": delta})
            yield _event("content_block_stop", {"index": self._index})

    def _tool_delta(self, call: dict[str, Any]) -> Iterator[bytes]:
        """A piece of a tool call. Messages streams one block at a time, so a call that
        begins while the open call's arguments are not yet whole JSON (an upstream
        interleaving parallel calls) is held, and sent whole, after it, when its block
        closes; calls one after another (OpenAI's order) stream as they come. A piece of
        a call whose block is closed (words came between its pieces) is left out."""
        position = call.get("index", 0)
        function = call.get("function") or {}
        if position not in self._tools:
            self._tools.add(position)
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or _made_tool_id(),
                "name": function.get("name") or "",
                "input": {},
            }
            if self._kind == "tool_use" and (self._held or not _whole(self._arguments)):
                self._held[position] = (block, [])
            else:
                yield from self._open(block, "tool_use")
                self._call, self._arguments = position, []
        arguments = function.get("arguments")
        if not isinstance(arguments, str) or not arguments:
            return
        if position == self._call:
            self._arguments.append(arguments)
            delta = {"type": "input_json_delta", "partial_json": arguments}
            yield _event("content_block_delta", {"index": self._index, "delta": delta})
        elif position in self._held:
            self._held[position][1].append(arguments)
        elif not self._dropped:
            self._dropped = True
            log.warning("a tool call's arguments came after its block closed: left out")

    def close(self) -> Iterator[bytes]:
        if self._done:
            return
        yield from self._start({})
        yield from self._close_block()
        self._done = True
        delta = {"stop_reason": self._stop, "stop_sequence": None}
        # the whole usage: the input side is known only now (message_start went out first)
        yield _event("message_delta", {"delta": delta, "usage": dict(self._usage)})
        yield _event("message_stop", {})
