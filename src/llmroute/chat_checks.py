"""A chat-completions body checked as OpenAI checks it, before routing or any upstream
call: `InvalidRequest` naming the field (``max_tokens``, ``messages[1].role``), which
the gateway answers 400 (``/v1/chat/completions``, a batch's chat line) and the SDK
raises, rather than a 200 that served something else (``"stream": "yes"`` answered
whole, ``"max_tokens": -5`` passed on), an upstream's error for the caller's request,
or a text part the safety layer never read. Only known keys are looked at, a few
isinstance checks each (~1 µs for one message, ~4 µs for twenty on the 2-core dev
machine: docs/benchmarks.md); the rest goes on as sent. Ranges are the upstream's to
say (a temperature of 1.5 suits one provider and not another); types are not. What is
about HTTP and JSON (size, depth, encoding) is the gateway's (`llmroute.server.body`)."""

from __future__ import annotations

from typing import Any

from llmroute.errors import InvalidRequest
from llmroute.field_values import finite_number, positive_int, strings

__all__ = ["check_chat_body", "check_stream_options"]

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_KNOWN_ROLES = frozenset(_ROLES)
_NEEDS_CONTENT = frozenset({"system", "developer", "user"})  # assistant: tool_calls alone
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_COUNTS = ("n", "max_tokens", "max_completion_tokens")


def _bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def check_chat_body(body: dict[str, Any]) -> None:
    """`InvalidRequest` (its ``param`` the field) for a chat body OpenAI would refuse:
    ``messages`` missing or malformed, or a known parameter of the wrong type. ``null``
    stands for a field left out, as OpenAI takes it."""
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise _bad("model", "'model' must be a string")
    _check_messages(body.get("messages"))
    for key in _NUMBERS:
        value = body.get(key)
        if value is not None and not finite_number(value):
            raise _bad(key, f"'{key}' must be a number")
    for key in _COUNTS:
        value = body.get(key)
        if value is not None and not positive_int(value):
            raise _bad(key, f"'{key}' must be a positive integer")
    check_stream_options(body)
    _check_tools(body)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not strings(stop):
        raise _bad("stop", "'stop' must be a string or a list of strings")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("user", "'user' must be a string")
    _check_thinking(body.get("thinking"))


def check_stream_options(body: dict[str, Any]) -> None:
    """``stream`` a boolean and ``stream_options`` an object sent only with
    ``"stream": true``: OpenAI's 400 for both chat and (legacy) completions requests,
    rather than an OpenAI upstream's after routing, or options dropped unseen by a
    conversion that reads them only for a stream."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "'stream' must be true or false")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("stream_options", "'stream_options' must be an object")
    if options is not None and stream is not True:
        raise _bad(
            "stream_options",
            "Invalid value for 'stream_options': 'stream_options' is only allowed when "
            "'stream' is true.",
        )


_TOOL_OPTIONS = ("tool_choice", "parallel_tool_calls")
_EMPTY_TOOLS = (
    "Invalid 'tools': empty array. Expected an array with minimum length 1, "
    "but got an empty array instead."
)


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _bad("tools", "'tools' must be a list")
    if not tools:
        _check_no_tool_options(body)
    if tools == []:  # OpenAI's own 400, rather than an OpenAI upstream's after routing
        raise InvalidRequest(_EMPTY_TOOLS, param="tools", code="empty_array")


def _check_no_tool_options(body: dict[str, Any]) -> None:
    """OpenAI's 400 for a tool option without tools (missing, null or empty): an OpenAI
    upstream would refuse the request after routing, and the Anthropic
    conversion drops the option unseen (a ``required`` that forces nothing)."""
    for key in _TOOL_OPTIONS:
        if body.get(key) is not None:
            raise _bad(
                key,
                f"Invalid value for '{key}': '{key}' is only allowed when 'tools' are specified.",
            )


_THINKING_TYPES = ("adaptive", "enabled", "disabled")


def _check_thinking(thinking: Any) -> None:
    """Anthropic's ``thinking``, which chat clients send too (LiteLLM's spelling): the
    router reads it to say the client's choice in the serving model's dialect, so one
    it cannot read is the client's error, not a guess."""
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in _THINKING_TYPES:
        raise _bad(
            "thinking", "'thinking' must be an object with type adaptive, enabled or disabled"
        )


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "'messages' is required and must be a non-empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            at = f"messages[{index}]"
            raise _bad(at, f"{at} must be an object with a 'role'")
        role = message.get("role")
        if not isinstance(role, str) or role not in _KNOWN_ROLES:
            at = f"messages[{index}].role"
            raise _bad(at, f"{at} must be one of {', '.join(_ROLES)}")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            # the call it answers: without it Anthropic, Bedrock and Gemini refuse the turn
            # (an upstream's 400 after routing), and OpenAI the request
            at = f"messages[{index}].tool_call_id"
            raise _bad(at, f"{at} is required in a tool message (the id of the call it answers)")
        content = message.get("content")
        if isinstance(content, str):  # the common case first: one isinstance a message
            continue
        if isinstance(content, list):
            _check_parts(content, index)
        elif content is None:
            if role in _NEEDS_CONTENT:
                at = f"messages[{index}].content"
                raise _bad(at, f"{at} is required in a {role} message")
        else:
            at = f"messages[{index}].content"
            raise _bad(at, f"{at} must be a string or a list of content parts")


def _check_parts(parts: list[Any], index: int) -> None:
    """A part that is not an object, or a text part whose text is not a string, would
    reach the model unread by safety and routing (they read string texts only); OpenAI
    refuses it, so do the gateway and the SDK."""
    for number, part in enumerate(parts):
        if not isinstance(part, dict):
            at = f"messages[{index}].content[{number}]"
            raise _bad(at, f"{at} must be an object with a 'type'")
        if ("text" in part or part.get("type") == "text") and not isinstance(part.get("text"), str):
            at = f"messages[{index}].content[{number}].text"
            raise _bad(at, f"{at} must be a string")
