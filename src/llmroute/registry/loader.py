"""Loading a registry file into a validated `Registry`, and writing one back as YAML.

Every load gets a version id: a hash of the validated model, not of the file bytes, so
comments, whitespace and key order do not change it, and any change that could change a
routing decision does. Decisions log the version, which ties them to the registry that
made them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmroute.errors import ConfigError
from llmroute.jsonl import not_utf8_mark
from llmroute.registry._errors import (
    ConfigErrors,
    number_message,
    problems_from,
    to_config_errors,
    yaml_problems,
)
from llmroute.registry._paths import Path as KeyPath
from llmroute.registry._paths import format_path
from llmroute.registry._yaml import Document, Tagged, TooDeep, TooLarge, compose
from llmroute.registry.schema import BuiltinEncoderSpec, Registry

__all__ = ["LoadedRegistry", "dump_registry", "load_registry", "parse_registry", "version_of"]


_SEGMENTS = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class LoadedRegistry:
    """A validated registry with where it came from and its version id.

    `base_dir` is the directory relative paths in the registry are resolved against;
    `lines` the line of each value by its path, for errors found after validation (an
    artifact a path names that cannot be loaded).
    """

    registry: Registry
    source: str
    version: str
    base_dir: Path
    lines: Mapping[KeyPath, int] = field(default_factory=dict, compare=False, repr=False)

    def at(self, exc: ConfigError) -> ConfigError:
        """`exc`, found building what the registry describes, naming this file and the
        line of its field (or of the nearest enclosing value the file writes)."""
        if exc.file is not None:
            return exc
        line = None
        if exc.field:
            # ``models.m.model``, ``auth.keys[0].key_env``: an index is a list's item
            path: tuple[str | int, ...] = tuple(
                int(index) if index else name for name, index in _SEGMENTS.findall(exc.field)
            )
            while path and line is None:
                line, path = self.lines.get(path), path[:-1]
        return ConfigError(_middle_cut(exc.message), file=self.source, line=line, field=exc.field)


_MAX_MESSAGE = 1_000


def _middle_cut(message: str) -> str:
    """`message` cut in its middle to `_MAX_MESSAGE` characters, as a load error's are cut:
    an artifact's path (a megabyte ``reasoning.scorer``) is echoed before the reason."""
    if len(message) <= _MAX_MESSAGE:
        return message
    head = _MAX_MESSAGE // 2
    return message[:head] + "…" + message[-(_MAX_MESSAGE - head - 1) :]


def load_registry(path: str | os.PathLike[str]) -> LoadedRegistry:
    """Read and validate a registry file; any problem raises `ConfigError` naming it."""
    source = os.fspath(path)
    text = read_text(source, "the registry")
    return parse_registry(text, source=source, base_dir=Path(source).resolve().parent)


def read_text(source: str, what: str) -> str:
    """A UTF-8 file's text; `ConfigError` naming it (and the line of a bad byte, or
    the UTF-16 or UTF-32 it is written in)."""
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigError(f"cannot read {what}: {reason}", file=source) from exc
    problem = not_utf8_mark(raw)
    if problem is not None:
        raise ConfigError(problem, file=source, line=1)  # the byte-order mark's
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError("the file is not valid UTF-8", file=source, line=line) from exc


def parse_registry(
    text: str, *, source: str = "<string>", base_dir: Path | None = None
) -> LoadedRegistry:
    """Validate registry YAML given as text; `source` names it in errors.

    Raises `ConfigErrors` (a `ConfigError`) listing every problem found in one pass.
    """
    document = _document(text, source)
    _not_cases(document, source)
    _matched_as_written(document)
    problems = yaml_problems(document)
    registry: Registry | None = None
    try:
        registry = Registry.model_validate(document.data)
    except ValidationError as exc:
        problems.extend(problems_from(exc))
    if problems or registry is None:
        raise ConfigErrors(to_config_errors(problems, document, source))
    return LoadedRegistry(
        registry=registry,
        source=source,
        version=version_of(registry),
        base_dir=base_dir if base_dir is not None else Path.cwd(),
        lines=document.value_lines,
    )


