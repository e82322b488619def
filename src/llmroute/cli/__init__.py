"""The `llmroute` command. Each sub-command group lives in its own module."""

from __future__ import annotations

import sys

from llmroute.cli import batches as _batches  # noqa: F401  (registers commands)
from llmroute.cli import cascade as _cascade  # noqa: F401  (registers commands)
from llmroute.cli import dashboard as _dashboard  # noqa: F401  (registers commands)
from llmroute.cli import db as _db  # noqa: F401  (registers commands)
from llmroute.cli import difficulty as _difficulty  # noqa: F401  (registers commands)
from llmroute.cli import evaluate as _evaluate  # noqa: F401
from llmroute.cli import init as _init  # noqa: F401
from llmroute.cli import reasoning as _reasoning  # noqa: F401
from llmroute.cli import registry as _registry  # noqa: F401
from llmroute.cli import responses as _responses  # noqa: F401
from llmroute.cli import route as _route  # noqa: F401
from llmroute.cli import safety as _safety  # noqa: F401
from llmroute.cli import serve as _serve  # noqa: F401
from llmroute.cli import telemetry as _telemetry  # noqa: F401
from llmroute.cli._app import app, reflow_help

reflow_help(app)

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point: run the app, turning our errors into clean exits."""
    from llmroute.cli._app import run

    sys.exit(run())
