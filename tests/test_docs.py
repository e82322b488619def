"""The docs are tested like code: every `llmroute ...` command line of README.md and
docs/*.md names a command and options the command line has, every ```yaml registry
(whole, or a fragment merged onto a small base) loads through the real loader, without
a warning of `registry check`, and builds into a router (with the offline static
encoder), every
```python block compiles (and those marked to run, run and print what they say), and
every ```json block and curl body parses. Conventions: tests/support/docs_blocks.py."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import tokenize
from pathlib import Path
from typing import Any

import docs_blocks as docs
import pytest
import typer.main
import yaml
from docs_blocks import Block, CommandLine

from llmroute.cli import app
from llmroute.decide import Router
from llmroute.encoders import load_builtin
from llmroute.encoders.base import Encoder
from llmroute.errors import ConfigError
from llmroute.gates.build import GateFactory
from llmroute.registry import LoadedRegistry, parse_registry
from llmroute.registry.cases import parse_cases
from llmroute.registry.lint import lint
from llmroute.server.errors import GatewayError
from llmroute.server.feedback import parse_feedback
from llmroute.server.rerank import require_rerank

ROOT = docs.ROOT
ROOT_COMMAND = typer.main.get_command(app)


def _ids(items: list[Any]) -> list[str]:
    return [getattr(item, "where", "?") for item in items]


COMMANDS = docs.all_commands()


def test_the_docs_have_what_this_file_checks() -> None:
    """Guards against an extraction that finds nothing and so passes vacuously."""
    assert len(COMMANDS) > 150
    assert sum(not c.inline for c in COMMANDS) > 40
    assert len(docs.all_blocks("yaml")) > 30 and len(docs.all_blocks("python")) > 20
    assert len(docs.all_blocks("json")) >= 4


@pytest.mark.parametrize("command", COMMANDS, ids=_ids(COMMANDS))
def test_command_line(command: CommandLine) -> None:
    problem = docs.check_command(ROOT_COMMAND, command)
    assert problem is None, f"{command.where}: {command.text!r}: {problem}"


def test_the_command_check_catches_what_it_is_for() -> None:
    def problem(text: str, *, inline: bool = False) -> str | None:
        (command,) = docs.commands_in_text(text, "x.md", 1, inline=inline)
        return docs.check_command(ROOT_COMMAND, command)

    assert problem("llmroute route -r r.yaml --json 'hi'") is None
    assert problem("printf 'a' | llmroute route --explain  # why") is None
    assert problem("llmroute report shadow --registry r.yaml [--since 7d] [--json]") is None
    assert "No such option: --nope" in (problem("llmroute route --nope") or "")
    assert "no command 'rout'" in (problem("llmroute rout -r r.yaml") or "")
    assert "requires an argument" in (problem("llmroute eval --compare") or "")
    assert problem("llmroute eval --compare", inline=True) is None
    assert "unexpected" in (problem("llmroute registry check a.yaml b.yaml") or "")
    # an option's value among its choices, whichever way the CLI declares them
    assert problem("llmroute serve --log-format json --log-level Warning") is None
    assert problem("llmroute bench-cascade -d d.jsonl --router Knn --gate oracle") is None
    yaml_logs = problem("llmroute serve --log-format yaml")
    assert "'yaml' is not one of 'text', 'json'" in (yaml_logs or "")
    wrong = problem("llmroute bench-cascade -d d.jsonl --router knn --gate learnt")
    assert "Invalid value for '--gate': 'learnt'" in (wrong or "")
    assert "'message' is not one of" in (problem("llmroute report --since 1h --api message") or "")
    assert "'val' is not one of 'all'" in (problem("llmroute eval-safety -d d --split val") or "")
    # placeholders stand for a value the reader picks
    for value in ("SPLIT", "<split>", "$SPLIT", "..."):
        assert problem(f"llmroute bench --router r -d d --split '{value}'") is None, value


def test_every_option_with_fixed_values_declares_them() -> None:
    """The values an option takes are the CLI's own choices (an Enum), so that --help
    lists them and `test_command_line` checks the docs' values: none are str options
    checked later in the command's body."""
    declared = {
        (" ".join(path), option)
        for path, command in _commands(ROOT_COMMAND, ["llmroute"])
        for param in command.params
        if docs.choices(param) is not None
        for option in param.opts
        if option.startswith("--")
    }
    assert {
        ("llmroute serve", "--log-level"),
        ("llmroute serve", "--log-format"),
        ("llmroute calibrate", "--split"),
        ("llmroute bench", "--split"),
        ("llmroute bench-cascade", "--gate"),
        ("llmroute bench-cascade", "--split"),
        ("llmroute bench-cascade", "--router"),
        ("llmroute train difficulty", "--router"),
        ("llmroute eval-safety", "--split"),
        ("llmroute report", "--api"),
        ("llmroute export", "--api"),
        ("llmroute registry from-examples", "--method"),
    } <= declared


