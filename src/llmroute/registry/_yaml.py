"""YAML text → plain data, remembering the line of every key and value.

PyYAML's `safe_load` forgets where values came from and silently keeps the last of two
duplicate keys. Composing the node tree and building the data ourselves gives both:
line numbers for every error, and duplicate keys reported instead of lost.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import yaml

from llmroute.errors import shown
from llmroute.registry._paths import Path, Problem

__all__ = ["Document", "Tagged", "compose", "decimal_digits"]

_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"  # YAML 1.1's plain ``=``
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"})
# the tags a file may write (``!!str 12``): what plain values are read as anyway
_SCALAR_TAGS = {
    f"{_YAML_TAG}str": "text",
    f"{_YAML_TAG}int": "an integer",
    f"{_YAML_TAG}float": "a number",
    f"{_YAML_TAG}bool": "true or false",
    f"{_YAML_TAG}null": "null",
}
# an anchor and what may follow it before the tag: blanks, line breaks and comments
_ANCHOR = re.compile(r"&\S+(?:\s|#[^\n\r\x85\u2028\u2029]*)*")
_INT_TAG = f"{_YAML_TAG}int"
_DECIMAL = re.compile(r"[-+]?[0-9_]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_MAX_NODES = 1_000_000
# What aliases may add to the values the file writes: each is validated, and may be an
# error, so 400 aliases of a route with 400 bad examples (5 kB) made 160,000 errors
_MAX_ALIASED = 100_000
# Far deeper than any registry or cases file, far shallower than the interpreter's recursion
# limit: without it the depth refused depended on the Python version (3.11 gives each list
# comprehension a frame of its own, 3.12 inlines them), 500 levels on 3.11, 1000 on 3.12+.
_MAX_DEPTH = 100


@dataclass
class Document:
    """The plain data of a YAML file, and the 1-based lines of its parts by path."""

    data: Any
    value_lines: dict[Path, int] = field(default_factory=dict)
    key_lines: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # the text of each plain scalar YAML read as something else (``0123`` as 83, ``on`` as
    # true), for the values that are compared as text
    written: dict[Path, str] = field(default_factory=dict)


_KEY_KINDS = {date: "a date", datetime: "a date and time"}


def _plain(key: object) -> bool:
    return isinstance(key, str | int | float | bool) or key is None


class TooLarge(ValueError):
    """The document expands (through aliases) to more nodes than any registry needs, at
    `path` (`line`: the nearest key's, where the alias that passed the limit stands)."""

    def __init__(self, message: str, line: int | None, path: Path) -> None:
        super().__init__(message)
        self.line = line
        self.path = path


class Tagged(ValueError):
    """A value (or key) at `path`, on `line`, that the file tags explicitly with a tag
    other than a plain scalar's (``!!binary``, ``!!set``, ``!!python/...``), or with one
    its text does not fit (``!!int abc``). `digits` is set for a plain value YAML reads
    as an integer past Python's 4,300 digits, which may have been meant as text (the
    loader says which by the field's type)."""

    def __init__(self, message: str, line: int, path: Path, digits: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.path = path
        self.digits = digits


class TooDeep(ValueError):
    """Collections nested more than `_MAX_DEPTH` deep; `line` is where the limit was passed."""

    def __init__(self, line: int) -> None:
        super().__init__(f"nested more than {_MAX_DEPTH} deep (line {line})")
        self.line = line


def compose(node: yaml.Node, text: str = "") -> Document:
    """Build the data of a composed node tree; duplicate keys become `problems`. `text`
    (what `node` was composed from) tells the tags the file writes from those YAML
    resolved: ``!!timestamp 2026-01-01`` is refused, ``2026-01-01`` read as a date."""
    builder = _Builder(text)
    data = builder.build(node, ())
    return Document(data, builder.value_lines, builder.key_lines, builder.problems, builder.written)


class _Builder:
    def __init__(self, text: str) -> None:
        self._text = text
        self.value_lines: dict[Path, int] = {}
        self.key_lines: dict[Path, int] = {}
        self.problems: list[Problem] = []
        self.written: dict[Path, str] = {}
        self._scalars = yaml.constructor.SafeConstructor()
        self._count = 0
        self._depth = 0
        self._active: set[int] = set()
        self._built: set[int] = set()  # the nodes built once: built again, an alias's
        self._aliasing = 0  # how many aliased nodes the node being built is within
        self._aliased = 0
        self._alias_at: Path = ()  # the outermost alias being built

    def build(self, node: yaml.Node, path: Path) -> Any:
        again = id(node) in self._built
        self._built.add(id(node))
        self._count += 1
        self._aliased += bool(again or self._aliasing)
        if again and not self._aliasing:
            self._alias_at = path
        if self._count > _MAX_NODES:
            self._too_large(f"the document expands to more than {_MAX_NODES:,} values", path)
        if self._aliased > _MAX_ALIASED:
            self._too_large(
                f"aliases expand the document by more than {_MAX_ALIASED:,} values", self._alias_at
            )
        self.value_lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            value = self._scalar(node, path)
            plain = not node.style  # None from PyYAML's parser, "" from libyaml's
            if plain and value is not None and not isinstance(value, str):
                self.written[path] = node.value
            return value
        if node.tag not in _COLLECTION_TAGS:
            raise Tagged(_not_allowed(node.tag), node.start_mark.line + 1, path)
        if id(node) in self._active:
            raise TooLarge(
                "the document contains a recursive alias", node.start_mark.line + 1, path
            )
        if self._depth >= _MAX_DEPTH:
            raise TooDeep(node.start_mark.line + 1)
        self._active.add(id(node))
        self._depth += 1
        self._aliasing += again
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self._mapping(node, path)
        finally:
            self._depth -= 1
            self._aliasing -= again
            self._active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: Path, key: bool = False) -> Any:
        """The value of a scalar (a mapping's `key`); `Tagged` for a tag the file writes
        that is not a plain scalar's, or that its text does not fit. No tag constructs an
        object: the constructor is PyYAML's safe one."""
        explicit = self._explicit(node)
        if not explicit and node.tag in (_MERGE_TAG, _VALUE_TAG):
            return node.value  # a plain ``<<`` or ``=`` where no key is merged: text
        line = node.start_mark.line + 1
        if explicit and node.tag not in _SCALAR_TAGS:
            raise Tagged(_not_allowed(node.tag), line, path)
        try:
            value = self._scalars.construct_object(node, deep=True)
        except (ValueError, KeyError, AttributeError, TypeError, IndexError, yaml.YAMLError) as exc:
            # ``!!int abc``, ``!!bool maybe``; a plain ``2026-13-45`` is a date YAML cannot
            # read; ``!!float`` on nothing (or on ``_``): PyYAML indexes the empty text
            kind = _SCALAR_TAGS.get(node.tag, "a date")
            written = shown(node.value, 60)
            if node.tag == _INT_TAG and _DECIMAL.fullmatch(node.value):
                # past Python's 4,300 digits for int()
                digits = sum(c.isdigit() for c in node.value)
                raise _too_long(digits, line, path, key=key, explicit=explicit) from exc
            if explicit:
                message = f"the tag {_short_tag(node.tag)} does not fit {written}: not {kind}"
            else:
                message = f"{written} reads as {kind} and is not one: quote it"
            raise Tagged(message, line, path) from exc
        if isinstance(value, str) and (surrogate := _SURROGATE.search(value)) is not None:
            # ``"\ud800"``: an escape YAML reads as half of a UTF-16 pair (it joins no
            # two), which no UTF-8 text holds: the version's hash, a header, a log line
            raise Tagged(
                f"holds the escape {surrogate.group()!r}, half of a UTF-16 pair, which is not "
                "text: write the character itself, or one escape for it (\\U0001F600)",
                line,
                path,
            )
        if isinstance(value, int) and not isinstance(value, bool) and not _writable(value):
            # hex, binary and sexagesimal integers are read at any length, and then no
            # message, version hash or request can write them
            raise _too_long(decimal_digits(value), line, path, key=key, explicit=explicit)
        return value

    def _explicit(self, node: yaml.Node) -> bool:
        """Whether the file writes a tag on `node`: its start (past an anchor, and blanks
        or comments after it) is a ``!``."""
        at = node.start_mark.index
        anchor = _ANCHOR.match(self._text, at)
        return self._text.startswith("!", anchor.end() if anchor else at)

    def _too_large(self, message: str, path: Path) -> None:
        """Raise `TooLarge` at the line of the key nearest `path` (an alias's node holds
        its anchor's line)."""
        for end in range(len(path), 0, -1):
            line = self.key_lines.get(path[:end])
            if line is not None:
                raise TooLarge(message, line, path)
        raise TooLarge(message, None, path)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.update(self._merge_source(value_node, path))
                continue
            if not isinstance(key_node, yaml.ScalarNode):  # ``? [a, b]``: not built
                self.problems.append((path, "mapping keys must be plain scalars"))
                continue
            written = (*path, key_node.value)
            key = self._scalar(key_node, written, key=True)
            if not _plain(key):  # ``2026-01-01:``
                self.key_lines.setdefault(written, key_node.start_mark.line + 1)
                kind = _KEY_KINDS.get(type(key), f"a {type(key).__name__}")
                self.problems.append((written, f"a key YAML reads as {kind}: quote it"))
                continue
            child = (*path, key) if isinstance(key, str | int) else path
            if key in out:
                first = self.key_lines.get(child)
                where = f" (first on line {first})" if first else ""
                self.problems.append((child, f"duplicate key {key!r}{where}"))
                self.key_lines[child] = key_node.start_mark.line + 1
                self.value_lines[child] = value_node.start_mark.line + 1
            self.key_lines.setdefault(child, key_node.start_mark.line + 1)
            out[key] = self.build(value_node, child)
        return {**{k: v for k, v in merged.items() if k not in out}, **out}

    def _merge_source(self, node: yaml.Node, path: Path) -> dict[Any, Any]:
        """``<<: *anchor`` (or a list of anchors): keys the mapping inherits."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[Any, Any] = {}
        for source in reversed(sources):
            value = self.build(source, path)
            if not isinstance(value, dict):
                self.problems.append((path, "'<<' must merge a mapping or a list of mappings"))
                continue
            merged.update(value)
        return merged


def _too_long(digits: int, line: int, path: Path, *, key: bool, explicit: bool) -> Tagged:
    """An integer past what Python writes as text (4,300 digits): text where text goes
    (a plain value's `digits` are kept for the loader to say which), a key to quote."""
    if key and not explicit:
        return Tagged(f"a key YAML reads as an integer of {digits:,} digits: quote it", line, path)
    message = f"out of range: an integer of {digits:,} digits"
    return Tagged(message, line, path, None if explicit else digits)


def _writable(value: int) -> bool:
    """Whether `str(value)` works: within Python's limit on an integer's digits. By its
    bits first (2**(3n) < 10**n): a power of ten for each integer was 0.9 ms of a 4 ms load
    of examples/registry.yaml."""
    limit = sys.get_int_max_str_digits()
    return limit == 0 or value.bit_length() <= 3 * limit or abs(value) < 10**limit


def decimal_digits(value: int) -> int:
    """The digits of `value` written in decimal, counted without writing it (past 4,300
    digits `str` refuses)."""
    value = abs(value)
    digits = max(1, math.floor(value.bit_length() * math.log10(2)))  # within one of it
    while value >= 10**digits:
        digits += 1
    while digits > 1 and value < 10 ** (digits - 1):
        digits -= 1
    return digits


def _short_tag(tag: str) -> str:
    """``tag:yaml.org,2002:binary`` as a file writes it, ``!!binary`` (cut to 80 characters:
    a tag may be as long as the file)."""
    short = "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag
    return short if len(short) <= 80 else short[:79] + "…"


def _not_allowed(tag: str) -> str:
    return (
        f"the tag {_short_tag(tag)} is not allowed: write the value plain (text, a "
        "number, true or false, a list or a mapping), or with !!str, !!int, !!float, !!bool "
        "or !!null"
    )
