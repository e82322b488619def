"""OpenAI Responses API ⇄ chat completions, for the gateway's ``POST /v1/responses``
front, without I/O so each rule is testable alone.

A request carries its conversation in ``input`` (messages, earlier ``function_call``
items and their ``function_call_output``), as clients do with ``store: false``; where the
registry keeps responses (``stored_responses``), the items of the response named by
``previous_response_id`` come before it (`to_chat_body`'s `earlier`), else that field is
refused with a 400 that says so, as ``conversation`` always is. Function tools are
carried, and custom (free-form) tools as functions of one string; hosted tools (web
search, file search, code interpreter ...) are refused naming the field. The answer is
a ``response`` object (`to_response`); streams are translated by
`llmroute.server.responses_stream`. docs/gateway.md lists every mapping.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from typing import Any, TypeGuard
from uuid import uuid4

from llmroute.proxy_fields import routed_metadata
from llmroute.server.chunk_translation import clean_completion
from llmroute.server.errors import GatewayError
from llmroute.server.responses_checks import check_responses_body
from llmroute.server.responses_reasoning import blocks_of, reasoning_item, wants_summary
from llmroute.untrusted_json import loads

__all__ = [
    "INCOMPLETE_REASONS",
    "RESPONSES_PATH",
    "call_item",
    "conversation_items",
    "conversation_of",
    "custom_input",
    "custom_tools",
    "echoed",
    "input_items",
    "output_items",
    "resolved",
    "response_usage",
    "to_chat_body",
    "to_response",
]

RESPONSES_PATH = "/v1/responses"

_STATELESS = (
    "this gateway keeps no responses (its registry has no stored_responses section): "
    "send the whole conversation in 'input' (earlier messages, function_call and "
    "function_call_output items)"
)
_NO_CONVERSATIONS = (
    "this gateway keeps no conversations (its registry has no stored_responses section): "
    "send the whole conversation in 'input'"
)


def _bad(param: str, message: str) -> GatewayError:
    return GatewayError(400, message, param=param)


# ---------------------------------------------------------------- requests


def to_chat_body(
    body: dict[str, Any], earlier: Sequence[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The chat-completions body for a Responses request; 400 (`GatewayError`) naming the
    field for anything malformed or that cannot be carried. `earlier` is the
    conversation ``previous_response_id`` continues (its items, as kept), None where no
    responses are kept. The earlier ``instructions`` are not carried over (OpenAI's
    rule): each request's own come first."""
    chat = own_chat_body(body, kept=earlier is not None)
    return continued(chat, body, body, earlier) if earlier else chat


def own_chat_body(body: dict[str, Any], kept: bool) -> dict[str, Any]:
    """`to_chat_body` without the conversation continued: every field of `body` checked,
    so that a malformed body is answered for its own fault before the store is read for
    the turns it continues (`continued` adds them). Where responses are `kept`, an
    ``item_reference`` in ``input`` is left for `resolved`: the other items are checked,
    and the input is converted by `continued`."""
    tags = check_responses_body(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "'model' is required: auto, a route or a pool model")
    if not kept and body.get("previous_response_id") is not None:
        raise _bad("previous_response_id", f"'previous_response_id' is not supported: {_STATELESS}")
    if not kept and body.get("conversation") is not None:
        raise _bad("conversation", f"'conversation' is not supported: {_NO_CONVERSATIONS}")
    messages: list[dict[str, Any]] = []
    if _instructed(body):
        messages.append({"role": "system", "content": body["instructions"]})
    given = body.get("input")
    if kept and _references(given):
        _check_unreferenced(given)
    else:  # checked first: its errors name the client's field
        messages.extend(_input(given))
    chat: dict[str, Any] = {"model": model, "messages": messages}
    _copy(body, chat)
    tools = _tools(body["tools"]) if body.get("tools") is not None else []
    choice = _tool_choice(body["tool_choice"]) if body.get("tool_choice") is not None else None
    if tools:  # OpenAI's chat API refuses an empty list, and these two without tools
        chat["tools"] = tools
        if choice is not None:
            chat["tool_choice"] = choice
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if tags:  # the request's, as a chat body's are: checked again there, sent to no model
        chat["tags"] = list(tags)
    if (routed := routed_metadata(body.get("metadata"))) is not None:
        chat["metadata"] = routed
    return chat