def _commands(command: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, [*path, name])
    return found


def test_every_option_is_in_the_docs() -> None:
    """Each option of each command is named somewhere in README.md or docs/ (a `--no-x`
    by its `--x`; one with a short form, `-o`, may be shown so in the command's lines):
    `bench-cascade --weak`/`--strong`, `train gate --refit` and `eval-safety
    --threshold` were found only by `--help`."""
    import re

    text = "\n".join((ROOT / page).read_text() for page in docs.PAGES)

    def shown(path: list[str], options: tuple[str, ...]) -> bool:
        words = path[1:]
        if any(re.search(re.escape(o) + r"(?![\w-])", text) for o in options if o[:2] == "--"):
            return True
        lines = [c for c in COMMANDS if list(c.args[: len(words)]) == words]
        return any(o in c.args for c in lines for o in options)

    missing = [
        f"{' '.join(path)} {param.opts[0]}"
        for path, command in _commands(ROOT_COMMAND, ["llmroute"])
        for param in command.params
        if param.opts[0] not in ("--help",) and param.opts[0].startswith("-")
        if not shown(path, (*param.opts, *param.secondary_opts))
    ]
    assert not missing, f"options --help lists and no page names: {missing}"


def test_every_variable_of_the_uvicorn_factory_is_in_the_docs() -> None:
    """`uvicorn --factory llmroute.server.app:app_from_env` reads its settings from
    variables; each is named in docs/gateway.md. `$LLMROUTE_BIND_HOST`, without which a
    loopback gateway under uvicorn makes no Host check, was not. Two are `serve`'s own
    plumbing to its workers: the worker count, and the graceful timeout (uvicorn's)."""
    from llmroute.server import settings

    plumbing = {settings.WORKERS_ENV, settings.GRACEFUL_TIMEOUT_ENV}
    variables = {
        value
        for name, value in vars(settings).items()
        if name.endswith("_ENV") and isinstance(value, str)
    }
    assert len(variables) > 10
    text = (ROOT / "docs/gateway.md").read_text()
    missing = sorted(v for v in variables - plumbing if f"${v}" not in text)
    assert not missing, f"docs/gateway.md names no {missing}"


# ------------------------------------------------------------------------------ YAML

YAML_BLOCKS = docs.all_blocks("yaml")


def _located(exc: ConfigError, block: Block, *, fragment: bool) -> str:
    """Each problem at its line of the page: a whole registry's errors carry their line
    in the block; a merged fragment's are found again in the fragment by their field."""
    lines = docs.yaml_lines(block.text)
    out = []
    for error in getattr(exc, "errors", (exc,)):
        line = docs.line_of(error.field, lines) if fragment else error.line
        where = f"{block.page}:{block.line + line}" if line else f"{block.where} (the base)"
        field = f"{error.field}: " if error.field else ""
        out.append(f"{where}: {field}{error.message}")
    kind = "registry fragment (merged onto tests/support/docs_blocks.py's base)"
    return f"the {kind if fragment else 'registry'} at {block.where} does not load:\n" + (
        "\n".join(out)
    )


