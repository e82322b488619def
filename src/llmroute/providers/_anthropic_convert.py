"""OpenAI chat-completions ⇄ Anthropic Messages, without I/O, so each rule is testable
alone. What Anthropic cannot honour is refused (`UpstreamRejected`, status 400) before
anything is sent; what is only a hint is dropped (docs/providers.md lists both)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from llmroute.errors import BeyondModel, UpstreamRejected
from llmroute.providers.tool_ids import cut_id
from llmroute.untrusted_json import MAX_DEPTH, loads

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "finish_reason",
    "reasoning_text",
    "thinking_block",
    "thinking_blocks",
    "to_chat_completion",
    "to_messages_request",
    "tool_call",
    "usage_of",
    "without_thinking",
    "without_thinking_blocks",
]

# Anthropic requires max_tokens; OpenAI clients rarely send it.
DEFAULT_MAX_TOKENS = 4096

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_JSON_ONLY = "Respond with a single valid JSON object and nothing else: no prose, no code fences."
# Anthropic-native parameters some OpenAI clients send through `extra_body`.
_PASSTHROUGH = ("top_k", "thinking", "output_config", "inference_geo")
# Anthropic's own API alone: Bedrock and Vertex AI refuse fields they do not know (their
# region is where the model runs)
_FIRST_PARTY_ONLY = frozenset({"inference_geo"})

Message = dict[str, Any]
Block = dict[str, Any]


_OPENAI_ONLY_PARTS = ("input_audio", "file")  # parts OpenAI's models read and Anthropic's not


def _reject(provider: str, message: str, param: str | None = None) -> UpstreamRejected:
    return UpstreamRejected(
        provider, message, status=400, code="unsupported_parameter", param=param
    )


def _beyond(provider: str, message: str, param: str) -> BeyondModel:
    """A refusal that another model of the chain may not need to make."""
    return BeyondModel(provider, message, status=400, code="unsupported_parameter", param=param)


def to_messages_request(
    provider: str, model: str, body: dict[str, Any], *, first_party: bool = True
) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat-completions `body` (without ``stream``:
    the caller sets it); without `first_party` (Bedrock, Vertex AI), without what only
    Anthropic's own API takes."""
    _refuse_unsupported(provider, body)
    system, messages = _convert_messages(provider, body.get("messages"))
    for text in _response_format_instructions(provider, body.get("response_format")):
        system.append({"type": "text", "text": text})
    payload: dict[str, Any] = {
        "model": model,
        "max_tokens": _max_tokens(body),
        "messages": messages,
    }
    if system:
        payload["system"] = _system(system)
    _copy_sampling(body, payload)
    _convert_tools(provider, body, payload)
    for key in ("user", "safety_identifier"):  # OpenAI's newer name for the end user
        if isinstance(body.get(key), str) and body[key]:
            payload["metadata"] = {"user_id": body[key]}
            break
    for key in _PASSTHROUGH:
        if body.get(key) is not None and (first_party or key not in _FIRST_PARTY_ONLY):
            payload[key] = body[key]
    if not _thinks(payload):
        _unthought_final_turn(messages)
    return payload


_THOUGHT = ("thinking", "redacted_thinking")


def _thinks(payload: dict[str, Any]) -> bool:
    thinking = payload.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _unthought_final_turn(turns: list[Message]) -> None:
    """Without thinking, Anthropic refuses thinking blocks in the final assistant turn:
    a prefill, or a tool loop's assistant messages (a loop is one turn, back to the last
    user message without tool results; "an `assistant` message in the final position
    cannot contain `thinking`"). They are left out there (earlier turns' blocks
    Anthropic drops itself), and a prefill left with nothing is dropped."""
    if turns[-1]["role"] == "assistant":
        turns[-1]["content"] = _without_thought(turns[-1]["content"])
        if not turns[-1]["content"]:
            turns.pop()
        return
    for turn in reversed(turns):
        if turn["role"] == "assistant":
            turn["content"] = _without_thought(turn["content"]) or turn["content"]
        elif not any(b.get("type") == "tool_result" for b in turn["content"]):
            return


def _without_thought(blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.get("type") not in _THOUGHT]