def continued(
    chat: dict[str, Any],
    given: dict[str, Any],
    body: dict[str, Any],
    earlier: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """`chat` (`own_chat_body`'s for the `given` body) with the `earlier` turns between
    its instructions and its input; `body` is `given` `resolved` against them, whose
    input is converted here where `given`'s held references."""
    messages = chat["messages"]
    at = 1 if _instructed(given) else 0
    current = _input(body.get("input")) if body is not given else messages[at:]
    chat["messages"] = [*messages[:at], *_input(list(earlier)), *current]
    return chat


def _instructed(body: dict[str, Any]) -> bool:
    instructions = body.get("instructions")
    return isinstance(instructions, str) and bool(instructions)


def _references(given: Any) -> TypeGuard[list[Any]]:
    return isinstance(given, list) and any(
        isinstance(item, dict) and item.get("type") == "item_reference" for item in given
    )


def _check_unreferenced(given: list[Any]) -> None:
    """The items of an input that holds references checked, each named at its place."""
    for i, item in enumerate(given):
        if not (isinstance(item, dict) and item.get("type") == "item_reference"):
            _input([item], i)


def _copy(body: dict[str, Any], chat: dict[str, Any]) -> None:
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _bad("max_output_tokens", "'max_output_tokens' must be a positive integer")
        chat["max_tokens"] = limit
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        chat["user"] = user
    cache_key = body.get("prompt_cache_key")
    if isinstance(cache_key, str) and cache_key:
        chat["prompt_cache_key"] = cache_key  # OpenAI's chat API takes it: cache hits, cost
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]  # said in the model's dialect later
    fmt = _format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt


def _format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict):
        spec = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        if isinstance(fmt.get("strict"), bool):
            spec["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": spec}
    raise _bad("text.format", "'text.format' must be text, json_object or json_schema")


def resolved(body: dict[str, Any], earlier: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`body` with each ``item_reference`` in its ``input`` replaced by the item it names
    among `earlier` (the conversation it continues); a 400 naming the item for an id not
    there. A body without references comes back as it is."""
    given = body.get("input")
    if not isinstance(given, list) or not _references(given):
        return body
    known = {item.get("id"): item for item in earlier if isinstance(item.get("id"), str)}
    items = []
    for i, item in enumerate(given):
        if isinstance(item, dict) and item.get("type") == "item_reference":
            found = known.get(item.get("id"))
            if found is None:
                raise _bad(
                    f"input[{i}]",
                    f"input[{i}]: no item {str(item.get('id'))[:80]!r} in the conversation "
                    "it continues",
                )
            item = {k: v for k, v in found.items() if k != "id"}  # a new occurrence
        items.append(item)
    return {**body, "input": items}


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items (a string is one user message), as it is
    kept for the responses that continue it; call after `to_chat_body` checked it."""
    given = body.get("input")
    if isinstance(given, str):
        return [_as_item({"role": "user", "content": given})]
    return (
        [_as_item(item) for item in given if isinstance(item, dict)]
        if isinstance(given, list)
        else []
    )


_MAX_ADDED = 20  # items one request may add to a conversation (OpenAI's bound)
_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}


def conversation_items(given: Any, param: str = "items") -> list[dict[str, Any]]:
    """Items to add to a conversation, checked as ``input`` items are (a 400 naming
    `param` for a bad one), typed, each with an ``id`` and a message with its
    ``status``, as the Conversations API lists them."""
    if not isinstance(given, list) or len(given) > _MAX_ADDED:
        raise _bad(param, f"'{param}' must be a list of at most {_MAX_ADDED} items")
    if not given:
        return []
    try:
        _input(given)
    except GatewayError as exc:
        where = (exc.param or "input").replace("input", param, 1)
        raise _bad(where, exc.message.replace("input[", f"{param}[")) from None
    out = []
    for item in input_items({"input": given}):
        item = dict(item)
        kind = item.get("type", "message")
        item.setdefault("id", f"{_ID_PREFIX.get(kind, 'item')}_{secrets.token_hex(16)}")
        if kind == "message":
            item.setdefault("status", "completed")
        out.append(item)
    return out


