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
from llmroute.field_values import finite_number, integer, positive_int, strings
from llmroute.proxy_fields import check_proxy_fields

__all__ = ["MAX_LOGIT_BIAS", "MAX_TOOLS", "check_chat_body", "check_sizes", "check_stream_options"]

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_KNOWN_ROLES = frozenset(_ROLES)
_NEEDS_CONTENT = frozenset({"system", "developer", "user"})  # assistant: tool_calls alone
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_COUNTS = ("n", "max_tokens", "max_completion_tokens")

# OpenAI's codes for a body it refuses, which clients and proxies may branch on (its
# messages differ from these; what an app reads is the code and the param)
INVALID_TYPE = "invalid_type"
INVALID_VALUE = "invalid_value"
MISSING = "missing_required_parameter"
BELOW_MIN = "integer_below_min_value"
TOO_MANY_ITEMS = "array_above_max_length"
TOO_MANY_KEYS = "object_above_max_properties"

# OpenAI's own bounds on the two lists the gateway walks item by item (converted,
# estimated, written again for the upstream): past them an OpenAI model refuses the
# request after routing, another takes it or drops it by the model routing chose, and a
# 4 MB body of 300,000 `logit_bias` entries held the worker's event loop ~0.5 s (every
# other request waiting). `stop` (OpenAI: 4; Gemini 5, Anthropic more) is not bounded:
# other upstreams read more, and its strings cost no walk beyond their parse.
MAX_LOGIT_BIAS = 1024  # "too many properties. Expected an object with at most 1024"
MAX_TOOLS = 128  # "array too long. Expected an array with maximum length 128"


def _bad(param: str, message: str, code: str | None = INVALID_TYPE) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _kind_of(value: Any) -> str:
    """OpenAI's code for a field of the wrong type, or for one left out (``null``)."""
    return MISSING if value is None else INVALID_TYPE


def check_chat_body(body: dict[str, Any]) -> tuple[str, ...]:
    """The request's tags the body names (`check_proxy_fields`, read once); `InvalidRequest`
    (its ``param`` the field) for a chat body OpenAI would refuse: ``messages`` missing or
    malformed, or a known parameter of the wrong type. ``null`` stands for a field left
    out, as OpenAI takes it."""
    check_sizes(body)
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
            code = BELOW_MIN if integer(value) and value < 1 else INVALID_TYPE
            raise _bad(key, f"'{key}' must be a positive integer", code)
    check_stream_options(body)
    _check_tools(body)
    _check_typed(body)
    _check_response_format(body.get("response_format"))
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not strings(stop):
        raise _bad("stop", "'stop' must be a string or a list of strings")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("user", "'user' must be a string")
    _check_thinking(body.get("thinking"))
    return check_proxy_fields(body)


def check_sizes(body: dict[str, Any]) -> None:
    """OpenAI's 400 for more than `MAX_LOGIT_BIAS` ``logit_bias`` entries or
    `MAX_TOOLS` ``tools``, in its words and codes, checked first: before anything in the
    body is walked item by item."""
    bias = body.get("logit_bias")
    if isinstance(bias, dict) and len(bias) > MAX_LOGIT_BIAS:
        raise _bad(
            "logit_bias",
            "Invalid 'logit_bias': too many properties. Expected an object with at most "
            f"{MAX_LOGIT_BIAS} properties, but got an object with {len(bias)} properties instead.",
            TOO_MANY_KEYS,
        )
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) > MAX_TOOLS:
        raise _bad(
            "tools",
            "Invalid 'tools': array too long. Expected an array with maximum length "
            f"{MAX_TOOLS}, but got an array with length {len(tools)} instead.",
            TOO_MANY_ITEMS,
        )


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
            None,
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
    elif (choice := body.get("tool_choice")) is not None and not isinstance(choice, str | dict):
        raise _bad("tool_choice", "'tool_choice' must be a string or an object")
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
                None,
            )


_THINKING_TYPES = ("adaptive", "enabled", "disabled")


_MIN_BUDGET = 1024  # Anthropic's least budget_tokens