@pytest.fixture(scope="module")
def static_encoder() -> Encoder:
    return load_builtin("static")


def _build(loaded: LoadedRegistry, encoder: Encoder, cache_dir: Path) -> None:
    """Build what `serve` builds from the registry (its layers, a cascade's gates) with
    the offline static encoder in place of the one it names."""
    router = Router(loaded, encoder=encoder, cache_dir=cache_dir)
    try:
        GateFactory(loaded.registry, encoder=encoder, base_dir=loaded.base_dir).preload()
    finally:
        router.close()


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=_ids(YAML_BLOCKS))
def test_yaml_block(block: Block, static_encoder: Encoder, tmp_path: Path) -> None:
    try:
        document = yaml.safe_load(block.text)
    except yaml.YAMLError as exc:
        pytest.fail(f"{block.where}: not valid YAML: {exc}")
    if block.marker == "skip":
        assert block.reason, f"{block.where}: a skip marker says why"
        return
    assert isinstance(document, dict), f"{block.where}: not a mapping"
    problem = None
    if "cases" in document and not {"models", "routes"} & document.keys():
        # routing cases, against the example registry whose names they use
        example = (ROOT / "examples" / "registry.yaml").read_text()
        registry = parse_registry(example, source="examples/registry.yaml").registry
        try:
            parse_cases(block.text, registry, source=block.page)
        except ConfigError as exc:
            problem = _located(exc, block, fragment=False)
    else:
        fragment = not docs.is_whole(document)
        text = yaml.safe_dump(docs.merged(document)) if fragment else block.text
        try:
            loaded = parse_registry(text, source=block.page, base_dir=ROOT)
            if block.marker != "load-only":
                _build(loaded, static_encoder, tmp_path)
        except ConfigError as exc:
            problem = _located(exc, block, fragment=fragment)
        else:  # a reader copies the example: it must not be one `registry check` warns about
            warned = lint(loaded.registry)
            if warned:
                problem = f"{block.where}: `registry check` warns:\n" + "\n".join(warned)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


# ---------------------------------------------------------------------------- Python