_WITH_STATUS = frozenset(
    {"function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output"}
)


def _as_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item as OpenAI lists it: typed, with its ``status``; a message's text as a list
    of parts, an ``output_text`` part with its ``annotations`` (the SDK's typed models
    need both: ``for a in part.annotations`` failed on None)."""
    kind = item.get("type", "message")
    if kind != "message":
        return (
            {**item, "status": "completed"}
            if kind in _WITH_STATUS and "status" not in item
            else item
        )
    content = item.get("content")
    if isinstance(content, str):
        kind = "output_text" if item.get("role") == "assistant" else "input_text"
        content = [{"type": kind, "text": content}]
    if isinstance(content, list):
        content = [
            {**part, "annotations": []}
            if isinstance(part, dict)
            and part.get("type") == "output_text"
            and "annotations" not in part
            else part
            for part in content
        ]
    return {"status": "completed", **item, "type": "message", "content": content}


_OUTPUTS = ("function_call_output", "custom_tool_call_output")


def _input(items: Any, first: int = 0) -> list[dict[str, Any]]:
    """`items` (``input`` from its item `first` on) as chat messages; 400 naming the
    first malformed item."""
    if isinstance(items, str):
        if not items:
            raise _bad("input", "'input' is empty: there is nothing to answer")
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise _bad("input", "'input' is required: a string or a non-empty list of items")
    out: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []  # the images of the tool outputs just before
    thought: list[dict[str, Any]] = []  # thinking blocks for the next assistant message
    for i, item in enumerate(items, first):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(at, f"{at} must be an object")
        kind = item.get("type", "message")
        if kind == "reasoning":
            thought += blocks_of(item)  # none where the item is not ours: dropped
            continue
        if kind in _OUTPUTS:
            message, shown = _function_output(item, at)
            out.append(message)
            if shown:
                label = f"[images returned by tool call {message['tool_call_id']}]"
                images += [{"type": "text", "text": label}, *shown]
            thought = []
            continue
        if images:
            out.append({"role": "user", "content": images})
            images = []
        _item(out, item, kind, at)
        if thought and out[-1]["role"] == "assistant":
            # the turn the reasoning led to: sent back first in it (Anthropic's rule)
            out[-1].setdefault("thinking_blocks", []).extend(thought)
        thought = []
    if images:
        out.append({"role": "user", "content": images})
    return out


def _item(out: list[dict[str, Any]], item: dict[str, Any], kind: Any, at: str) -> None:
    """An input item other than a tool's output, as chat messages added to `out`."""
    if kind == "message":
        out.append(_message(item, at))
    elif kind == "function_call":
        _function_call(out, item, at)
    elif kind == "custom_tool_call":
        _function_call(out, _as_function_call(item, at), at)
    elif kind == "item_reference":
        raise _bad(
            at,
            f"{at}: an item reference needs the conversation it refers to "
            "('previous_response_id' or 'conversation', where responses are kept): "
            "send the item itself",
        )
    else:
        raise _bad(at, f"{at}: item type {kind!r} is not supported here")