def _check_thinking(thinking: Any) -> None:
    """Anthropic's ``thinking``, which chat clients send too (LiteLLM's spelling): the
    router reads it to say the client's choice in the serving model's dialect, so one
    it cannot read is the client's error, not a guess. A budget given is checked as
    Anthropic (and ``POST /v1/messages``) checks it, whatever model the request is routed
    to: a Claude model is sent it as it came, and would refuse it (a 400 that depended on
    the route). Its ``max_tokens`` is not: dispatch raises it above the budget."""
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in _THINKING_TYPES:
        raise _bad(
            "thinking", "'thinking' must be an object with type adaptive, enabled or disabled", None
        )
    budget = thinking.get("budget_tokens")
    # left out, it is the bare switch DeepSeek's, GLM's and Doubao's APIs take
    if kind == "enabled" and budget is not None and (not integer(budget) or budget < _MIN_BUDGET):
        raise _bad(
            "thinking.budget_tokens",
            f"'thinking.budget_tokens' must be an integer of at least {_MIN_BUDGET}",
        )


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        code = "empty_array" if messages == [] else _kind_of(messages)
        raise _bad("messages", "'messages' is required and must be a non-empty list", code)
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            at = f"messages[{index}]"
            raise _bad(at, f"{at} must be an object with a 'role'")
        role = message.get("role")
        if not isinstance(role, str) or role not in _KNOWN_ROLES:
            at = f"messages[{index}].role"
            code = INVALID_VALUE if isinstance(role, str) else _kind_of(role)
            raise _bad(at, f"{at} must be one of {', '.join(_ROLES)}", code)
        if role == "tool" and not isinstance(call := message.get("tool_call_id"), str):
            # the call it answers: without it Anthropic, Bedrock and Gemini refuse the turn
            # (an upstream's 400 after routing), and OpenAI the request
            at = f"messages[{index}].tool_call_id"
            raise _bad(
                at,
                f"{at} is required in a tool message (the id of the call it answers)",
                _kind_of(call),
            )
        content = message.get("content")
        if isinstance(content, str):  # the common case first: one isinstance a message
            continue
        if isinstance(content, list):
            _check_parts(content, index)
        elif content is None:
            if role in _NEEDS_CONTENT:
                at = f"messages[{index}].content"
                raise _bad(at, f"{at} is required in a {role} message", MISSING)
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
        text = part.get("text")
        if ("text" in part or part.get("type") == "text") and not isinstance(text, str):
            at = f"messages[{index}].content[{number}].text"
            raise _bad(at, f"{at} must be a string", _kind_of(text))


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


# Fields OpenAI types strictly that the gateway passes on unread: an OpenAI upstream
# refuses a wrong one after routing (or a fallback is tried), while an Anthropic model's
# conversion drops it unseen, so the same mistake failed or passed by the model routing
# chose.
_TYPED: tuple[tuple[str, Any, str], ...] = (
    ("seed", integer, "an integer"),
    ("logprobs", _is_bool, "true or false"),
    ("top_logprobs", integer, "an integer"),
    ("store", _is_bool, "true or false"),
    ("parallel_tool_calls", _is_bool, "true or false"),
    ("logit_bias", _is_object, "an object"),
    ("service_tier", _is_string, "a string"),
)


def _check_typed(body: dict[str, Any]) -> None:
    for key, test, words in _TYPED:
        value = body.get(key)
        if value is not None and not test(value):
            raise _bad(key, f"'{key}' must be {words}")


def _check_response_format(spec: Any) -> None:
    """``response_format`` an object with a ``type`` string, and a ``json_schema`` one
    with its ``json_schema`` object, as OpenAI takes it. An Anthropic model is told the
    format in its system prompt, and one the conversion could not read (``"json"``, a
    ``json_schema`` without its schema) was dropped or weakened there where an OpenAI
    model refused it. Other types go on as sent (vLLM's ``structural_tag``; an Anthropic
    model refuses what it cannot say)."""
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise _bad("response_format", "'response_format' must be an object")
    kind = spec.get("type")
    if not isinstance(kind, str):
        raise _bad(
            "response_format.type",
            "'response_format.type' must be a string (text, json_object or json_schema)",
            _kind_of(kind),
        )
    if kind == "json_schema" and not isinstance(schema := spec.get("json_schema"), dict):
        raise _bad(
            "response_format.json_schema",
            "'response_format.json_schema' must be an object (name, schema, strict)",
            _kind_of(schema),
        )
