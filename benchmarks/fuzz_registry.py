"""Fuzz the registry loader with mutated copies of the shipped registries.

Each case takes one of ``examples/registry.yaml``, ``examples/echo.yaml`` and
``src/llmroute/demo/registry.yaml`` and applies one to three seeded mutations to its
text (or, for the encodings, its bytes):

- a key's line or its whole block deleted, duplicated (a duplicate key), or an unknown
  key written beside it; a line's indentation shifted; the file cut short;
- a value (block or inside a flow mapping) swapped for another type: null, booleans
  (``yes``, ``off``), a list, a mapping, 400-digit integers, ``1e400``, ``.nan``,
  ``-.inf``, ``0x``/``0o``/sexagesimal integers, dates, tagged values (``!!binary``,
  ``!!set``, ``!!python/object``, an unknown tag), a megabyte string, a 100,000-item
  list, nesting 99 to 150 deep, block scalars;
- keys YAML reads as something else (``on:``, ``~:``, ``1.5:``, a date, ``? [a]``);
- anchors and aliases: a value anchored and aliased elsewhere (before its anchor too,
  or within it), a value aliased where the file wrote the same one (which loads), an
  undefined alias, merge keys (``<<: *a``, a list, a scalar, a mapping), a billion
  laughs (10 levels of 10), an anchored route or model aliased hundreds of times;
- tabs, a BOM (first, or mid-file), UTF-16 and UTF-32, an invalid UTF-8 byte, NUL,
  ESC and other control characters, CRLF, lone CR, U+2028, U+0085, a lone surrogate
  escape, right-to-left overrides, combining marks, homoglyphs, emoji, in keys, names
  and examples;
- document markers and directives (``---``, ``...``, ``%YAML 1.1`` / ``2.0``, ``%TAG``);
- a provider key pasted where one does not belong (``api_key``, ``key_env``, a header,
  the base URL's password), which no message may repeat.

With ``--extended``, three more families join them (the recorded seeds' cases are the
same without it):

- tags where a file may write one: on keys, on block mappings and lists, after an anchor
  (and a comment), verbatim (``!<tag:...>``), through ``%TAG`` handles (``!!`` redefined
  too), the non-specific ``!``, on an empty value, on flow items, a 5,000-character tag;
- names of 200 to 5,000 characters (at, just under and past the 256 a name may have),
  renamed wherever the file names them, written ``? key`` past YAML's 1,024; a long alias
  holding spaces;
- integers of 4,299 to 100,000 digits (past Python's 4,300 for ``int()``), signed, with
  ``_``, in hex, octal, binary and sexagesimal (which Python reads at any length), a float
  of 5,000 digits, tagged or quoted, as values, flow values, list items and keys.

Each file is read with `load_registry`, as ``llmroute registry check`` reads it. A
registry that loads is then summarized, linted and built into a `Router` as ``check``
does (each may refuse it with our own error), and written back with `dump_registry`,
which must load to the same version. A file refused must be refused with `ConfigError`s
that each name the file and a line within it, and the field where the schema refused it
(not for YAML that does not parse, an encoding or an empty file); at most 100 of them
listed, no line longer than 2,000 characters (a value echoed whole), no pasted key.
Any other exception, a case over 10 s, or one that grows the process by over 300 MB is a
finding, printed with its seed and mutations to reproduce it (``--case``).

    .venv/bin/python benchmarks/fuzz_registry.py [--cases 3000] [--seed 1] [--json]
        [--case N] [--show] [--extended]

Every loop is bounded; the exit status is 1 when a case broke a rule.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import random
import re
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (
    ROOT / "examples" / "registry.yaml",
    ROOT / "examples" / "echo.yaml",
    ROOT / "src" / "llmroute" / "demo" / "registry.yaml",
)
SECRET = "sk-fuzzreg-" + "s3cr3tK3y" * 4
MAX_ERRORS = 100
MAX_LINE = 2_000
MAX_SECONDS = 10.0
MAX_GROWTH_MB = 300
MAX_NAME = 256  # a name's length: a field names a key this long whole
# a key a field cut, as far as it is shown: plain, or quoted (``['a b…'…]``)
_CUT_KEY = re.compile(r"'([^']*)'…|\"([^\"]*)\"…|([\w.-]*)…")
# messages about the file as a whole, YAML that does not parse, or a key of the top level
# that is not text: no field to name
_NO_FIELD = re.compile(
    r"^(invalid YAML|the file is not valid UTF-8|the file is UTF-(16|32)|the registry is empty"
    r"|the top level must be|mapping keys must be plain scalars|'<<' must merge"
    r"|a key YAML reads as)"
)

_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<dash>- )?(?P<key>[A-Za-z_][\w.-]*):(?P<rest>.*)$")
_FLOW_ITEM = re.compile(r"(?P<key>[A-Za-z_]\w*): (?P<value>[^,{}\[\]]+)")

_VALUES = [
    "~",
    "null",
    "true",
    "off",
    "yes",
    "[]",
    "{}",
    "[a, 1]",
    "{a: 1}",
    "[[]]",
    "''",
    '""',
    "0",
    "-1",
    "9" * 400,
    "-" + "9" * 400,
    str(2**64),
    "1e400",
    "-1e400",
    "1e-400",
    ".nan",
    ".NaN",
    ".inf",
    "-.inf",
    "-0.0",
    "0x7fffffffffffffffffff",
    "0o777",
    "0b101",
    "012",
    "1:20",
    "1_000",
    "2001-12-14",
    "2001-12-14T21:59:43.10-05:00",
    "!!binary aGVsbG8=",
    "!!str 1",
    "!!int '7'",
    "!!float .5",
    "!!bool yes",
    "!!timestamp 2001-12-14",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!pairs [a: 1]",
    "!custom x",
    "!<tag:yaml.org,2002:str> x",
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system ''",
    '"\\ud800"',
    '"a\\0b"',
    '"\\x1b[31mred"',
    '"\\u202egnp.exe"',
    "e\u0301\u0301\u0301",
    "\u0430dmin",  # Cyrillic a
    "\U0001f600",
    "\uff53\uff4d\uff41\uff4c\uff4c",  # full-width
    "*nowhere",
    "&lone x",
    "|\n  block text",
    ">-\n  folded text",
    "'it''s'",
    "@at",
    "`tick",
    "%percent",
    "= ",
    "? x",
    "- item",
    "a: b: c",
    "'unclosed",
    "[unclosed",
    "{a: 1, a: 2}",
]
_KEYS = ["~", "1", "1.5", "on", "no", "2001-12-14", '"<<"', "? [a]\n", "''", "\u202ekey"]


@dataclass
class Case:
    """One mutated file: its source, the mutations applied (for a report) and its bytes."""

    number: int
    source: Path
    mutations: list[str] = field(default_factory=list)
    data: bytes = b""


@dataclass
class Report:
    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_mutation: Counter[str] = field(default_factory=Counter)
    findings: list[tuple[Case, str]] = field(default_factory=list)
    slowest_s: float = 0.0
    slowest: str = ""
    seconds: float = 0.0
    peak_mb: int = 0


# -- mutations: (rng, lines) -> a description; each edits `lines` in place --------------


def _key_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if _KEY_LINE.match(line)]


def _block_end(lines: list[str], i: int) -> int:
    """The index after the block of the key on line `i` (its more indented lines)."""
    indent = len(lines[i]) - len(lines[i].lstrip())
    if lines[i].lstrip().startswith("- "):
        indent += 2
    end = i + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    return end


def _pick(rng: random.Random, lines: list[str]) -> int:
    if not lines:  # everything dropped or cut
        lines.append("")
    found = _key_lines(lines)
    return rng.choice(found) if found else rng.randrange(max(len(lines), 1))


def _set_value(lines: list[str], i: int, value: str) -> None:
    """Line `i`'s value (and its block) replaced by `value` (lines after the first are
    indented under the key)."""
    match = _KEY_LINE.match(lines[i])
    if match is None:
        lines[i] = value
        return
    head = f"{match['indent']}{match['dash'] or ''}{match['key']}: "
    pad = " " * (len(match["indent"]) + 2 + (2 if match["dash"] else 0))
    first, *more = value.split("\n")
    lines[i : _block_end(lines, i)] = [head + first, *(pad + m.lstrip() for m in more)]


def m_drop_line(rng: random.Random, lines: list[str]) -> str:
    i = _pick(rng, lines)
    return f"drop line {i + 1}: {lines.pop(i).strip()[:40]!r}"


def m_drop_block(rng: random.Random, lines: list[str]) -> str:
    i = _pick(rng, lines)
    end = _block_end(lines, i)
    said = lines[i].strip()[:40]
    del lines[i:end]
    return f"drop block at {i + 1}: {said!r}"


def m_duplicate(rng: random.Random, lines: list[str]) -> str:
    i = _pick(rng, lines)
    end = _block_end(lines, i)
    lines[end:end] = lines[i:end]  # a duplicate key, or a list item twice (route, rule)
    return f"duplicate block at {i + 1}"


def m_unknown_key(rng: random.Random, lines: list[str]) -> str:
    i = _pick(rng, lines)
    match = _KEY_LINE.match(lines[i])
    indent = len(match["indent"]) + (2 if match and match["dash"] else 0) if match else 0
    name = rng.choice(["zz_unknown", "api_key", "apikey", "fallbacks", "base_url", "retries"])
    value = SECRET if name in ("api_key", "apikey") else rng.choice(_VALUES)
    lines.insert(_block_end(lines, i), " " * indent + f"{name}: {value}")
    return f"unknown key {name!r} after {i + 1}"


def m_retype(rng: random.Random, lines: list[str]) -> str:
    i = _pick(rng, lines)
    value = rng.choice(_VALUES)
    _set_value(lines, i, value)
    return f"value at {i + 1} = {value[:30]!r}"


def m_retype_flow(rng: random.Random, lines: list[str]) -> str:
    flows = [i for i, line in enumerate(lines) if _FLOW_ITEM.search(line) and "{" in line]
    if not flows:
        return m_retype(rng, lines)
    i = rng.choice(flows)
    items = list(_FLOW_ITEM.finditer(lines[i]))
    item = rng.choice(items)
    value = rng.choice([v for v in _VALUES if "\n" not in v])
    lines[i] = lines[i][: item.start("value")] + value + lines[i][item.end("value") :]
    return f"flow value {item['key']!r} at {i + 1} = {value[:30]!r}"


def m_big_value(rng: random.Random, lines: list[str]) -> str:
    i = _pick(rng, lines)
    kind = rng.choice(["string", "list", "deep_list", "deep_map", "long_key"])
    depth = rng.choice([99, 100, 101, 150])
    value = {
        "string": "x" * 1_000_000,
        "list": "[" + ", ".join(["a"] * 100_000) + "]",
        "deep_list": "[" * depth + "]" * depth,
        "deep_map": "{a: " * depth + "1" + "}" * depth,
        "long_key": "{" + "k" * 10_000 + ": 1}",
    }[kind]
    _set_value(lines, i, value)
    return f"{kind} at {i + 1}" + (f" ({depth} deep)" if kind.startswith("deep") else "")


def m_odd_key(rng: random.Random, lines: list[str]) -> str:
    i = _pick(rng, lines)
    match = _KEY_LINE.match(lines[i])
    if match is None:
        return m_retype(rng, lines)
    key = rng.choice(_KEYS)
    lines[i] = f"{match['indent']}{match['dash'] or ''}{key}:{match['rest']}"
    return f"key at {i + 1} = {key!r}"


def m_anchor_alias(rng: random.Random, lines: list[str]) -> str:
    a, b = _pick(rng, lines), _pick(rng, lines)
    match = _KEY_LINE.match(lines[a])
    if match is None or a == b:
        return m_retype(rng, lines)
    rest = match["rest"].strip()
    anchored = f"{match['indent']}{match['dash'] or ''}{match['key']}: &fz {rest}"
    lines[a] = anchored.rstrip()
    _set_value(lines, b, "*fz")  # before the anchor: undefined; within it: recursive
    return f"anchor at {a + 1}, alias at {b + 1}"


def m_merge(rng: random.Random, lines: list[str]) -> str:
    i = _pick(rng, lines)
    match = _KEY_LINE.match(lines[i])
    if match is None:
        return m_retype(rng, lines)
    merged = rng.choice(["*fz", "[*fz, *fz]", "1", "{zz: 1}", "[1, {a: 1}]", "{}", "*nowhere"])
    lines[i] = f"{match['indent']}{match['dash'] or ''}{match['key']}: &fz {match['rest'].strip()}"
    at = _block_end(lines, i)
    indent = len(match["indent"]) + (2 if match["dash"] else 0)
    target = _pick(rng, lines[at:]) + at if at < len(lines) else at
    tm = _KEY_LINE.match(lines[target]) if target < len(lines) else None
    pad = (len(tm["indent"]) + (2 if tm["dash"] else 0)) if tm else indent
    lines.insert(min(target + 1, len(lines)), " " * pad + f"<<: {merged}")
    return f"merge {merged!r} after {target + 1}"


def m_bomb(rng: random.Random, lines: list[str]) -> str:
    levels = rng.choice([4, 6, 9, 10])
    bomb = ["x_bomb:", "  - &b0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    bomb += [f"  - &b{n} [{', '.join([f'*b{n - 1}'] * 10)}]" for n in range(1, levels)]
    lines[0:0] = bomb
    i = _pick(rng, lines[len(bomb) :]) + len(bomb)
    _set_value(lines, i, f"*b{levels - 1}")
    return f"billion laughs of {levels} levels, aliased at {i + 1}"


def m_many_aliases(rng: random.Random, lines: list[str]) -> str:
    """An anchored list item (a route, a rule) or mapping value aliased many times."""
    items = [i for i in _key_lines(lines) if lines[i].lstrip().startswith("- ")]
    if not items:
        return m_retype(rng, lines)
    i = rng.choice(items)
    match = _KEY_LINE.match(lines[i])
    assert match is not None
    lines[i : i + 1] = [
        f"{match['indent']}- &many",
        f"{match['indent']}  {match['key']}:{match['rest']}",
    ]
    count = rng.choice([10, 300, 2_000])
    at = _block_end(lines, i)
    lines[at:at] = [f"{match['indent']}- *many"] * count
    return f"list item at {i + 1} aliased {count} times"


def m_tab(rng: random.Random, lines: list[str]) -> str:
    i = _pick(rng, lines)
    where = rng.choice(["indent", "after colon", "in value"])
    if where == "indent":
        lines[i] = "\t" + lines[i].lstrip(" ")
    elif where == "after colon":
        lines[i] = lines[i].replace(": ", ":\t", 1)
    else:
        lines[i] += "\tx"
    return f"tab {where} at {i + 1}"


def m_indent(rng: random.Random, lines: list[str]) -> str:
    i = _pick(rng, lines)
    shift = rng.choice([-2, -1, 1, 2])
    lines[i] = " " * shift + lines[i] if shift > 0 else lines[i][-shift:]
    return f"indent {shift:+d} at {i + 1}"


def m_odd_text(rng: random.Random, lines: list[str]) -> str:
    i = _pick(rng, lines)
    odd = rng.choice(
        ["\ufeff", "\x00", "\x07", "\x1b[31m", "\r", "\u2028", "\u0085", "\ufffe", "\ud800"]
    )
    at = rng.randrange(len(lines[i]) + 1)
    lines[i] = lines[i][:at] + odd + lines[i][at:]
    return f"{odd!r} in line {i + 1}"


def m_name(rng: random.Random, lines: list[str]) -> str:
    names = [i for i, line in enumerate(lines) if re.search(r"\b(name|target): ", line)]
    if not names:
        return m_retype(rng, lines)
    i = rng.choice(names)
    odd = rng.choice(["\u202e", "\u0301", "\u0430", "\U0001f600", "\uff41", " ", "\u200b"])
    lines[i] = re.sub(r"(name|target): (\S)", lambda m: f"{m[1]}: {m[2]}{odd}", lines[i], count=1)
    return f"{odd!r} in the name at {i + 1}"


def m_secret(rng: random.Random, lines: list[str]) -> str:
    """A provider key pasted into the file, where one does not belong."""
    i = _pick(rng, lines)
    match = _KEY_LINE.match(lines[i])
    pad = " " * ((len(match["indent"]) + (2 if match["dash"] else 0)) if match else 0)
    line = rng.choice(
        [
            f"api_key: {SECRET}",
            f"key: {SECRET}",
            f"api_key_env: {SECRET}",
            f"key_env: {SECRET}",
            f"headers: {{Authorization: Bearer {SECRET}}}",
            f"base_url: https://user:{SECRET}@example.invalid/v1",
            f"base_url: https:/user:{SECRET}@/v1",
        ]
    )
    lines.insert(_block_end(lines, i), pad + line)
    return f"{line.split(':')[0]!r} pasted after {i + 1}"


def m_document(rng: random.Random, lines: list[str]) -> str:
    marker = rng.choice(["---", "...", "--- !!map", "%YAML 1.1\n---", "%YAML 2.0\n---"])
    marker = rng.choice([marker, "%TAG !e! tag:example.com,2000:\n---", "--- |\n  text"])
    where = rng.choice(["start", "end", "middle"])
    at = {"start": 0, "end": len(lines), "middle": rng.randrange(len(lines) + 1)}[where]
    lines[at:at] = marker.split("\n")
    return f"{marker.splitlines()[0]!r} at the {where}"


def m_truncate(rng: random.Random, lines: list[str]) -> str:
    text = "\n".join(lines)
    at = rng.randrange(len(text) + 1)
    lines[:] = text[:at].split("\n")
    return f"cut at character {at}"


def m_alias_same(rng: random.Random, lines: list[str]) -> str:
    """Two lines that write the same value: the first anchored, the second its alias
    (the file still loads, to the same version)."""
    seen: dict[str, int] = {}
    pairs = []
    for i in _key_lines(lines):
        match = _KEY_LINE.match(lines[i])
        assert match is not None
        value = match["rest"].split(" #")[0].strip()
        if value and value[0] not in "&*|>!" and "&" not in value:
            if (match["key"], value) in seen:
                pairs.append((seen[match["key"], value], i))
            else:
                seen[match["key"], value] = i
    if not pairs:
        return m_odd_example(rng, lines)
    a, b = rng.choice(pairs)
    lines[a] = lines[a].replace(": ", ": &same ", 1)
    _set_value(lines, b, "*same")
    return f"line {b + 1} an alias of line {a + 1}"


def m_odd_example(rng: random.Random, lines: list[str]) -> str:
    """An example holding odd text (which mostly loads)."""
    items = [
        i
        for i, line in enumerate(lines)
        if re.match(r"\s*- [a-zA-Z]", line) and not _KEY_LINE.match(line)
    ]
    if not items:
        return m_retype(rng, lines)
    i = rng.choice(items)
    odd = rng.choice(
        ["\u202e", "\u0301", "\U0001f600", "\u200b", "\u2028", "\u00a0", "\u4e2d\u6587"]
    )
    lines[i] += " " + odd
    return f"{odd!r} in the item at {i + 1}"


TEXT_MUTATIONS: dict[str, Callable[[random.Random, list[str]], str]] = {
    "alias_same": m_alias_same,
    "odd_example": m_odd_example,
    "drop_line": m_drop_line,
    "drop_block": m_drop_block,
    "duplicate": m_duplicate,
    "unknown_key": m_unknown_key,
    "retype": m_retype,
    "retype_flow": m_retype_flow,
    "big_value": m_big_value,
    "odd_key": m_odd_key,
    "anchor_alias": m_anchor_alias,
    "merge": m_merge,
    "bomb": m_bomb,
    "many_aliases": m_many_aliases,
    "tab": m_tab,
    "indent": m_indent,
    "odd_text": m_odd_text,
    "name": m_name,
    "secret": m_secret,
    "document": m_document,
    "truncate": m_truncate,
}
# -- --extended: tags, long names, huge integers ------------------------------------------

_NAME_VALUE = re.compile(r"^(?P<head>\s*(?:- )?name: )(?P<name>[A-Za-z0-9][\w.-]*)\s*$")
_SECTION_KEY = re.compile(r"^  (?P<name>[A-Za-z0-9][\w.-]*):(?P<rest>.*)$")
_NAMED_SECTIONS = ("models:", "providers:")
_NAME_LENGTHS = [200, 255, 256, 257, 300, 1_023, 1_025, 5_000]
_DIGITS = [4_299, 4_300, 4_301, 5_000, 100_000]


def _huge_number(rng: random.Random) -> str:
    """An integer past Python's 4,300 digits for int() (or just under), in one of the
    ways YAML 1.1 writes one."""
    n = rng.choice(_DIGITS)
    return rng.choice(
        [
            "9" * n,
            "-" + "9" * n,
            "+" + "1" * n,
            "9_" * (n // 2) + "9",
            "0x" + "f" * (n - 300),  # Python reads these at any length
            "0o" + "7" * n,
            "0b" + "1" * (3 * n),
            "1:" + ":".join(["59"] * (n // 2)),
            "1" + "0" * n + ".5",
            "!!int " + "9" * n,
            "!!float " + "9" * n,
            "!!str " + "9" * n,
            '"' + "9" * n + '"',
            "[" + "9" * n + "]",
        ]
    )


def x_huge_int(rng: random.Random, lines: list[str]) -> str:
    """A huge integer as a value, a flow value, a list item or a (``? ``) key."""
    number = _huge_number(rng)
    where = rng.choice(["value", "value", "flow", "item", "key"])
    flows = [i for i, line in enumerate(lines) if _FLOW_ITEM.search(line) and "{" in line]
    items = [i for i, line in enumerate(lines) if re.match(r"\s*- [^\s&*!]", line)]
    if where == "flow" and flows and not number.startswith(("!!", "[")):
        i = rng.choice(flows)
        item = rng.choice(list(_FLOW_ITEM.finditer(lines[i])))
        lines[i] = lines[i][: item.start("value")] + number + lines[i][item.end("value") :]
        return f"flow value {item['key']!r} at {i + 1} = {number[:12]!r} ({len(number):,})"
    if where == "item" and items:
        i = rng.choice(items)
        lines[i] = lines[i][: lines[i].index("- ") + 2] + number
        return f"item at {i + 1} = {number[:12]!r} ({len(number):,})"
    i = _pick(rng, lines)
    if where == "key" and (match := _KEY_LINE.match(lines[i])) is not None:
        pad = match["indent"] + ("  " if match["dash"] else "")
        at = _block_end(lines, i)
        lines[at:at] = [f"{pad}? {number}", f"{pad}: x"]
        return f"key after {i + 1} = {number[:12]!r} ({len(number):,})"
    _set_value(lines, i, number)
    return f"value at {i + 1} = {number[:12]!r} ({len(number):,})"


def _names(lines: list[str]) -> list[str]:
    """The names the file gives: routes' and rules' ``name:``, models' and providers'
    keys."""
    found: list[str] = []
    section = ""
    for line in lines:
        if line[:1].isalpha():
            section = line.split(" ")[0]
        match = _NAME_VALUE.match(line)
        if match is None and section in _NAMED_SECTIONS:
            match = _SECTION_KEY.match(line)
        if match is not None:
            found.append(match["name"])
    return sorted(set(found))


def x_long_name(rng: random.Random, lines: list[str]) -> str:
    """A name made 200 to 5,000 characters long wherever the file writes it (a key past
    1,024 written ``? key``), or a long alias holding spaces."""
    length = rng.choice(_NAME_LENGTHS)
    names = _names(lines)
    if not names or rng.random() < 0.2:
        target = names[0] if names else "small"
        alias = ("gpt 4 " + "a" * length)[:length]
        at = next((i for i, line in enumerate(lines) if line == "aliases:"), None)
        if at is None:
            lines += ["aliases:"]
            at = len(lines) - 1
        lines.insert(at + 1, f"  ? '{alias}'" if length > 1_000 else f"  '{alias}': {target}")
        if length > 1_000:
            lines.insert(at + 2, f"  : {target}")
        return f"alias of {length:,} characters for {target!r}"
    old = rng.choice(names)
    filler = rng.choice(["x", "a-b_c.d", "0"])
    new = (old + "-" + filler * length)[:length]
    word = re.compile(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])")
    for i, line in enumerate(list(lines)):
        key = _SECTION_KEY.match(line)
        if length > 1_000 and key is not None and key["name"] == old:
            lines[i] = f"  ? {new}\n  :{key['rest']}"
        else:
            lines[i] = word.sub(new, line)
    lines[:] = "\n".join(lines).split("\n")
    return f"{old!r} renamed to {length:,} characters ({filler!r})"


_TAGS = [
    "!!str",
    "!!int",
    "!!float",
    "!!bool",
    "!!null",
    "!!binary",
    "!!timestamp",
    "!!map",
    "!!seq",
    "!!set",
    "!!omap",
    "!custom",
    "!",
    "!<tag:yaml.org,2002:str>",
    "!<tag:yaml.org,2002:binary>",
    "!<!local>",
    "!!python/str",
    "!!python/object:os.system",
    "!" + "t" * 5_000,
]


def x_tag(rng: random.Random, lines: list[str]) -> str:
    """A tag on a key, a value (after an anchor, a comment, or on nothing), a block
    collection, a flow item, or through a ``%TAG`` handle."""
    tag = rng.choice(_TAGS)
    where = rng.choice(["key", "value", "anchor", "comment", "empty", "block", "flow", "handle"])
    i = _pick(rng, lines)
    match = _KEY_LINE.match(lines[i])
    if match is None:
        lines[i] = f"{tag} {lines[i]}"
        return f"tag {tag[:30]!r} on line {i + 1}"
    head = f"{match['indent']}{match['dash'] or ''}"
    rest = match["rest"].strip()
    if where == "key":
        lines[i] = f"{head}{tag} {match['key']}:{match['rest']}"
    elif where == "value" and rest:
        lines[i] = f"{head}{match['key']}: {tag} {rest}"
    elif where == "anchor" and rest:
        lines[i] = f"{head}{match['key']}: &tg {tag} {rest}"
    elif where == "comment" and rest:
        pad = " " * (len(head) + 2)
        lines[i : i + 1] = [f"{head}{match['key']}: &tg # note", f"{pad}{tag} {rest}"]
    elif where == "empty":
        _set_value(lines, i, tag)
    elif where == "flow":
        _set_value(lines, i, f"[{tag} 1, {{a: {tag} x}}]")
    elif where == "handle":
        prefix = rng.choice(["tag:yaml.org,2002:", "tag:example.com,2000:"])
        handle = rng.choice(["!e!", "!!"])
        lines[0:0] = [f"%TAG {handle} {prefix}", "---"]
        name = rng.choice(["str", "int", "binary", "python/name:os.system"])
        j = i + 2
        if rest:
            lines[j] = f"{head}{match['key']}: {handle}{name} {rest}"
        else:
            lines[j] = f"{head}{match['key']}: {handle}{name}"
        return f"%TAG {handle} {prefix}, {handle}{name} at {j + 1}"
    else:  # a block collection's tag (or a scalar's, where the key has no block)
        lines[i] = f"{head}{match['key']}: {tag}" + (f" {rest}" if rest else "")
    return f"tag {tag[:30]!r} ({where}) at {i + 1}"


EXTENDED_MUTATIONS: dict[str, Callable[[random.Random, list[str]], str]] = {
    "x_huge_int": x_huge_int,
    "x_long_name": x_long_name,
    "x_tag": x_tag,
}


# text-level first: these act on the whole file's bytes
_ENCODINGS = ["bom", "utf-16", "utf-16-le", "utf-32", "bad_byte", "crlf", "cr", "latin-1"]


def _encode(rng: random.Random, text: str, mutations: list[str]) -> bytes:
    kind = rng.choice(_ENCODINGS) if rng.random() < 0.15 else None
    if kind is None:
        return text.encode("utf-8", "surrogatepass")
    mutations.append(f"encoding: {kind}")
    if kind == "bom":
        return codecs.BOM_UTF8 + text.encode("utf-8", "surrogatepass")
    if kind in ("utf-16", "utf-16-le", "utf-32"):
        return text.encode(kind, "surrogatepass")
    if kind == "bad_byte":
        raw = text.encode("utf-8", "surrogatepass")
        at = rng.randrange(len(raw) + 1)
        return raw[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe9t\xe9"]) + raw[at:]
    if kind == "latin-1":
        return text.replace("e", "\xe9", 3).encode("latin-1", "replace")
    return text.replace("\n", "\r\n" if kind == "crlf" else "\r").encode("utf-8", "surrogatepass")


def make_case(seed: int, number: int, extended: bool = False) -> Case:
    """Case `number` of `seed`; `extended`: each mutation is one of `EXTENDED_MUTATIONS`
    half the time (without it the cases are those the recorded seeds ran)."""
    rng = random.Random(f"{seed}:{number}")
    case = Case(number, rng.choice(SOURCES))
    lines = case.source.read_text(encoding="utf-8").split("\n")
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        mutations = EXTENDED_MUTATIONS if extended and rng.random() < 0.5 else TEXT_MUTATIONS
        name = rng.choice(sorted(mutations))
        case.mutations.append(f"{name}: {mutations[name](rng, lines)}")
    case.data = _encode(rng, "\n".join(lines), case.mutations)
    return case


# -- checking ------------------------------------------------------------------------------


class Hang(Exception):
    """A case ran past the watchdog."""


@contextlib.contextmanager
def _watchdog(seconds: int) -> Iterator[None]:
    def ring(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _refusal_problems(exc: Exception, path: str, lines: int) -> list[str]:
    """What is wrong with how `exc` (a `ConfigError`) says the file was refused."""
    from llmroute.registry import ConfigErrors

    errors = list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]
    rendered = str(exc)
    problems = []
    if len(rendered.splitlines()) > MAX_ERRORS + 1:  # the first 100, then how many more
        problems.append(f"{len(errors)} errors listed ({len(rendered):,} characters)")
    if SECRET in rendered:
        problems.append("the pasted key is in the message")
    if "Traceback" in rendered or "pydantic.dev" in rendered or "<class '" in rendered:
        problems.append("a traceback, pydantic's URL or a Python class in the message")
    if any(len(line) > MAX_LINE for line in rendered.splitlines()):
        problems.append(f"a line of the message past {MAX_LINE:,} characters")
    if "int_max_str_digits" in rendered:
        problems.append("Python's limit on an integer's digits said in the message")
    for error in errors[:MAX_ERRORS]:
        said = f"{str(error)[:200]!r}"
        if error.file != path:
            problems.append(f"names the file {error.file!r}: {said}")
        if error.line is None or not 1 <= error.line <= lines + 1:
            problems.append(f"no line in the file ({error.line}): {said}")
        if error.field is None and not _NO_FIELD.search(error.message):
            problems.append(f"no field: {said}")
        if any(len("".join(cut)) < MAX_NAME for cut in _CUT_KEY.findall(error.field or "")):
            problems.append(f"a key cut short of {MAX_NAME} characters in the field: {said}")
    return problems


def _loaded_problems(loaded: Any) -> list[str]:
    """Run what `registry check` runs on a registry that loaded, and the documented
    round trip of `dump_registry`; our own errors are fine, named where they can be."""
    from llmroute.errors import ConfigError, LlmrouteError
    from llmroute.registry import dump_registry, parse_registry, summarize
    from llmroute.registry.lint import lint, lint_files
    from llmroute.registry.schema import OpenAIEncoderSpec

    problems = []
    out = "\n".join(summarize(loaded) + lint(loaded.registry) + lint_files(loaded))
    if SECRET in out:
        problems.append("the pasted key is in the summary or a warning")
    again = parse_registry(dump_registry(loaded.registry), source="dumped.yaml")
    if again.version != loaded.version:
        problems.append(f"dump_registry loads to {again.version}, not {loaded.version}")
    if not isinstance(loaded.registry.encoder, OpenAIEncoderSpec):  # `check` skips it too
        from llmroute.decide import Router

        try:
            Router(loaded).close()
        except ConfigError as exc:
            if exc.file is None or exc.line is None:
                problems.append(f"the router's ConfigError names no file or line: {exc}")
            if len(str(exc)) > MAX_LINE:
                problems.append(f"the router's ConfigError is {len(str(exc)):,} characters")
        except LlmrouteError:
            pass
    return problems


def run_case(case: Case, folder: Path) -> tuple[str, list[str]]:
    """(outcome, problems) of loading `case` as `registry check` would."""
    from llmroute.errors import ConfigError
    from llmroute.registry import load_registry

    path = folder / "registry.yaml"
    path.write_bytes(case.data)
    lines = case.data.count(b"\n") + case.data.count(b"\r") + 1
    try:
        loaded = load_registry(path)
    except ConfigError as exc:
        return "refused", _refusal_problems(exc, str(path), lines)
    return "loaded", _loaded_problems(loaded)


def _warm() -> None:
    """Each source's encoder loaded and examples embedded before the first case: a case
    is timed and its memory measured alone."""
    from llmroute.decide import Router
    from llmroute.registry import load_registry

    for source in SOURCES:
        Router(load_registry(source)).close()


def fuzz(
    seed: int,
    cases: int,
    first: int = 0,
    show: bool = False,
    watchdog: bool = True,
    extended: bool = False,
) -> Report:
    """Run cases `first`.. of `seed` (`extended`: with `EXTENDED_MUTATIONS`); `watchdog`:
    a SIGALRM past 60 s a case (off under pytest-timeout, whose alarm it would cancel)."""
    report = Report()
    _warm()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(first, first + cases):
            case = make_case(seed, number, extended)
            report.cases += 1
            report.by_mutation.update(m.split(":")[0] for m in case.mutations)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            took = time.monotonic()
            try:
                with _watchdog(int(MAX_SECONDS * 6)) if watchdog else contextlib.nullcontext():
                    outcome, problems = run_case(case, Path(tmp))
            except Exception as exc:  # the finding: a traceback for the operator
                outcome = "crashed"
                tail = traceback.format_exception(exc)[-3:]
                problems = [f"{type(exc).__name__}: {str(exc)[:300]}\n" + "".join(tail)]
            took = time.monotonic() - took
            grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 - before
            if took > MAX_SECONDS:
                problems.append(f"took {took:.1f} s")
            if grew > MAX_GROWTH_MB:
                problems.append(f"grew the process by {grew} MB")
            if took > report.slowest_s:
                report.slowest_s, report.slowest = took, "; ".join(case.mutations)
            report.outcomes[outcome] += 1
            report.findings += [(case, p) for p in problems]
            if show or problems:
                print(f"case {number} ({case.source.name}) {outcome}: {case.mutations}")
                for problem in problems:
                    print(f"  FINDING {problem}")
    report.seconds = time.monotonic() - started
    report.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--case", type=int, help="run this case alone (and show it)")
    parser.add_argument("--show", action="store_true", help="print every case")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--extended", action="store_true", help="add tags, long names and huge integers"
    )
    args = parser.parse_args()
    if args.case is not None:
        case = make_case(args.seed, args.case, args.extended)
        print(case.data.decode("utf-8", "replace")[:4000])
        report = fuzz(args.seed, 1, args.case, show=True, extended=args.extended)
    else:
        report = fuzz(args.seed, args.cases, show=args.show, extended=args.extended)
    summary = {
        "seed": args.seed,
        "extended": args.extended,
        "cases": report.cases,
        "outcomes": dict(report.outcomes),
        "findings": len(report.findings),
        "distinct": len({p.split(":")[0] for _, p in report.findings}),
        "seconds": round(report.seconds, 1),
        "slowest_s": round(report.slowest_s, 2),
        "slowest": report.slowest,
        "peak_rss_mb": report.peak_mb,
        "by_mutation": dict(sorted(report.by_mutation.items())),
    }
    print(json.dumps(summary, ensure_ascii=False) if args.json else json.dumps(summary, indent=1))
    sys.exit(1 if report.findings else 0)


if __name__ == "__main__":
    main()