def without_thinking(payload: dict[str, Any]) -> dict[str, Any] | None:
    """`payload` without ``thinking`` (None when it has none), and so without the
    thinking blocks of its final assistant turn, which Anthropic then refuses (earlier
    turns' it takes, leaving them out itself)."""
    if "thinking" not in payload:
        return None
    turns = [{**turn, "content": list(turn["content"])} for turn in payload["messages"]]
    _unthought_final_turn(turns)
    out = {k: v for k, v in payload.items() if k != "thinking"}
    out["messages"] = turns
    return out


def without_thinking_blocks(payload: dict[str, Any]) -> dict[str, Any] | None:
    """`payload` with every thinking block left out, and manual thinking too when a tool
    loop then lacks the blocks Anthropic requires (adaptive thinking requires none);
    None when it has none
    (or an assistant turn holds nothing else). For a request whose blocks Anthropic
    refused: signed by another model (the router chose another one this turn), or
    altered by the client."""
    turns: list[Message] = []
    removed = False
    for turn in payload["messages"]:
        kept = [b for b in turn["content"] if b.get("type") not in _THOUGHT]
        if len(kept) < len(turn["content"]):
            if not kept:
                return None
            removed = True
            turn = {**turn, "content": kept}
        turns.append(turn)
    if not removed:
        return None
    out = {**payload, "messages": turns}
    if _thinks(out) and out["thinking"]["type"] != "adaptive" and _in_tool_loop(turns):
        del out["thinking"]
    return out


def _in_tool_loop(turns: list[Message]) -> bool:
    last = turns[-1]
    return last["role"] == "user" and any(b.get("type") == "tool_result" for b in last["content"])