_ROLES = ("user", "assistant", "system", "developer")


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise _bad(f"{where}.role", f"{where}.role must be one of {', '.join(_ROLES)}")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"{where}.content", f"{where}.content must be a string or a list of parts")
    parts = [_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
    if all(p["type"] == "text" for p in parts):
        return {"role": role, "content": "\n".join(p["text"] for p in parts)}
    if role != "user":
        raise _bad(f"{where}.content", f"{where}: only a user message may carry images")
    return {"role": role, "content": parts}


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise _bad(where, f"{where}.text must be a string")
        return {"type": "text", "text": text}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise _bad(where, f"{where}: only images given by 'image_url' are supported")
        image: dict[str, Any] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise _bad(where, f"{where}: content part type {kind!r} is not supported here")


def _function_call(out: list[dict[str, Any]], item: dict[str, Any], where: str) -> None:
    """An earlier call joins the assistant message just before it (one turn may call
    several tools), or opens one."""
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise _bad(where, f"{where} needs a string 'call_id' and 'name'")
    arguments = item.get("arguments", "{}")
    if not isinstance(arguments, str):
        raise _bad(where, f"{where}.arguments must be a JSON string")
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _as_function_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A custom tool's earlier call, as the function call it was sent as."""
    text = item.get("input")
    if not isinstance(text, str):
        raise _bad(where, f"{where}.input must be a string")
    return {**item, "arguments": json.dumps({_CUSTOM_INPUT: text}, ensure_ascii=False)}


def _function_output(
    item: dict[str, Any], where: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``tool`` message, and the output's images: a ``tool`` message holds text
    only, so they follow the tool messages in a user message of their own (a
    screenshot a computer-use tool took), as the Messages front carries a
    ``tool_result``'s."""
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str):
        raise _bad(where, f"{where}.call_id must be a string")
    images: list[dict[str, Any]] = []
    if isinstance(output, list):
        parts = [_part(part, f"{where}.output[{j}]") for j, part in enumerate(output)]
        images = [p for p in parts if p["type"] != "text"]
        output = "\n".join(p["text"] for p in parts if p["type"] == "text")
    if not isinstance(output, str):
        raise _bad(where, f"{where}.output must be a string or a list of parts")
    return {"role": "tool", "tool_call_id": call_id, "content": output}, images


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "'tools' must be a list")
    out = []
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in ("function", "custom"):
            raise _bad(at, f"{at}: tool type {kind!r} is not supported (function and custom tools)")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(at, f"{at} needs a string 'name'")
        if kind == "custom":
            out.append({"type": "function", "function": _custom(tool, name)})
            continue
        function: dict[str, Any] = {
            "name": name,
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        for key in ("description", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


_CUSTOM_INPUT = "input"


def _custom(tool: dict[str, Any], name: str) -> dict[str, Any]:
    """A custom (free-form) tool as a function of one string, ``input``: every chat model
    can call that. A grammar cannot be enforced on other models; it is shown to them in
    the description instead."""
    given = tool.get("description")
    description = given if isinstance(given, str) else ""
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        syntax, definition = fmt.get("syntax") or "lark", fmt.get("definition") or ""
        description += f"\n\nThe input must follow this {syntax} grammar:\n{definition}"
    parameters = {
        "type": "object",
        "properties": {_CUSTOM_INPUT: {"type": "string", "description": "the tool's input"}},
        "required": [_CUSTOM_INPUT],
    }
    return {"name": name, "description": description.strip(), "parameters": parameters}


def custom_tools(body: dict[str, Any]) -> frozenset[str]:
    """The names of the request's custom tools: their calls go back as
    ``custom_tool_call`` items."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return frozenset()
    return frozenset(t["name"] for t in tools if isinstance(t, dict) and t.get("type") == "custom")


def custom_input(arguments: str) -> str:
    """A custom tool's input from the function arguments it was called with (the raw
    arguments when the model did not send the one-string object)."""
    try:
        parsed = loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get(_CUSTOM_INPUT), str):
        return str(parsed[_CUSTOM_INPUT])
    return arguments


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        name = choice.get("name")
        if isinstance(name, str) and name:
            return {"type": "function", "function": {"name": name}}
    raise _bad("tool_choice", "'tool_choice' must be auto, none, required or a named tool")


# ---------------------------------------------------------------- answers


def response_usage(usage: Any) -> dict[str, Any]:
    """The Responses usage for a chat completion's."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached, written = details.get("cached_tokens"), details.get("cache_write_tokens")
    done = usage.get("completion_tokens_details")
    reasoning = done.get("reasoning_tokens") if isinstance(done, dict) else None
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": cached if isinstance(cached, int) else 0,
            "cache_write_tokens": written if isinstance(written, int) else 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": reasoning if isinstance(reasoning, int) else 0
        },
        "total_tokens": prompt + completion,
    }


def conversation_of(body: dict[str, Any]) -> dict[str, str] | None:
    """The request's ``conversation`` (an id, or ``{"id": ...}``) as a response names it."""
    given = body.get("conversation")
    if isinstance(given, dict):
        given = given.get("id")
    return {"id": given} if isinstance(given, str) and given else None


