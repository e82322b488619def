"""The heuristic gate: cheap checks that need no model call.

In order, an answer escalates when:

- it is empty (``empty``), or shorter than `min_chars` (``too_short``) or longer than
  `max_chars` (``too_long``), counted on the stripped text;
- it was cut off: finish reason ``length`` (``truncated``);
- it refuses or hedges (``refusal``, ``hedging``): one of `REFUSALS` or `HEDGES`
  (case-insensitive, curly apostrophes folded) within its first `OPENING_CHARS`
  characters, where models put them; further in, "I don't know" is usually part of a
  real answer;
- the request's ``response_format`` asks for ``json_object`` and the text is not one
  JSON object (``json``), or for ``json_schema`` and the object does not match the
  schema (``schema ($.path: what)``). The schema check covers the common subset:
  ``type`` (one or a list), ``properties``, ``required``, ``additionalProperties:
  false``, ``enum``, ``const``, ``items``, ``anyOf``; other keywords are not checked.

Each check can be switched off by the gate's settings (`refusal`, `truncated`,
`json_format`, the length bounds).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from llmroute.gates.base import GateVerdict, TierAnswer
from llmroute.registry.schema import Gate
from llmroute.untrusted_json import loads

__all__ = ["HEDGES", "OPENING_CHARS", "REFUSALS", "HeuristicGate", "schema_problem"]

REFUSALS = (
    "i can't help",
    "i cannot help",
    "i can't assist",
    "i cannot assist",
    "i can't provide",
    "i cannot provide",
    "i'm unable to",
    "i am unable to",
    "i won't be able to",
    "i'm sorry, but",
    "i apologize, but",
    "as an ai",
    "as a language model",
)
HEDGES = (
    "i don't know",
    "i do not know",
    "i'm not sure",
    "i am not sure",
    "i'm not certain",
)
OPENING_CHARS = 200

_REFUSAL_RE = re.compile("|".join(re.escape(p) for p in REFUSALS))
_HEDGE_RE = re.compile("|".join(re.escape(p) for p in HEDGES))
_FENCE_RE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL)
_MAX_SCHEMA_DEPTH = 32


class HeuristicGate:
    name = "heuristic"

    def __init__(self, spec: Gate | None = None) -> None:
        self.spec = spec or Gate()

    async def check(self, request: Mapping[str, Any], answer: TierAnswer) -> GateVerdict:
        reason = self.problem(request, answer)
        return GateVerdict(reason is None, None, reason or "ok", self.name)

    def problem(self, request: Mapping[str, Any], answer: TierAnswer) -> str | None:
        """The first check the answer fails, as a reason code; None when it passes."""
        spec = self.spec
        text = answer.text.strip()
        if not text:
            return "empty" if spec.min_chars > 0 else None
        if len(text) < spec.min_chars:
            return "too_short"
        if spec.max_chars is not None and len(text) > spec.max_chars:
            return "too_long"
        if spec.truncated and answer.finish_reason == "length":
            return "truncated"
        if spec.refusal and not answer.has_tool_calls:
            opening = text[:OPENING_CHARS].lower().replace("\u2019", "'")
            if _REFUSAL_RE.search(opening):
                return "refusal"
            if _HEDGE_RE.search(opening):
                return "hedging"
        if spec.json_format:
            return _format_problem(request.get("response_format"), text)
        return None


def _format_problem(response_format: Any, text: str) -> str | None:
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    fenced = _FENCE_RE.match(text)
    try:
        value = loads(fenced.group(1) if fenced else text)
    except ValueError:
        return "json"
    if not isinstance(value, dict):
        return "json"
    if kind == "json_object":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping):
        return None
    problem = schema_problem(value, schema)
    return None if problem is None else f"schema ({problem})"


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "number": (int, float),
    "integer": (int,),
}


def _is_type(value: Any, name: str) -> bool:
    if name in ("number", "integer") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, (object,)))


def schema_problem(value: Any, schema: Mapping[str, Any], path: str = "$") -> str | None:
    """The first place `value` breaks `schema` (the subset in the module docstring) as
    ``$.path: what``; None when it matches. Values are never quoted."""
    return _check(value, schema, path, 0)


def _check(value: Any, schema: Mapping[str, Any], path: str, depth: int) -> str | None:
    if depth > _MAX_SCHEMA_DEPTH:
        return None
    kinds = schema.get("type")
    names = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else None
    if names is not None and not any(_is_type(value, str(n)) for n in names):
        return f"{path}: expected {'|'.join(str(n) for n in names)}"
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        return f"{path}: not one of the enum values"
    if "const" in schema and value != schema["const"]:
        return f"{path}: not the const value"
    options = schema.get("anyOf")
    subs = [o for o in options if isinstance(o, Mapping)] if isinstance(options, list) else []
    if subs and all(_check(value, o, path, depth + 1) is not None for o in subs):
        return f"{path}: matches none of anyOf"
    if isinstance(value, dict):
        return _check_object(value, schema, path, depth)
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            problem = _check(item, schema["items"], f"{path}[{i}]", depth + 1)
            if problem is not None:
                return problem
    return None


def _check_object(
    value: dict[str, Any], schema: Mapping[str, Any], path: str, depth: int
) -> str | None:
    required = schema.get("required")
    for key in required if isinstance(required, list) else ():
        if key not in value:
            return f"{path}: missing {key!r}"
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    for key, sub in properties.items():
        if key in value and isinstance(sub, Mapping):
            problem = _check(value[key], sub, f"{path}.{key}", depth + 1)
            if problem is not None:
                return problem
    if schema.get("additionalProperties") is False:
        extra = [k for k in value if k not in properties]
        if extra:
            return f"{path}: unexpected property"
    return None