def _refuse_unsupported(provider: str, body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise _beyond(provider, f"'n' = {n} is not supported: Anthropic returns one choice", "n")
    if body.get("logprobs") is True:
        raise _beyond(provider, "'logprobs' is not supported by Anthropic models", "logprobs")
    if body.get("audio") is not None:
        raise _beyond(provider, "'audio' output is not supported by Anthropic models", "audio")
    if body.get("web_search_options") is not None:
        raise _beyond(
            provider,
            "'web_search_options' is not supported by Anthropic models",
            "web_search_options",
        )
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise _beyond(
                provider,
                f"'{legacy}' (OpenAI's deprecated function calling) is not supported by "
                "Anthropic models: send 'tools' and 'tool_choice'",
                legacy,
            )


def _max_tokens(body: dict[str, Any]) -> Any:
    for key in ("max_completion_tokens", "max_tokens"):
        if body.get(key) is not None:
            return body[key]
    return DEFAULT_MAX_TOKENS


def _copy_sampling(body: dict[str, Any], payload: dict[str, Any]) -> None:
    """Sampling: `temperature` clamped to Anthropic's range; `top_p` only without a
    temperature (Claude Sonnet 4.5 and later refuse both, which OpenAI clients often
    send) and below 1 (1 cuts nothing); stop sequences but those of whitespace alone."""
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        payload["temperature"] = min(float(temperature), 1.0)  # OpenAI's range is 0–2
    top_p = body.get("top_p")
    cuts = not isinstance(top_p, int | float) or isinstance(top_p, bool) or top_p < 1
    if top_p is not None and "temperature" not in payload and cuts:
        payload["top_p"] = top_p
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    # Anthropic refuses one that is only whitespace, which OpenAI takes ("\n": one line)
    sendable = [s for s in stops if not isinstance(s, str) or s.strip()]
    if sendable:
        payload["stop_sequences"] = sendable


def _response_format_instructions(provider: str, fmt: Any) -> list[str]:
    """JSON modes become a system instruction: the Messages API has no JSON mode, and
    forcing a tool call instead would clash with the request's own tools."""
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return []
    if fmt["type"] == "json_object":
        return [_JSON_ONLY]
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            return [_JSON_ONLY]
        return [f"{_JSON_ONLY} It must match this JSON Schema:\n{json.dumps(schema)}"]
    raise _reject(
        provider, f"'response_format' type {fmt['type']!r} is not supported", "response_format"
    )


# -- messages ----------------------------------------------------------------------------


def _system(blocks: list[Block]) -> Any:
    """One string, or the text blocks themselves when one carries a cache marker."""
    if any("cache_control" in block for block in blocks):
        return blocks
    return "\n\n".join(block["text"] for block in blocks)


def _convert_messages(provider: str, messages: Any) -> tuple[list[Block], list[Message]]:
    """System text blocks, and the user/assistant turns with same-role neighbours merged
    (Anthropic needs the roles to alternate). A ``cache_control`` marker on a content part,
    a tool or a whole message (on its last block) is carried over."""
    if not isinstance(messages, list) or not messages:
        raise _reject(provider, "'messages' must be a non-empty list", "messages")
    system: list[Block] = []
    turns: list[Message] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _reject(provider, f"messages[{index}] is not an object", f"messages[{index}]")
        role = message.get("role")
        if role in ("system", "developer"):
            where = f"messages[{index}]"
            texts = _text_blocks(provider, message.get("content"), where)
            _mark_last(texts, message)
            system.extend(texts)
            continue
        blocks = _blocks_of(provider, role, message, index)
        if not blocks:
            continue
        _mark_last(blocks, message)
        anthropic_role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": anthropic_role, "content": blocks})
    if turns and turns[-1]["role"] == "assistant":
        _trim_prefill(turns)
    if not turns and any(block.get("text", "").strip() for block in system):
        # instructions alone, which OpenAI serves: say them as the turn
        return [], [{"role": "user", "content": system}]
    if not turns:
        raise _reject(
            provider, "'messages' holds no text, image or tool content to send", "messages"
        )
    return system, turns


def _trim_prefill(turns: list[Message]) -> None:
    """A conversation that ends with the assistant's turn is Anthropic's prefill (the
    answer continues it), whose last text Anthropic refuses to end in whitespace: the
    whitespace is cut, and a turn left with nothing is dropped."""
    blocks = turns[-1]["content"]
    while blocks and blocks[-1].get("type") == "text":  # merged turns: several texts
        text = blocks[-1]["text"].rstrip()
        if text:
            blocks[-1] = {**blocks[-1], "text": text}
            return
        blocks.pop()
    if not blocks:
        turns.pop()


def _blocks_of(provider: str, role: Any, message: dict[str, Any], index: int) -> list[Block]:
    where = f"messages[{index}]"
    if role == "user":
        return _content_blocks(provider, message.get("content"), where)
    if role == "assistant":
        blocks = thinking_blocks(message.get("thinking_blocks"))
        # Anthropic refuses a message whose text is whitespace alone, which models write
        # ("\n\n" before a tool call) and OpenAI takes back
        said = _content_blocks(provider, message.get("content"), where)
        blocks.extend(b for b in said if b["type"] != "text" or b["text"].strip())
        calls = message.get("tool_calls") or []
        if not isinstance(calls, list):
            raise _reject(provider, f"{where}: 'tool_calls' must be a list", f"{where}.tool_calls")
        blocks.extend(_tool_use(provider, call, where) for call in calls)
        return blocks
    if role == "tool":
        parts = _text_blocks(provider, message.get("content"), where)
        result: Block = {
            "type": "tool_result",
            "tool_use_id": _tool_id(message.get("tool_call_id", "")),
            "content": "\n".join(part["text"] for part in parts),
        }
        markers = [part["cache_control"] for part in parts if "cache_control" in part]
        if markers:
            result["cache_control"] = markers[-1]
        return [result]
    raise _reject(
        provider, f"{where}: role {role!r} is not supported by Anthropic models", f"{where}.role"
    )


def thinking_blocks(blocks: Any) -> list[Block]:
    """An assistant message's ``thinking_blocks`` (LiteLLM's field) as the Messages API
    takes them back (`thinking_block`); anything else in the list is left out."""
    out: list[Block] = []
    for block in blocks if isinstance(blocks, list) else ():
        sendable = thinking_block(block)
        if sendable is not None:
            out.append(sendable)
    return out


def thinking_block(block: Any) -> Block | None:
    """`block` as it goes back to Anthropic, byte for byte (it checks the signature
    against the text): a ``thinking`` block with its text and ``signature``, a
    ``redacted_thinking`` block with its ``data``; None for anything else, a thinking
    block without a signature included (it cannot be checked, and Anthropic refuses it)."""
    if not isinstance(block, dict):
        return None
    kind = block.get("type")
    if kind == "redacted_thinking" and isinstance(block.get("data"), str):
        return {"type": kind, "data": block["data"]}
    thinking, signature = block.get("thinking"), block.get("signature")
    if kind == "thinking" and isinstance(thinking, str) and isinstance(signature, str):
        return {"type": kind, "thinking": thinking, "signature": signature} if signature else None
    return None


def _text_blocks(provider: str, content: Any, where: str) -> list[Block]:
    """The text blocks of a message whose parts may only be text (system, tool results)."""
    parts = _content_blocks(provider, content, where)
    if any(part["type"] != "text" for part in parts):
        raise _reject(provider, f"{where}: only text content is supported here", f"{where}.content")
    return parts


def _marker(part: Any) -> dict[str, Any]:
    marker = part.get("cache_control") if isinstance(part, dict) else None
    return {"cache_control": marker} if isinstance(marker, dict) else {}


def _mark_last(blocks: list[Block], message: dict[str, Any]) -> None:
    """A message-level ``cache_control`` (as some OpenAI-format clients send it) goes on
    the message's last block, where Anthropic's cache breakpoint means the same."""
    marker = _marker(message)
    if marker and blocks:
        blocks[-1] = blocks[-1] | marker


def _content_blocks(provider: str, content: Any, where: str) -> list[Block]:
    """Text and image blocks; empty texts are left out (Anthropic refuses them)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _reject(
            provider, f"{where}: 'content' must be a string or a list of parts", f"{where}.content"
        )
    blocks: list[Block] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if isinstance(text, str) and text:
                blocks.append({"type": "text", "text": text, **_marker(part)})
        elif kind == "image_url":
            blocks.append(_image(provider, part.get("image_url"), where) | _marker(part))
        else:
            refuse = _beyond if kind in _OPENAI_ONLY_PARTS else _reject
            raise refuse(
                provider,
                f"{where}: content part {kind!r} is not supported by Anthropic",
                f"{where}.content",
            )
    return blocks


def _image(provider: str, image: Any, where: str) -> Block:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise _reject(provider, f"{where}: 'image_url' has no url", f"{where}.content")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    header, comma, data = url.partition(",")
    if url.startswith("data:") and comma and header.endswith(";base64"):
        media_type = header[len("data:") : -len(";base64")]
        media_type = "image/jpeg" if media_type == "image/jpg" else media_type  # a common slip
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    raise _reject(
        provider,
        f"{where}: an image must be an http(s) URL or a base64 data URL",
        f"{where}.content",
    )


def _tool_use(provider: str, call: Any, where: str) -> Block:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _reject(provider, f"{where}: a tool call has no function name", f"{where}.tool_calls")
    raw = function.get("arguments") or "{}"
    try:
        arguments = loads(raw, max_depth=MAX_DEPTH) if isinstance(raw, str) else raw
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise _reject(
            provider,
            f"{where}: the arguments of tool call {function['name']!r} are not a JSON object",
            f"{where}.tool_calls",
        )
    return {
        "type": "tool_use",
        "id": _tool_id(call.get("id", "")),
        "name": function["name"],
        "input": arguments,
    }


_TOOL_ID = re.compile(r"[A-Za-z0-9_-]+")
_NOT_IN_TOOL_ID = re.compile(r"[^A-Za-z0-9_-]")
# The longest tool id sent: Anthropic's own are ~30 characters (toolu_01A09q90qw90lq...),
# and a longer one has been refused (Bedrock's toolUseId documents 64); ids other
# providers and clients write can be longer (a UUID with a namespace, a call path).
TOOL_ID_MAX = 64


def _tool_id(value: Any) -> Any:
    """A tool call's id as Anthropic takes it (letters, digits, ``_`` and ``-``, at most
    `TOOL_ID_MAX`). Another provider's, from a conversation the router moved (Kimi's
    and Fireworks' ``functions.search:0``), has its other characters written ``_`` and
    a hash of the whole id added, so two ids stay two; one too long keeps its start and
    a longer hash of the whole, within the cap (ids differing only past the cut stay
    two). A function of the id alone: the call and its result get the same, in every
    turn of the conversation."""
    if not isinstance(value, str) or not value:
        return value
    if _TOOL_ID.fullmatch(value) and len(value) <= TOOL_ID_MAX:
        return value
    written = _NOT_IN_TOOL_ID.sub("_", value)
    if len(written) + 9 <= TOOL_ID_MAX:
        return f"{written}_{hashlib.sha256(value.encode()).hexdigest()[:8]}"
    return cut_id(written, TOOL_ID_MAX, value)


# -- tools -------------------------------------------------------------------------------


def _convert_tools(provider: str, body: dict[str, Any], payload: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not tools:
        return  # a tool_choice without tools means nothing
    if not isinstance(tools, list):
        raise _reject(provider, "'tools' must be a list of tools", "tools")
    payload["tools"] = [_tool(provider, tool) for tool in tools]
    choice = _tool_choice(provider, body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and choice.get("type") != "none":
        choice["disable_parallel_tool_use"] = True
    if body.get("tool_choice") is not None or len(choice) > 1:
        payload["tool_choice"] = choice


def _tool(provider: str, tool: Any) -> Block:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function":
        raise _reject(provider, "'tools': only tools of type 'function' are supported", "tools")
    converted: Block = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        converted["description"] = function["description"]
    return converted | _marker(tool)


def _tool_choice(provider: str, choice: Any) -> dict[str, Any]:
    named = {"auto": "auto", "required": "any", "none": "none", None: "auto"}
    if choice is None or isinstance(choice, str):
        if choice not in named:
            raise _reject(provider, f"'tool_choice' {choice!r} is not supported", "tool_choice")
        return {"type": named[choice]}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"type": "tool", "name": function["name"]}
    raise _reject(
        provider,
        "'tool_choice' must be a string or {type: function, function: {name}}",
        "tool_choice",
    )


# -- responses ---------------------------------------------------------------------------


def finish_reason(stop_reason: Any) -> str | None:
    """OpenAI's finish_reason for Anthropic's stop_reason (unknown ones read as stop)."""
    if stop_reason is None:
        return None
    return _FINISH.get(str(stop_reason), "stop")


def usage_of(usage: Any) -> dict[str, Any]:
    """OpenAI usage; cached and cache-written input tokens count as prompt tokens, the
    cached ones also as ``prompt_tokens_details.cached_tokens`` (as OpenAI reports its own
    prompt cache), the written ones as its ``cache_write_tokens``."""
    usage = usage if isinstance(usage, dict) else {}

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) else 0

    prompt = (
        count("input_tokens")
        + count("cache_creation_input_tokens")
        + count("cache_read_input_tokens")
    )
    completion = count("output_tokens")
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if count("cache_read_input_tokens") or count("cache_creation_input_tokens"):
        out["prompt_tokens_details"] = {
            "cached_tokens": count("cache_read_input_tokens"),
            "cache_write_tokens": count("cache_creation_input_tokens"),
        }
    return out


def to_chat_completion(data: dict[str, Any]) -> dict[str, Any]:
    """The ``chat.completion`` for a Messages API response. Thinking goes where LiteLLM
    and OpenRouter-style clients read it: ``reasoning_content`` (the text, joined) and
    ``thinking_blocks`` (the blocks as they came, signatures included, for the client
    to send back on its next turn). Thinking between tool calls (interleaved) loses its
    place: the blocks keep their order among themselves, and go back first."""
    texts: list[str] = []
    thoughts: list[Block] = []
    tool_calls: list[dict[str, Any]] = []
    content = data.get("content")
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            tool_calls.append(tool_call(block, json.dumps(block.get("input") or {})))
        elif block.get("type") in ("thinking", "redacted_thinking"):
            thoughts.append(block)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if thoughts:
        message["reasoning_content"] = reasoning_text(thoughts)
        message["thinking_blocks"] = thoughts
    return {
        "id": f"chatcmpl-{data.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(data.get("stop_reason")) or "stop",
            }
        ],
        "usage": usage_of(data.get("usage")),
    }


def reasoning_text(blocks: list[Block]) -> str:
    """The thinking text of `blocks` (redacted ones hold none that can be read)."""
    return "".join(str(b.get("thinking") or "") for b in blocks if b.get("type") == "thinking")


def tool_call(block: dict[str, Any], arguments: str) -> dict[str, Any]:
    """An OpenAI tool call for a ``tool_use`` block."""
    return {
        "id": block.get("id", ""),
        "type": "function",
        "function": {"name": block.get("name", ""), "arguments": arguments},
    }
