"""The code shown in README.md and docs/*.md, read out for tests/test_docs.py: fenced
blocks with their page and line, `llmroute ...` command lines (in blocks and in the
prose's code spans), registry fragments merged onto a small base registry, and a check
of a command line against the real command-line app.

A line ``<!-- docs-test: WORD: reason -->`` directly above a fence says how the block
is checked when its language alone does not say it:

- ``skip``: not checked as its language (a ```yaml block is then only parsed as YAML,
  a ```json block not at all); the reason says why (not a registry, abbreviated).
- ``load-only``: a registry (or fragment) that the loader checks but that is not built
  into a router: it names files the reader makes (a trained artifact's folder).
- ``run``: a ```python block that runs offline from the checkout's root; it is executed,
  and where an expression or a ``print(...)`` ends in a comment, the comment is what it
  must give (``loaded.registry.route("code").target  # 'medium'``).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))

_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*([\w-]+)\s*(?::\s*(.*?))?\s*-->\s*$")
MARKERS = ("skip", "run", "load-only")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # the opening fence's line, 1-based
    lang: str
    text: str
    marker: str | None = None
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(frozen=True)
class CommandLine:
    """One `llmroute ...` invocation: its words after `llmroute`, where it is written,
    and whether it is a code span of the prose (which may show a command in part)."""

    where: str
    text: str
    args: tuple[str, ...]
    inline: bool = False
    unreadable: str | None = None  # why the line is not shell words


def blocks(page: str) -> list[Block]:
    """Every fenced block of `page`, with the docs-test marker directly above it."""
    lines = (ROOT / page).read_text().split("\n")
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        ticks, lang, start = fence.group(1), fence.group(2), i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != ticks:
            body.append(lines[i])
            i += 1
        marker = _MARKER.match(lines[start - 1]) if start else None
        if marker is not None and marker.group(1) not in MARKERS:
            raise ValueError(
                f"{page}:{start}: unknown docs-test marker {marker.group(1)!r} "
                f"(known: {', '.join(MARKERS)})"
            )
        found.append(
            Block(
                page=page,
                line=start + 1,
                lang=lang,
                text="\n".join(body) + "\n",
                marker=marker.group(1) if marker else None,
                reason=(marker.group(2) or "") if marker else "",
            )
        )
        i += 1
    return found


def all_blocks(*langs: str) -> list[Block]:
    return [b for page in PAGES for b in blocks(page) if not langs or b.lang in langs]


# ---------------------------------------------------------------------- command lines

SHELL_LANGS = ("bash", "sh", "shell", "console")
_OPERATORS = {"|", "||", "&&", ";", "&", "(", ")"}
_REDIRECTS = {">", ">>", "<", "2>", "&>"}


def _words(line: str) -> list[str]:
    """`line` as shell words, with the operators (| && ; > ...) as words of their own
    and comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _invocations(words: list[str]) -> Iterator[list[str]]:
    """The simple commands among `words` that run llmroute, each as its arguments."""
    command: list[str] = []
    for word in [*words, ";"]:
        if word in _OPERATORS:
            for at, first in enumerate(command):
                if first == "llmroute" or first.endswith("/llmroute"):
                    yield command[at + 1 :]
                    break
                if first == "-m" and command[at + 1 : at + 2] == ["llmroute"]:
                    yield command[at + 2 :]
                    break
                if "=" not in first and first not in ("sudo", "env", "exec", "time"):
                    break  # another program, or its arguments
            command = []
        else:
            command.append(word)


def _args(words: list[str]) -> list[str]:
    """Redirections (``> file``) left out, and the usage syntax of optional parts
    (``[--since 24h]``) read as the words it shows."""
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in _REDIRECTS:
            skip = True
        else:
            stripped = word.lstrip("[").rstrip("]")
            if stripped:
                out.append(stripped)
    return out


