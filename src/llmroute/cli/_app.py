"""The typer app, shared options and the error boundary of the command line."""

from __future__ import annotations

import errno
import inspect
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from llmroute.errors import LlmrouteError, counted

if TYPE_CHECKING:
    from llmroute.registry.schema import Registry

__all__ = [
    "RegistryOption",
    "app",
    "check_plot_path",
    "check_port",
    "check_telemetry_url",
    "counted",
    "data_file",
    "err_console",
    "fail",
    "given_as",
    "print_error",
    "reflow_help",
    "registry_app",
    "resolve_registry",
    "run",
    "unknown_client",
]

app = typer.Typer(
    name="llmroute",
    help="A fast, explainable semantic router for pools of LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
registry_app = typer.Typer(
    help="Check, test, compare, probe and build route registries.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")


def _print_version(value: bool) -> None:
    if value:
        from llmroute import __version__

        typer.echo(f"llmroute {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """The options before a command (``llmroute --version``)."""


_NUMBERED = re.compile(r"\d+[.)] ")


def _reflowed(doc: str) -> str:
    """`doc` with each paragraph's lines joined, so that help is wrapped to the terminal
    rather than at the docstring's line ends; list items ("- ", "* ", "1. ") and indented
    lines keep their own line (a line that merely starts with a number, "5-fold ...",
    does not)."""
    paragraphs = []
    for paragraph in doc.strip().split("\n\n"):
        lines = paragraph.splitlines()
        out = lines[:1]
        for line in lines[1:]:
            kept = line.startswith((" ", "-", "*")) or _NUMBERED.match(line) is not None
            if kept:
                out.append(line)
            else:
                out[-1] = f"{out[-1]} {line}"
        paragraphs.append("\n".join(out))
    return "\n\n".join(paragraphs)


def reflow_help(group: typer.Typer) -> None:
    """Give every command of `group` (and of its sub-groups) its docstring, reflowed, as
    its help: Typer shows a docstring's line breaks as they are."""
    for command in group.registered_commands:
        doc = inspect.getdoc(command.callback) if command.callback is not None else None
        if command.help is None and doc:
            command.help = _reflowed(doc)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            reflow_help(sub.typer_instance)


# emoji=False: ":100:" in "registry.yaml:100: ..." must not print as an emoji
err_console = Console(stderr=True, highlight=False, emoji=False)

RegistryOption = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        "-r",
        help="Route registry YAML (default: $LLMROUTE_REGISTRY, else ./registry.yaml).",
        show_default=False,
    ),
]


def find_registry(path: Path | None) -> Path | None:
    """`path`, else ``$LLMROUTE_REGISTRY`` (failing when it names no file), else
    ``./registry.yaml`` when it exists."""
    if path is not None:
        return path
    env = os.environ.get("LLMROUTE_REGISTRY")
    if env:
        if not Path(env).exists():  # else "nope.yaml: cannot read", naming no variable
            fail(f"$LLMROUTE_REGISTRY names {env}, which does not exist")
        return Path(env)
    local = Path("registry.yaml")
    return local if local.exists() else None


def resolve_registry(path: Path | None) -> Path:
    found = find_registry(path)
    if found is not None:
        return found
    fail(
        "no registry given: pass --registry FILE, set LLMROUTE_REGISTRY or run where a "
        "registry.yaml is (`llmroute init` writes one to start from)"
    )


def unknown_client(client: str | None, registry: Registry | None) -> str:
    """When `--client` names a key the registry's `auth` section lacks (a typo reads as
    a key that made no requests, or whose requests are erased), the words that say so,
    for a result with nothing in it; else nothing. A key since removed may still have
    rows: only an empty result says this."""
    auth = registry.auth if registry is not None else None
    if not client or auth is None:
        return ""
    names = sorted(k.name for k in auth.keys)
    if client in names:
        return ""
    return f"; no client key {client!r} in the registry (its keys: {', '.join(names)})"


def check_plot_path(path: Path | None, suffixes: tuple[str, ...]) -> None:
    """Refuse a --plot file of a format the command cannot write, before any work."""
    if path is not None and path.suffix.lower() not in suffixes:
        allowed = (
            " or ".join((", ".join(suffixes[:-1]), suffixes[-1])) if suffixes[1:] else suffixes[0]
        )
        fail(f"--plot must end in {allowed}, got {path}")