def _not_cases(document: Document, source: str) -> None:
    """A routing-cases file given where a registry goes (`registry check cases.yaml`)
    is said as such, not as five missing or unknown keys."""
    data = document.data
    if isinstance(data, dict) and "cases" in data and not {"models", "routes"} & data.keys():
        raise ConfigErrors(
            [
                ConfigError(
                    "this is a file of routing cases, not a registry: run it with "
                    f"`llmroute registry test {source} -r REGISTRY`",
                    file=source,
                    line=document.key_lines.get(("cases",)),
                    field="cases",
                )
            ]
        )


def version_of(registry: Registry) -> str:
    """First 12 hex digits of the SHA-256 of the model's canonical JSON. Values equal to
    their defaults are left out, so a key a newer llmroute adds (unset in the file) does
    not change the version of a registry that does not use it."""
    canonical = json.dumps(
        _as_read(registry).model_dump(mode="json", exclude_defaults=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def _as_read(registry: Registry) -> Registry:
    """`registry` with `encoder.scripts` as the intent layer reads it, for the hash: a
    set (a list's order means nothing), and unset where it names what the encoder reads
    when it is unset (``latin`` for a built-in, ``any`` for an endpoint). Its default is
    None, not those, so ``scripts: latin`` written out changed the version."""
    encoder = registry.encoder
    if encoder.scripts is None:
        return registry
    from llmroute.encoders.scripts import ANY, BUILTIN_SCRIPTS, SCRIPTS  # numpy: only now

    unset = BUILTIN_SCRIPTS if isinstance(encoder, BuiltinEncoderSpec) else ANY
    reads = ANY if encoder.scripts == ANY else tuple(s for s in SCRIPTS if s in encoder.scripts)
    scripts = None if reads == unset else reads
    return registry.model_copy(update={"encoder": encoder.model_copy(update={"scripts": scripts})})


def _matched_as_written(document: Document) -> None:
    """Rules' header and metadata values as the file writes them: they are matched as
    text, and YAML 1.1 reads an unquoted ``0123`` as 83, ``1.10`` as 1.1 and ``on`` as
    true, so a rule would silently never match what a client sends."""
    rules = document.data.get("rules")
    keep_as_written(
        document,
        [
            ("rules", i, "when", section)
            for i in range(len(rules) if isinstance(rules, list) else 0)
            for section in ("header", "metadata")
        ],
    )


def keep_as_written(document: Document, mappings: Sequence[KeyPath]) -> None:
    """The values of the mappings at `mappings` (paths in `document.data`) that YAML
    read as something other than text, put back as the text the file wrote."""
    for path in mappings:
        values: Any = document.data
        for step in path:
            if isinstance(values, dict):
                values = values.get(step)
            elif isinstance(values, list) and isinstance(step, int) and step < len(values):
                values = values[step]
            else:
                values = None
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            text = document.written.get((*path, key))
            if text is not None and not isinstance(value, str):
                values[key] = text


def _document(text: str, source: str) -> Document:
    return parse_document(
        text,
        source,
        empty="the registry is empty; it needs at least providers, models, routes and default",
        top="a mapping of sections (providers, models, routes, ...)",
        root=Registry,
    )


def _compose(text: str) -> yaml.Node | None:
    """The node tree of `text`: read by libyaml when PyYAML was built with it (about four
    times faster than PyYAML's Python parser, which took most of a load of a registry with
    thousands of examples once its vectors and head were cached), else by that parser. A
    text libyaml refuses is read again by the Python parser, so that a broken file is
    described by the same message at the same line either way."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.compose(text, Loader=fast)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def parse_document(
    text: str, source: str, *, empty: str, top: str, root: type[BaseModel]
) -> Document:
    """YAML text → a `Document` whose top level is a mapping; `ConfigError` naming
    `source` and the line for YAML that does not parse, with `empty` for an empty file and
    `top` (what the top level must be) for one that is not a mapping. `root` validates
    the data: a number too long to read is said by what its field takes."""
    # libyaml does not count a UTF-8 byte-order mark in its marks' indexes, PyYAML's parser
    # does: without it, both point into `text` alike (where `compose` looks for tags)
    text = text.removeprefix("\ufeff")
    try:
        node = _compose(text)
        document = compose(node, text) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot be parsed"
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {problem}", file=source, line=line) from exc
    except yaml.reader.ReaderError as exc:  # a NUL or other unprintable character
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        problem = f"unacceptable character #x{char:04x}" if isinstance(char, int) else exc.reason
        raise ConfigError(f"invalid YAML: {problem}", file=source, line=line) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=source) from exc
    except Tagged as exc:
        if not exc.path:  # the whole document tagged: no field to name
            message = f"the top level must be {top}, not a tagged value ({exc})"
            raise ConfigError(message, file=source, line=exc.line) from exc
        message = str(exc) if exc.digits is None else number_message(exc.path, exc.digits, root)
        raise ConfigError(message, file=source, line=exc.line, field=format_path(exc.path)) from exc
    except TooLarge as exc:
        field = format_path(exc.path) or None
        raise ConfigError(str(exc), file=source, line=exc.line, field=field) from exc
    except TooDeep as exc:
        raise ConfigError("invalid YAML: nested too deeply", file=source, line=exc.line) from exc
    except RecursionError as exc:  # the parser's own recursion, on a file deeper still
        raise ConfigError("invalid YAML: nested too deeply", file=source) from exc
    if document is None or document.data is None:
        raise ConfigError(empty, file=source, line=1)
    if not isinstance(document.data, dict):
        kind = type(document.data).__name__
        raise ConfigError(
            f"the top level must be {top}, not a {kind}",
            file=source,
            line=document.value_lines.get((), 1),
        )
    return document


# -- writing ----------------------------------------------------------------------------


class _Block(dict[str, Any]):
    """The top level: always block style."""


class _Dumper(yaml.SafeDumper):
    """Block style, with short all-scalar mappings and lists (prices, fallbacks) inline."""

    def represent_block(self, data: _Block) -> yaml.MappingNode:
        node = super().represent_dict(data)
        node.flow_style = False
        return node

    def represent_dict(self, data: Any) -> yaml.MappingNode:
        node = super().represent_dict(data)
        node.flow_style = _short(data.values())
        return node

    def represent_list(self, data: Any) -> yaml.SequenceNode:
        node = super().represent_list(data)
        node.flow_style = _short(data)
        return node

    def represent_str(self, data: str) -> yaml.ScalarNode:
        """Escaped in double quotes when it holds a line break other than ``\\n``
        (NEL, U+2028, U+2029): PyYAML writes them raw in other styles, and reads a raw
        NEL back as a space."""
        if any(c in data for c in "\x85\u2028\u2029"):
            return self.represent_scalar("tag:yaml.org,2002:str", data, style='"')
        return super().represent_str(data)

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        """Indent list items under their key, as people write YAML by hand."""
        super().increase_indent(flow, False)


def _short(values: Any) -> bool:
    items = list(values)
    scalar = all(not isinstance(v, dict | list) for v in items)
    return bool(items) and scalar and len(items) <= 4 and len(str(items)) <= 60


_Dumper.add_representer(_Block, _Dumper.represent_block)
_Dumper.add_representer(dict, _Dumper.represent_dict)
_Dumper.add_representer(list, _Dumper.represent_list)
_Dumper.add_representer(str, _Dumper.represent_str)


def dump_registry(registry: Registry) -> str:
    """Write `registry` as clean YAML (defaults left out) that loads to the same version."""
    data = registry.model_dump(mode="json", exclude_defaults=True)
    top = _Block(version=registry.version, encoder=_encoder(registry))
    top.update((key, value) for key, value in data.items() if key not in top)
    text = yaml.dump(top, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    # A blank line before each section after the first, for reading and for diffs (split
    # at newlines alone: `splitlines` also splits at U+2028, NEL, a form feed...)
    lines = text.removesuffix("\n").split("\n")
    spaced = [("\n" + line) if i and line[:1].isalpha() else line for i, line in enumerate(lines)]
    return "\n".join(spaced) + "\n"


def _encoder(registry: Registry) -> str | dict[str, Any]:
    spec = registry.encoder
    if isinstance(spec, BuiltinEncoderSpec) and spec == BuiltinEncoderSpec(name=spec.name):
        return f"builtin:{spec.name}"
    return {"kind": spec.kind, **spec.model_dump(mode="json", exclude_defaults=True)}
