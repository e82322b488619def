"""`llmroute init`: the example registry, its routing cases and labelled prompts, written
into a folder to start from (a wheel holds no ``examples/`` folder to copy them from)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from llmroute.cli._app import app, fail

# what each file is, in the order they are written and listed
_FILES = {
    "registry.yaml": "the registry: providers, a pool of models, six routes, rules",
    "cases.yaml": "routing cases: what its decisions must be (`llmroute registry test`)",
    "eval.jsonl": "labelled prompts: its accuracy (`llmroute eval`)",
}


@app.command("init")
def init_command(
    directory: Annotated[
        Path,
        typer.Argument(help="Where to write them (made if missing).", show_default=True),
    ] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite files of those names already there.")
    ] = False,
) -> None:
    """Write the example registry (registry.yaml), its routing cases (cases.yaml) and
    labelled prompts (eval.jsonl) into DIRECTORY, to edit into your own."""
    if directory.exists() and not directory.is_dir():
        fail(f"{directory} is not a folder")
    there = [name for name in _FILES if (directory / name).exists()]
    if there and not force:
        named = ", ".join(str(directory / name) for name in there)
        fail(f"{named} already there; pass --force to overwrite")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        shipped = resources.files("llmroute.examples")
        for name in _FILES:
            text = shipped.joinpath(name).read_text(encoding="utf-8")
            (directory / name).write_text(_here(text, directory), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write into {directory}: {exc.strerror or exc}")
    for name, what in _FILES.items():
        typer.echo(f"wrote {directory / name}: {what}")
    registry, cases = _shell(directory / "registry.yaml"), _shell(directory / "cases.yaml")
    typer.echo(
        f"next: llmroute registry check {registry}\n"
        f"      llmroute route -r {registry} \"translate 'thank you' into Japanese\"\n"
        f"      llmroute registry test {cases} -r {registry}"
    )


def _here(text: str, directory: Path) -> str:
    """The files' comments name their paths in the repository (``examples/registry.yaml``):
    named where they were written instead, so the commands they show run as written."""
    prefix = "" if directory == Path(".") else f"{directory.as_posix().rstrip('/')}/"
    for name in _FILES:
        text = text.replace(f"examples/{name}", prefix + name)
    return text


def _shell(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))