def echoed(body: dict[str, Any], stored: bool = False) -> dict[str, Any]:
    """The request's settings a response object repeats; `stored`: whether the gateway
    keeps this response."""
    previous = body.get("previous_response_id")
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": previous if isinstance(previous, str) else None,
        "conversation": conversation_of(body),
        "reasoning": body.get("reasoning"),
        "store": stored,
        "background": stored and body.get("background") is True,
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
        "safety_identifier": body.get("safety_identifier"),
        "prompt_cache_key": body.get("prompt_cache_key"),
    }


INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def call_item(call_id: str, name: str, arguments: str, custom: frozenset[str]) -> dict[str, Any]:
    """The ``output`` item of one tool call: ``custom_tool_call`` for a custom tool."""
    if name in custom:
        return {
            "type": "custom_tool_call",
            "id": f"ctc_{call_id}",
            "call_id": call_id,
            "name": name,
            "input": custom_input(arguments),
            "status": "completed",
        }
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def output_items(
    message: dict[str, Any],
    item_id: str,
    custom: frozenset[str] = frozenset(),
    *,
    summary: bool = False,
) -> list[dict[str, Any]]:
    """The ``output`` items for an assistant message: its thinking (a ``reasoning``
    item, as its `summary` when asked), its text (and an OpenAI model's ``refusal``, as
    a ``refusal`` part), then its tool calls."""
    items: list[dict[str, Any]] = []
    thinking, blocks = message.get("reasoning_content"), message.get("thinking_blocks")
    thinking = thinking if isinstance(thinking, str) else ""
    blocks = blocks if isinstance(blocks, list) else []
    if thinking or blocks:
        items.append(reasoning_item(f"rs_{item_id}", thinking, blocks, summary=summary))
    parts: list[dict[str, Any]] = []
    text, refusal = message.get("content"), message.get("refusal")
    if isinstance(text, str) and text:
        parts.append({"type": "output_text", "text": text, "annotations": []})
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts:
        items.append(
            {
                "type": "message",
                "id": f"msg_{item_id}",
                "status": "completed",
                "role": "assistant",
                "content": parts,
            }
        )
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        name, arguments = function.get("name") or "", function.get("arguments") or ""
        # an upstream may leave the id out: the client needs one to answer the call
        call_id = call.get("id") or f"call_{item_id}_{index}"
        items.append(call_item(call_id, name, arguments, custom))
    return items


def to_response(
    data: dict[str, Any],
    model: str,
    body: dict[str, Any],
    response_id: str | None = None,
    stored: bool = False,
    created_at: int | None = None,
) -> dict[str, Any]:
    """The ``response`` object for a chat completion `data` served by pool model `model`,
    answering Responses request `body`: named `response_id` (``resp_`` and the chat
    completion's id when None); `stored` as `echoed` says; made at `created_at` (Unix
    seconds; now when None), the gateway's time, not the upstream's (a background
    response's must not change between its first read and its last). Responses has no
    ``n``: of several choices (a registry's ``params: {n: 2}``), the response is the
    first's, choice 0, as `ResponsesStream` streams it."""
    data = clean_completion(data)
    choice = (data["choices"] or [{}])[0]
    reason = INCOMPLETE_REASONS.get(choice.get("finish_reason") or "stop")
    chat_id = str(data.get("id") or uuid4().hex)  # an upstream may leave its id out
    response_id = response_id or f"resp_{chat_id}"
    item_id = response_id.removeprefix("resp_")
    message = choice.get("message") or {}
    output = output_items(message, item_id, custom_tools(body), summary=wants_summary(body))
    if reason and output and output[-1]["type"] in ("message", "reasoning"):
        output[-1]["status"] = "incomplete"  # the item the cut fell in, as OpenAI says
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at or int(time.time()),
        "completed_at": None if reason else int(time.time()),
        "status": "incomplete" if reason else "completed",
        "incomplete_details": {"reason": reason} if reason else None,
        "error": None,
        "model": model,
        "output": output,
        "usage": response_usage(data.get("usage")),
        **echoed(body, stored),
    }