def shell_lines(text: str) -> Iterator[tuple[int, str]]:
    """`text`'s command lines, each with the index of its first line in `text`: lines
    continued (a trailing backslash, or a single-quoted string left open, as a curl
    body over several lines) joined, a console prompt (``$ ``) removed, the output lines
    of a console block (no prompt) left out."""
    prompted = any(line.startswith("$ ") for line in text.splitlines())
    pending, start = "", 0
    for index, raw in enumerate(text.splitlines()):
        if not pending:
            start = index
        line = pending + raw
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if _open_quote(line):
            pending = line + " "
            continue
        pending = ""
        if prompted:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        yield start, line
    if pending:
        yield start, pending


def _open_quote(line: str) -> bool:
    try:
        _words(line)
    except ValueError:
        return True
    return False


def commands_in_text(
    text: str, page: str, first: int, *, inline: bool = False
) -> list[CommandLine]:
    """The llmroute commands of `text`, whose first line is line `first` of `page`."""
    found = []
    for index, line in shell_lines(text):
        if "llmroute" not in line:
            continue
        where = f"{page}:{first + index}"
        try:
            words = _words(line)
        except ValueError as exc:  # an unclosed quote
            found.append(CommandLine(where, line.strip(), (), inline, unreadable=str(exc)))
            continue
        for invocation in _invocations(words):
            found.append(CommandLine(where, line.strip(), tuple(_args(invocation)), inline))
    return found


_SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def _prose(page: str) -> Iterator[tuple[int, str]]:
    """`page`'s text outside fenced blocks, as (line number of each line, line)."""
    inside: str | None = None
    for number, line in enumerate((ROOT / page).read_text().split("\n"), start=1):
        fence = _FENCE.match(line)
        if inside is None and fence is not None:
            inside = fence.group(1)
        elif inside is not None and line.strip() == inside:
            inside = None
        elif inside is None:
            yield number, line


def inline_commands(page: str) -> list[CommandLine]:
    """The prose's code spans that start with `llmroute ` (a span may wrap a line)."""
    numbered = list(_prose(page))
    text = "\n".join(line for _, line in numbered)
    starts = [0]
    for _, line in numbered:
        starts.append(starts[-1] + len(line) + 1)
    found = []
    for span in _SPAN.finditer(text):
        words = " ".join(span.group(1).split())
        if not words.startswith("llmroute "):
            continue
        index = max(i for i, s in enumerate(starts) if s <= span.start())
        found.extend(commands_in_text(words, page, numbered[index][0], inline=True))
    return found


def all_commands() -> list[CommandLine]:
    found: list[CommandLine] = []
    for page in PAGES:
        for block in blocks(page):
            if block.lang in SHELL_LANGS and block.marker != "skip":
                found.extend(commands_in_text(block.text, block.page, block.line + 1))
            elif block.lang == "yaml":
                found.extend(_yaml_commands(block))
        found.extend(inline_commands(page))
    return found


def _yaml_commands(block: Block) -> list[CommandLine]:
    """llmroute command lines written as a YAML string (a CI job's ``run:`` step)."""
    import yaml

    found: list[CommandLine] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and re.search(r"(^|[\s;&|])llmroute\s", value):
            found.extend(commands_in_text(" ".join(value.split()), block.page, block.line))

    walk(yaml.safe_load(block.text))
    return found


