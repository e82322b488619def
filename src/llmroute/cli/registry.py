"""`llmroute registry check`: validate a registry and print what it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmroute.cli._app import registry_app
from llmroute.registry import load_registry, summarize


@registry_app.command("check")
def check(
    path: Annotated[Path, typer.Argument(help="The registry YAML to validate.")],
) -> None:
    """Validate a registry (schema and references) and print a summary."""
    loaded = load_registry(path)
    for line in summarize(loaded):
        print(line)
    print("ok")
