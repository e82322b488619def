"""`llmroute --version` and the help text, as a user sees them."""

from __future__ import annotations

import os
import re
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


def test_a_line_that_starts_with_a_number_is_joined_unless_it_numbers_an_item() -> None:
    """ "5-fold cross-validation" at a line's start stayed on a line of its own in
    ``llmroute train --help`` (taken for a numbered list item)."""
    assert _reflowed("chosen by\n5-fold group cross-validation") == (
        "chosen by 5-fold group cross-validation"
    )
    assert _reflowed("steps:\n1. one\n2) two") == "steps:\n1. one\n2) two"


def test_every_command_has_reflowed_help() -> None:
    """A docstring's line ends are not shown as they are (Typer would): each command's
    help is its docstring with paragraphs joined."""
    commands = _commands(app)
    assert len(commands) > 15
    for command in commands:
        assert command.help, command.name
        for paragraph in command.help.split("\n\n"):
            for line in paragraph.splitlines()[1:]:
                numbered = re.match(r"\d+[.)] ", line) is not None
                assert line.startswith((" ", "-", "*")) or numbered, (command, line)


def test_the_command_list_wraps_to_the_terminal() -> None:
    """In ``llmroute --help`` a command's summary fills the line (here 100 columns)
    instead of breaking where its docstring did ("...of DATA's prompts" / "to the strong
    model,")."""
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    assert "prompts to the strong" in done.stdout