def choices(param: Any) -> tuple[tuple[str, ...], bool] | None:
    """The values `param` (a click parameter) takes when they are a fixed set (an Enum
    or Literal type, a click.Choice), with whether their case matters; None when any
    value is taken. Newer typers (0.25+) hold the type in ``type_descriptor``, older
    ones in click's ``type``."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        found, case_sensitive = descriptor.choices, descriptor.case_sensitive
    else:
        kind = getattr(param, "type", None)
        found, case_sensitive = (
            getattr(kind, "choices", None),
            getattr(kind, "case_sensitive", True),
        )
    if found is None:
        return None
    values = tuple(str(getattr(choice, "value", choice)) for choice in found)
    return values, bool(case_sensitive)


_PLACEHOLDER = re.compile(r"[<$]|\.\.\.|…")


def is_placeholder(value: str) -> bool:
    """Whether an option's value as the docs write it stands for one the reader picks:
    upper-case (``FILE``, ``DIR``, ``N``), ``<name>``, ``$VAR``, ``...``."""
    return bool(_PLACEHOLDER.search(value)) or (value.upper() == value and value.lower() != value)


def _wrong_values(cmd: Any, opts: dict[str, Any]) -> str | None:
    """The first value in `opts` (the parser's, by parameter name) that is none of its
    option's choices, said as the command line would say it; placeholders pass."""
    for param in cmd.params:
        allowed = choices(param)
        if allowed is None or opts.get(param.name) is None:
            continue
        values, case_sensitive = allowed
        given = opts[param.name]
        for value in given if isinstance(given, (list, tuple)) else [given]:
            if is_placeholder(value):
                continue
            fold = (lambda text: text) if case_sensitive else str.casefold
            if fold(value) not in {fold(v) for v in values}:
                return (
                    f"Invalid value for {param.opts[0]!r}: {value!r} is not one of "
                    f"{', '.join(map(repr, values))}"
                )
    return None


def check_command(root: Any, command: CommandLine) -> str | None:
    """What is wrong with `command` as the app `root` (a click command) reads it: an
    unknown sub-command or option, an option without its value, a value that is none of
    an option's choices (`choices`; placeholders aside), a word too many; None when
    nothing is. A code span of the prose may stop before an option's value (``llmroute
    eval --compare``): that alone is not an error there."""
    if command.unreadable is not None:
        return f"not shell words: {command.unreadable}"
    args = list(command.args)
    cmd, ctx, path = root, None, ["llmroute"]
    while True:
        ctx = cmd.context_class(cmd, info_name=path[-1], parent=ctx)
        parser = cmd.make_parser(ctx)
        try:
            opts, rest, _ = parser.parse_args(args=list(args))
        except Exception as exc:  # click's usage errors (the vendored copy's, too)
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            if command.inline and "requires an argument" in message:
                return None
            return f"`{' '.join(path)}`: {message}"
        wrong = _wrong_values(cmd, opts)
        if wrong is not None:
            return f"`{' '.join(path)}`: {wrong}"
        if hasattr(cmd, "commands") and rest:
            name, args = rest[0], rest[1:]
            sub = cmd.get_command(ctx, name)
            if sub is None:
                known = ", ".join(sorted(cmd.commands))
                return f"`{' '.join(path)}` has no command {name!r} (it has: {known})"
            cmd = sub
            path.append(name)
            continue
        if rest:
            return f"`{' '.join(path)}`: unexpected argument(s) {rest}"
        return None


# ------------------------------------------------------------------- registry blocks

REQUIRED = ("providers", "models", "routes", "default")

# The base a registry fragment is merged onto: the names the docs' fragments refer to
# without defining them (a pool's usual providers, models and routes).
_BASE_PROVIDERS = (
    "base",  # the base's own models': a fragment may redefine any other
    "local",
    "openai",
    "openai-east",
    "azure",
    "anthropic",
    "vllm",
    "vllm-a",
    "vllm-b",
)
_BASE_MODELS = (
    "small",
    "medium",
    "large",
    "mid",
    "judge",
    "picker",
    "hosted",
    "local",
    "local-small",
    "local-large",
)
_BASE_ROUTES = ("code", "math", "chitchat", "billing")


def base_registry() -> dict[str, Any]:
    models: dict[str, Any] = {
        name: {"provider": "base", "model": f"m-{name}"} for name in _BASE_MODELS
    }
    models["embed"] = {"provider": "base", "model": "m-embed", "kind": "embedding"}
    return {
        "encoder": "builtin:static",
        "providers": {
            name: {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}
            for name in _BASE_PROVIDERS
        },
        "models": models,
        "routes": [
            {"name": name, "examples": [f"an example of {name}"], "target": "small"}
            for name in _BASE_ROUTES
        ],
        "default": {"target": "small"},
    }


def is_whole(document: Any) -> bool:
    """A block that names its encoder or version, or has every required section, is a
    whole registry and loads alone; any other is a fragment of one."""
    return isinstance(document, dict) and (
        "encoder" in document or "version" in document or all(k in document for k in REQUIRED)
    )


def _merge(base: Any, fragment: Any) -> Any:
    if isinstance(base, dict) and isinstance(fragment, dict):
        merged = dict(base)
        for key, value in fragment.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return fragment


def merged(fragment: dict[str, Any]) -> dict[str, Any]:
    """`fragment` merged onto the base: its providers and models replace the base's of
    their names; a route entry is merged onto the base's route of its name (a fragment
    may show only the keys it is about) or added; any other section is the fragment's.
    The fragment's routes come first, so that ``routes[i]`` is the same in both."""
    registry = base_registry()
    for key, value in fragment.items():
        if key in ("providers", "models") and isinstance(value, dict):
            registry[key] = {**registry[key], **value}
        elif key == "routes" and isinstance(value, list):
            base = {route["name"]: route for route in registry["routes"]}
            routes = []
            for route in value:
                name = route.get("name") if isinstance(route, dict) else None
                routes.append(_merge(base.pop(name), route) if name in base else route)
            registry["routes"] = routes + list(base.values())
        else:
            registry[key] = value
    return copy.deepcopy(registry)


_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def yaml_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """The 1-based line of each key and list item of the YAML `text`, by path."""
    import yaml

    lines: dict[tuple[str | int, ...], int] = {}

    def walk(node: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[(*path, key.value)] = key.start_mark.line + 1
                walk(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                lines[(*path, i)] = value.start_mark.line + 1
                walk(value, (*path, i))

    walk(yaml.compose(text), ())
    return lines


def line_of(field: str | None, lines: dict[tuple[str | int, ...], int]) -> int | None:
    """The line of `field` (``models.m.price``, ``routes[0].target``) or of the nearest
    part of it that `lines` has."""
    if not field:
        return None
    path: tuple[str | int, ...] = tuple(
        int(index) if index else name for name, index in _SEGMENT.findall(field)
    )
    if path[:2] not in lines:
        return None  # a part of the base
    while path not in lines:
        path = path[:-1]
    return lines[path]


# ---------------------------------------------------------------------- JSON blocks


def json_values(text: str) -> list[Any]:
    """A block of JSON: one value (which may span lines), else JSON Lines."""
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number} of the block: {exc}") from exc
    return values


def curl_bodies(text: str) -> list[tuple[int, str, str]]:
    """(the index of its line in `text`, the URL's path, the body) of each curl command
    of a shell block that sends a body (``-d``/``--data``)."""
    bodies = []
    for index, line in shell_lines(text):
        if "curl" not in line:
            continue
        words = _words(line)
        url = next((w for w in words if "://" in w or w.startswith(("localhost", "127."))), "")
        path = "/" + url.split("://")[-1].partition("/")[2].partition("?")[0]
        for i, word in enumerate(words[:-1]):
            if word in ("-d", "--data", "--data-raw", "--data-binary") and not words[
                i + 1
            ].startswith("@"):
                bodies.append((index, path, words[i + 1]))
    return bodies


# -------------------------------------------------------------------- option tables


@dataclass(frozen=True)
class OptionTable:
    """A table whose first column is ``option``: the options of the command that the
    nearest ``llmroute`` command block above it runs, a row each."""

    where: str
    command: CommandLine
    rows: tuple[tuple[int, tuple[str, ...]], ...]  # (line, the options the row names)


_OPTION = re.compile(r"`(-[\w-]+(?:/-[\w-]+)?)`")


def option_tables(page: str) -> list[OptionTable]:
    lines = (ROOT / page).read_text().split("\n")
    shown = {b.line: b for b in blocks(page) if b.lang in SHELL_LANGS}
    tables = []
    last: CommandLine | None = None
    number = 0
    while number < len(lines):
        if number + 1 in shown:
            shell = shown[number + 1]
            found = commands_in_text(shell.text, page, shell.line + 1)
            last = found[0] if found else last
        cells = [c.strip() for c in lines[number].strip().strip("|").split("|")]
        if lines[number].startswith("|") and cells[0] == "option" and last is not None:
            start, rows = number + 1, []
            number += 2  # the header and its |---| line
            while number < len(lines) and lines[number].startswith("|"):
                first = lines[number].strip().strip("|").split("|")[0]
                names = tuple(n for m in _OPTION.findall(first) for n in m.split("/"))
                rows.append((number + 1, names))
                number += 1
            tables.append(OptionTable(f"{page}:{start}", last, tuple(rows)))
            continue
        number += 1
    return tables