def check_artifact_output(path: Path, writes: str) -> None:
    """Before any training: refuse an `-o` that is a file (it was found once the training
    time was spent) or that holds another kind of artifact than the command's, whose
    description file is `writes`, and say when it replaces one of its own kind."""
    from llmroute.artifact_files import held_artifact, replaced_artifact

    if str(path) == "-":  # not standard output: it made a folder named "-"
        fail("-o -: the artifact is a directory of files; name the directory to write")
    if path.exists() and not path.is_dir():
        fail(f"-o {path} is a file; it names the directory to write the artifact into")
    held = held_artifact(path, writes) if path.is_dir() else None
    if held is not None:
        fail(
            f"-o {path} holds {held}; this command writes another kind of artifact, whose "
            "files would be mixed with it: name another folder, or remove that one first"
        )
    replaced = replaced_artifact(path, writes) if path.is_dir() else None
    if replaced is not None:  # other files there (a registry beside it) are left alone
        err_console.print(f"note: replacing {replaced} in {escape(str(path))}", soft_wrap=True)


def data_file(path: Path, option: str = "--data") -> None:
    """Refuse ``-`` (standard input, which the data readers take) where the data must be a
    file: a trained artifact records the file's name and SHA-256, by which `bench` and
    `calibrate` tell its held-out rows; read from a pipe, none could be recorded or
    checked, and the error came once the training time was spent."""
    if str(path) == "-":
        fail(
            f"{option} -: this command reads its data from a file (an artifact records the "
            "file's name and SHA-256 to find its held-out rows); save the data to a file "
            "and name it"
        )


def check_port(host: str, port: int) -> int:
    """`port`, or for 0 a free one (to say and listen on); fail with one line when
    HOST:PORT cannot be listened on (in use, an address this machine does not have),
    before uvicorn starts: it would log the error among its start-up lines and exit 3,
    after the application's start-up had run."""
    from llmroute.server.workers import free_port

    try:
        return free_port(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def check_telemetry_url(url: str, source: str) -> str:
    """`url`, or a one-line failure naming where it came from (``--url``,
    ``$LLMROUTE_TELEMETRY_URL``) when no store opens it: the registry's
    ``telemetry.url`` is checked at its load, with its file and line."""
    from llmroute.errors import ConfigError
    from llmroute.telemetry.store.url import check_store_url

    if url.strip().lower() in ("off", "none"):  # store_url's error offers "off" as a URL
        fail(
            f"{source}: {url.strip()!r} turns the decision log off, and this command reads "
            "one: give its sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    try:
        check_store_url(url)
    except ConfigError as exc:
        fail(f"{source}: {exc.message}")
    return url


def given_as(ctx: typer.Context, param: str, flag: str, envvar: str) -> str:
    """How the command's `param` was given, for its errors: ``$ENVVAR`` when its value
    came from the environment, else `flag` (naming the flag for a variable's value sent
    the reader to a command line that held none of it)."""
    source = ctx.get_parameter_source(param)
    return f"${envvar}" if source is not None and source.name == "ENVIRONMENT" else flag


def fail(message: str, code: int = 2) -> NoReturn:
    print_error(message)
    raise typer.Exit(code)


def print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


DEBUG_ENV = "LLMROUTE_DEBUG"


def _traceback_if_debugging() -> None:
    """With ``LLMROUTE_DEBUG=1`` the one-line errors below come with their traceback
    first: a bug that surfaces as an `OSError` or one of ours is then not hidden."""
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        import traceback

        traceback.print_exc()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; our own errors and those of the files it reads or writes print one
    clean line (no traceback, unless ``LLMROUTE_DEBUG`` is set) and exit 2."""
    try:
        # Without standalone mode click returns the code of a `typer.Exit` instead of
        # exiting, and lets our own exceptions through to the handlers below.
        code = app(args=argv, prog_name="llmroute", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except SystemExit as exc:
        # click itself turns a broken pipe into exit 1 (having made stdout and stderr
        # ignore the flush at exit): output piped into `head` and closed early is not
        # an error, as below
        if getattr(exc.__context__, "errno", None) == errno.EPIPE:
            return 0
        raise
    except LlmrouteError as exc:
        _traceback_if_debugging()
        print_error(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error.
        sys.stderr.close()
        return 0
    except OSError as exc:
        # A file the command was told to read or write (`-o`, `--plot`): a missing
        # folder, no permission, a full disk. Say which, without a traceback.
        _traceback_if_debugging()
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print_error(f"{where}{exc.strerror or exc}")
        return 2
    except Exception as exc:
        # click's exceptions, whether from click itself or the copy newer typers vendor
        # (typer._click): usage errors print their usage line, an abort is Ctrl-C.
        if type(exc).__name__ == "Abort":
            return 130
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            _drop_pydantic_prefix(exc)
            show()
            return exit_code
        raise
    return code if isinstance(code, int) else 0


_PYDANTIC_PREFIX = "Value error, "


def _drop_pydantic_prefix(exc: Exception) -> None:
    """Typer checks option values with pydantic, which prefixes a validator's message
    with its error type: "Invalid value for '--router': Value error, 'bogus' is not one
    of ...". The user needs the message alone."""
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message.startswith(_PYDANTIC_PREFIX):
        exc.message = message[len(_PYDANTIC_PREFIX) :]  # type: ignore[attr-defined]
