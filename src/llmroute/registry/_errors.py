"""Pydantic's validation errors → `ConfigError`s that name file, line and field.

Each pydantic error has a `loc` (a path into the data). The path is walked back to the
YAML node it came from: the value's line, the key's line for unknown keys, or the
nearest parent that exists for missing keys. Messages are rewritten where pydantic's
are vague ("Extra inputs are not permitted" → which keys are allowed). Input values are
never echoed, so a secret pasted into the wrong key cannot leak into logs.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from llmroute.errors import ConfigError
from llmroute.registry._paths import (
    MAX_NAME_CHARS,
    Path,
    PathProblems,
    did_you_mean,
    format_path,
    shown_name,
)
from llmroute.registry._yaml import Document
from llmroute.registry.schema import Registry

__all__ = [
    "ConfigErrors",
    "number_message",
    "problems_from",
    "to_config_errors",
    "yaml_problems",
]

_MAX_MESSAGE = 1_000
_LISTED = 100
_SECRET_KEYS = frozenset({"api_key", "apikey", "key", "token", "secret", "password"})
_TYPE_NAMES = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "nothing (null)",
}


class ConfigErrors(ConfigError):
    """Several configuration errors found in one pass; `str()` gives one per line.

    `file`, `line`, `field` and `message` are those of the first error, so code that
    handles a single `ConfigError` keeps working.
    """

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        self.errors = tuple(errors)
        first = self.errors[0]
        super().__init__(first.message, file=first.file, line=first.line, field=first.field)

    def _render(self) -> str:
        """One line an error, the first `_LISTED` of them: a file with 100,000 bad values
        (aliases, or a generated list) is fixed a few at a time, not read in full."""
        lines = [str(error) for error in self.errors[:_LISTED]]
        more = len(self.errors) - _LISTED
        if more > 0:
            lines.append(f"{self.file}: {more:,} more error{'s' * (more != 1)} not shown")
        return "\n".join(lines)


def problems_from(
    exc: ValidationError, root: type[BaseModel] = Registry
) -> list[tuple[Path, str, bool]]:
    """(path, message, is_unknown_key) for every error of validating `root`, with
    cross-field problems expanded."""
    out: list[tuple[Path, str, bool]] = []
    errors = exc.errors(include_url=False)
    others = {_clean_loc(e["loc"]) for e in errors if not _literal_branch(e)}
    for error in errors:
        loc = _clean_loc(error["loc"])
        found = error.get("ctx", {}).get("error")
        if _spurious(error) or (_literal_branch(error) and _within(loc, others)):
            continue
        if isinstance(found, PathProblems):
            out.extend(((*loc, *sub), message, False) for sub, message in found.problems)
        elif error["type"] == "extra_forbidden":
            out.append((loc, _unknown_key(tuple(error["loc"]), root), True))
        elif error["type"] == "invalid_key":  # the loc ends with the key's position
            out.append((loc[:-1], _key_not_text(error["input"], loc[:-1], root), False))
        else:
            out.append((loc, _message(error, loc), False))
    return out


def to_config_errors(
    problems: Iterable[tuple[Path, str, bool]], document: Document, source: str
) -> list[ConfigError]:
    """Attach a line to each problem; sorted by line, duplicates dropped."""
    errors: dict[tuple[int, str, str], ConfigError] = {}
    for path, message, on_key in problems:
        line = _line(path, document, on_key)
        field = format_path(path)
        # cut: a value echoed whole (a megabyte base_url), a key past YAML's 1,024 (``? key``)
        errors.setdefault(
            (line or 0, field, message),
            ConfigError(_cut(message), file=source, line=line, field=_cut(field) or None),
        )
    return [errors[key] for key in sorted(errors, key=lambda k: k[0])]


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def yaml_problems(document: Document) -> list[tuple[Path, str, bool]]:
    """Problems found while building the data (duplicate keys), reported at the key."""
    return [(path, message, True) for path, message in document.problems]


def _line(path: Path, document: Document, on_key: bool) -> int | None:
    if on_key and path in document.key_lines:
        return document.key_lines[path]
    for end in range(len(path), -1, -1):
        line = document.value_lines.get(path[:end])
        if line is not None:
            return line
    return None


def _clean_loc(loc: Sequence[str | int]) -> Path:
    """Drop pydantic's union tags (``encoder.builtin.name`` → ``encoder.name``,
    ``profiles.p.injection.RouteTo.x`` → ``profiles.p.injection.x``)."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and (
            "[" in part
            or (
                out[-1:] == ["encoder"]
                and part
                in {
                    "builtin",
                    "openai",
                }
            )
            or (part == "RouteTo" and _safety_action(out))
        ):
            continue
        out.append(part)
    return tuple(out)


