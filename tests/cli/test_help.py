"""`llmroute --version` and the help text, as a user sees them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from llmroute import __version__
from llmroute.cli import app
from llmroute.cli._app import _reflowed

LLMROUTE = str(Path(sys.executable).parent / "llmroute")


def _run(*args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [LLMROUTE, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_version_prints_the_package_version() -> None:
    done = _run("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"llmroute {__version__}\n"


def test_python_dash_m_is_the_command() -> None:
    """`python -m llmroute` works where the console script is not on PATH."""
    done = subprocess.run(
        [sys.executable, "-m", "llmroute", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"llmroute {__version__}\n"


def test_a_paragraph_is_joined_and_lists_keep_their_lines() -> None:
    doc = "Print the threshold that sends\nthe share.\n\n- one\n- two\n    indented\nplain"
    assert (
        _reflowed(doc)
        == "Print the threshold that sends the share.\n\n- one\n- two\n    indented plain"
    )


def _commands(group: typer.Typer) -> list[typer.models.CommandInfo]:
    found = list(group.registered_commands)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            found += _commands(sub.typer_instance)
    return found


def test_every_command_has_reflowed_help() -> None:
    """A docstring's line ends are not shown as they are (Typer would): each command's
    help is its docstring with paragraphs joined."""
    commands = _commands(app)
    assert len(commands) > 15
    for command in commands:
        assert command.help, command.name
        for paragraph in command.help.split("\n\n"):
            for line in paragraph.splitlines()[1:]:
                assert line.startswith((" ", "-", "*")) or line[:1].isdigit(), (command, line)


def test_the_command_list_wraps_to_the_terminal() -> None:
    """In ``llmroute --help`` a command's summary fills the line (here 100 columns)
    instead of breaking where its docstring did ("...of DATA's prompts" / "to the strong
    model,")."""
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    assert "prompts to the strong" in done.stdout