PYTHON_BLOCKS = docs.all_blocks("python")


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=_ids(PYTHON_BLOCKS))
def test_python_block_compiles(block: Block) -> None:
    try:
        compile(block.text, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as exc:
        pytest.fail(f"{block.page}:{block.line + (exc.lineno or 0)}: {exc.msg}")


RUN_BLOCKS = [b for b in PYTHON_BLOCKS if b.marker == "run"]


def _comments(text: str) -> dict[int, str]:
    """Each line's trailing comment, by line number."""
    lines = io.StringIO(text).readline
    return {
        tok.start[0]: tok.string[1:].strip()
        for tok in tokenize.generate_tokens(lines)
        if tok.type == tokenize.COMMENT
    }


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=_ids(RUN_BLOCKS))
def test_python_block_runs(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    comments = _comments(block.text)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for statement in ast.parse(block.text).body:
        line = block.line + statement.lineno
        said = comments.get(statement.end_lineno or statement.lineno)
        if not isinstance(statement, ast.Expr) or said is None:
            code = compile(ast.Module([statement], []), block.where, "exec")
            with contextlib.redirect_stdout(io.StringIO()):
                exec(code, namespace)
            continue
        call = statement.value
        printed = (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "print"
            and len(call.args) == 1
        )
        expression = call.args[0] if printed and isinstance(call, ast.Call) else call
        value = eval(compile(ast.Expression(expression), block.where, "eval"), namespace)
        shown = str(value) if printed else repr(value)
        assert shown == said, f"{block.page}:{line}: gives {shown!r}, the comment says {said!r}"


# ------------------------------------------------------------------------------ JSON

JSON_BLOCKS = docs.all_blocks("json")


@pytest.mark.parametrize("block", JSON_BLOCKS, ids=_ids(JSON_BLOCKS))
def test_json_block(block: Block) -> None:
    if block.marker == "skip":
        assert block.reason, f"{block.where}: a skip marker says why"
        return
    try:
        assert docs.json_values(block.text)
    except ValueError as exc:
        pytest.fail(f"{block.where}: not JSON: {exc}")


CURL_BLOCKS = [b for b in docs.all_blocks(*docs.SHELL_LANGS) if docs.curl_bodies(b.text)]


def _feedback(body: dict[str, Any]) -> None:
    parse_feedback(body, now=0.0)


# the gateway's own checks of a request body, by path: a body shown for one must pass them
REQUEST_CHECKS = {"/v1/feedback": _feedback, "/v1/rerank": require_rerank}


@pytest.mark.parametrize("block", CURL_BLOCKS, ids=_ids(CURL_BLOCKS))
def test_curl_body(block: Block) -> None:
    for index, path, body in docs.curl_bodies(block.text):
        where = f"{block.page}:{block.line + 1 + index}"
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{where}: the request body is not JSON: {exc}\n{body}")
        check = REQUEST_CHECKS.get(path)
        if check is not None:
            try:
                check(value)
            except GatewayError as exc:
                pytest.fail(f"{where}: POST {path} would answer {exc.status}: {exc}")


def test_curl_bodies_are_checked() -> None:
    paths = {path for b in CURL_BLOCKS for _, path, _ in docs.curl_bodies(b.text)}
    assert set(REQUEST_CHECKS) <= paths


def test_markers_are_rare() -> None:
    marked = [b for page in docs.PAGES for b in docs.blocks(page) if b.marker == "skip"]
    assert len(marked) <= 5, [b.where for b in marked]


TABLES = [t for page in docs.PAGES for t in docs.option_tables(page)]


def _command_of(table: docs.OptionTable) -> tuple[Any, str]:
    """The click command the table is about, and its name (``llmroute serve``)."""
    cmd, ctx, path = ROOT_COMMAND, None, ["llmroute"]
    for word in table.command.args:
        if not hasattr(cmd, "commands"):
            break
        ctx = cmd.context_class(cmd, parent=ctx)
        cmd = cmd.get_command(ctx, word)
        path.append(word)
    return cmd, " ".join(path)


@pytest.mark.parametrize("table", TABLES, ids=_ids(TABLES))
def test_option_table(table: docs.OptionTable) -> None:
    """Each row names options of the command, and each option of it has a row."""
    command, name = _command_of(table)
    has = {option for p in command.params for option in (*p.opts, *p.secondary_opts)}
    named = {option for _, options in table.rows for option in options}
    where = f"{table.where} (the options of `{name}`)"
    for line, options in table.rows:
        assert options, f"{where}: the row at line {line} names no option"
        for option in options:
            assert option in has, f"{where}: the row at line {line} names {option}: no such option"
    missing = sorted(
        p.opts[0]
        for p in command.params
        if p.opts[0].startswith("--") and not named & {*p.opts, *p.secondary_opts}
    )
    assert not missing, f"{where}: no row for {', '.join(missing)}"


def test_option_tables_are_found() -> None:
    assert any(t.where.startswith("docs/gateway.md") for t in TABLES)


def _endpoints_table() -> str:
    """docs/gateway.md's Endpoints section up to its first subsection: the table."""
    text = (ROOT / "docs/gateway.md").read_text()
    return text.split("\n## Endpoints\n", 1)[1].split("\n### ", 1)[0]


def test_the_endpoints_table_names_every_path_the_gateway_serves() -> None:
    """Each route of the gateway (dashboard included) has its path, up to its first
    parameter, in the table: `POST /v1/feedback` was served and missing from it."""
    from llmroute.server.app import create_app
    from llmroute.server.settings import ServeSettings

    table = _endpoints_table()
    app = create_app("registry.yaml", ServeSettings(dashboard=True))
    paths = {route.path.split("{", 1)[0].rstrip("/") for route in app.routes}  # type: ignore[attr-defined]
    assert len(paths) > 20
    missing = sorted(p for p in paths if not any(f"{p}{end}" in table for end in "`/?"))
    assert not missing, f"docs/gateway.md#endpoints has no row for {missing}"