def _safety_action(path: Sequence[str | int]) -> bool:
    """Whether `path` is a profile's action (``profiles.NAME.injection``) or one PII
    type's (``profiles.NAME.pii.EMAIL``): where the ``{route: MODEL}`` branch is tried."""
    return (len(path) >= 3 and path[-3] == "profiles") or (
        len(path) >= 4 and path[-4] == "profiles" and path[-2] == "pii"
    )


def _literal_branch(error: ErrorDetails) -> bool:
    """A union's literal branch refusing a mapping (``reasoning: {...}`` is not
    ``false``): noise beside the mapping branch's own errors, which say what is wrong."""
    last = error["loc"][-1] if error["loc"] else None
    return (
        error["type"] == "literal_error"
        and isinstance(last, str)
        and last.startswith("literal[")
        and isinstance(error["input"], dict)
    )


def _within(loc: Path, others: set[Path]) -> bool:
    """Whether another error is at `loc` or below it."""
    return any(other[: len(loc)] == loc for other in others)


def _spurious(error: ErrorDetails) -> bool:
    """Pydantic reports a too-short tuple when its items failed; the item errors suffice."""
    if error["type"] != "too_short":
        return False
    given = error["input"]
    return isinstance(given, list | tuple | dict) and len(given) >= error["ctx"]["min_length"]


# Pydantic's words for YAML's shapes ("a valid tuple", "a valid dictionary or instance of
# BatchesSettings") name Python types; a registry's author wrote a list or a mapping.
_PLAIN = {
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "set_type": "must be a list",
    "frozen_set_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
}


def _message(error: ErrorDetails, loc: Path) -> str:
    kind = error["type"]
    given = error["input"]
    if kind == "model_type" and loc == ("default",) and isinstance(given, str):
        name = given if _NAME.fullmatch(given) else shown_name(given)
        return f"must be a mapping: write default: {{target: {name}}}"
    if kind == "too_short" and isinstance(error["input"], list | tuple | dict | str):
        least = error["ctx"]["min_length"]
        return "must not be empty" if least == 1 else f"needs at least {least} entries"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}" if loc else "missing required key"
    if kind in {"union_tag_not_found", "union_tag_invalid"}:
        return "needs 'kind: builtin' (with a name) or 'kind: openai' (an embeddings endpoint)"
    message = _PLAIN.get(kind) or error["msg"].removeprefix("Value error, ")
    if kind.endswith(("_type", "_parsing")):
        message += f" (got {_TYPE_NAMES.get(type(error['input']), 'a value of another type')})"
    return message


def _unknown_key(loc: Path, root: type[BaseModel]) -> str:
    key = str(loc[-1]) if loc else "?"
    allowed = _allowed_keys(loc[:-1], root)
    if key.lower().replace("-", "_") in _SECRET_KEYS and "api_key_env" in allowed:
        return (
            f"{key!r} is not allowed: never put secrets in the registry. Put the key in an "
            "environment variable and name it with api_key_env (e.g. api_key_env: OPENAI_API_KEY)"
        )
    if not allowed:
        return f"unknown key {key!r}"
    listed = f"allowed keys: {', '.join(allowed)}"
    meant = _OTHER_TOOLS_NAMES.get(key.lower())
    if "provider" in allowed and "api_key_env" not in allowed:  # a model or a deployment
        # LiteLLM's model_list puts the key and the server on each model; ours are the
        # provider's, which the model names
        if key.lower().replace("-", "_") in _SECRET_KEYS:
            return (
                f"{key!r} is not allowed: never put secrets in the registry. A model's key is "
                "its provider's: put it in an environment variable and name that with the "
                f"provider's api_key_env (providers.NAME.api_key_env: OPENAI_API_KEY); {listed}"
            )
        if meant == "base_url" or key == "base_url":
            return (
                f"unknown key {key!r}: a model's server is its provider's base_url "
                f"(providers.NAME.base_url), which the model names in provider; {listed}"
            )
    if meant in allowed:
        return f"unknown key {key!r} (did you mean {meant!r}?); {listed}"
    policy = _policy_key(key, meant, loc, root) if "policy" in allowed else None
    if policy is not None:  # a route's fallback, timeout or retries written beside policy
        owner = "the default" if tuple(loc[:-1]) == ("default",) else "a route"
        return (
            f"unknown key {key!r}: {owner}'s {policy} goes under its policy "
            f"(policy: {{{policy}: ...}}); {listed}"
        )
    if "retries" in (key.lower(), meant):  # a provider's or a model's: the dispatcher's
        return (
            f"unknown key {key!r}: retries are set in dispatch.retries.attempts, or a route's "
            f"policy.retries; {listed}"
        )
    return f"unknown key {key!r}{did_you_mean(key, allowed)}; {listed}"


def _policy_key(key: str, meant: str | None, loc: Path, root: type[BaseModel]) -> str | None:
    """The `policy` key that `key` (or LiteLLM's name for it, `meant`) is, when `key` was
    written in a section that has a `policy` (a route's `fallbacks: [large]`)."""
    keys = _allowed_keys((*loc[:-1], "policy"), root)
    for candidate in (key, meant):
        if candidate in keys:
            return candidate
    return None


_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME_CHARS - 1}}}")  # a name, bare

# what LiteLLM and OpenAI's clients call keys of ours ("did you mean" misses them: it
# offered 'max_tokens' for max_retries)
_OTHER_TOOLS_NAMES = {
    "api_base": "base_url",
    "base": "base_url",
    "max_retries": "retries",
    "num_retries": "retries",
    "fallbacks": "fallback",
}


def _key_not_text(key: object, loc: Path, root: type[BaseModel]) -> str:
    """A mapping key YAML did not read as text: ``off:`` is the boolean false in YAML
    1.1 (pydantic says only "Keys should be strings", at the key's position)."""
    if isinstance(key, bool):
        message = (
            f"a key YAML reads as the boolean {str(key).lower()} (an unquoted "
            f"{'on, yes or true' if key else 'off, no or false'}): quote it, or name a key of "
            "the section"
        )
    else:
        message = f"a key YAML reads as {_TYPE_NAMES.get(type(key), 'a value')}: keys are text"
    allowed = _allowed_keys(loc, root)
    hint = " (did you mean 'turn_off'?)" if key is False and "turn_off" in allowed else ""
    return f"{message}{hint}" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")


def number_message(path: Path, digits: int, root: type[BaseModel]) -> str:
    """What to say of a plain number of `digits` digits (past Python's 4,300 for int())
    at `path` of the data `root` validates: out of range where a number goes; quote it
    where text goes (a description, a model id, a header value: the user meant text)."""
    out_of_range = f"out of range: an integer of {digits:,} digits"
    kinds = {_number_or_text(annotation) for annotation in _annotations_at(path, root)}
    if kinds == {"text"}:
        return (
            f"an unquoted number of {digits:,} digits: YAML reads it as an integer, and this "
            "field is text; quote it"
        )
    return out_of_range + (" (quote it if it is text)" if "either" in kinds else "")


def _annotations_at(path: Path, root: type[BaseModel]) -> list[Any]:
    """The types a value at `path` (a data path: no union tags) may take, each union
    branch that has the path followed."""
    current: list[Any] = [root]
    for part in path:
        after: list[Any] = []
        for annotation in current:
            for arg in _unwrap(annotation):
                origin = typing.get_origin(arg)
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    field = arg.model_fields.get(str(part))
                    after += [field.annotation] if field is not None else []
                elif origin in {tuple, list} and isinstance(part, int):
                    after.append(typing.get_args(arg)[0])
                elif origin is dict:
                    after.append(typing.get_args(arg)[1])
                elif arg is Any:
                    after.append(Any)
        current = after
    return current


def _number_or_text(annotation: Any) -> str:
    """``number`` where an int or a float goes, ``text`` where only text does, ``either``
    where any value does (a chat body's), ``other`` (a list, a mapping: neither)."""
    kinds = set()
    for arg in _unwrap(annotation):
        if arg is Any:
            return "either"
        literal = typing.get_args(arg) if typing.get_origin(arg) is typing.Literal else ()
        if arg in (int, float) or any(isinstance(v, int) for v in literal):
            kinds.add("number")
        if arg is str or any(isinstance(v, str) for v in literal):  # a word of a few
            kinds.add("text")
    if len(kinds) == 1:
        return kinds.pop()
    return "either" if kinds else "other"


def _allowed_keys(loc: Path, root: type[BaseModel]) -> list[str]:
    """The field names of the model at `loc` (a pydantic loc, union tags included)."""
    current: Any = root
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    models = _models(current)
    return list(models[0].model_fields) if len(models) == 1 else []


def _step(annotation: Any, part: str | int) -> Any:
    models = _models(annotation)
    if len(models) > 1:  # a tagged union: `part` is the tag, i.e. the model's `kind`
        tagged = [m for m in models if part in typing.get_args(_kind(m))]
        return tagged[0] if tagged else None
    if models:
        field = models[0].model_fields.get(str(part))
        return field.annotation if field is not None else None
    for arg in _unwrap(annotation):
        origin = typing.get_origin(arg)
        if origin in {tuple, list} and isinstance(part, int):
            return typing.get_args(arg)[0]
        if origin is dict:
            return typing.get_args(arg)[1]
    return None


def _kind(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("kind")
    return field.annotation if field is not None else None


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [a for a in _unwrap(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


def _unwrap(annotation: Any) -> list[Any]:
    """Strip ``Annotated`` and split unions."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [x for arg in typing.get_args(annotation) for x in _unwrap(arg)]
    return [annotation]
