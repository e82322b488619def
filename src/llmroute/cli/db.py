"""`llmroute db upgrade` and `llmroute db status`: the decision log's database.

The URL comes from ``--url``, else ``$LLMROUTE_TELEMETRY_URL``, else the registry's
``telemetry.url``; it is only ever printed masked. The gateway migrates on start-up by
itself; these commands are for deploys that migrate first (one job, before the
workers) and for checking what a database holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from llmroute.cli._app import RegistryOption, app, fail, resolve_registry

__all__ = ["db_app", "db_status", "db_upgrade"]

db_app = typer.Typer(help="Create and upgrade the decision-log database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Database URL: sqlite:///PATH or postgresql://... (default: "
        "$LLMROUTE_TELEMETRY_URL, else the registry's telemetry.url).",
        show_default=False,
    ),
]


def _telemetry_url(url: str | None, registry: Path | None) -> str:
    from llmroute.registry import load_registry
    from llmroute.registry.schema import TelemetrySettings
    from llmroute.telemetry.store import ENV_VAR, resolve_telemetry_url

    if url is not None and url.strip():
        return url.strip()
    if ENV_VAR in os.environ:
        resolved = resolve_telemetry_url(TelemetrySettings(), os.environ)
        if resolved is None:
            fail(f"the decision log is off (${ENV_VAR} is {os.environ[ENV_VAR]!r}); pass --url")
        return resolved
    path = resolve_registry(registry)
    settings = load_registry(path).registry.telemetry
    resolved = resolve_telemetry_url(settings, {})
    if resolved is None:
        fail(f"the decision log is off in {path} (telemetry); pass --url")
    return resolved


@db_app.command("upgrade")
def db_upgrade(url: UrlOption = None, registry: RegistryOption = None) -> None:
    """Apply pending migrations and print the schema version."""
    from llmroute.telemetry.store import open_store

    store = open_store(_telemetry_url(url, registry))
    try:
        before = store.schema_version()
        version = store.migrate()
    finally:
        store.close()
    applied = "up to date" if version == before else f"upgraded from {before}"
    typer.echo(f"{store.url}: schema version {version} ({applied})")


@db_app.command("status")
def db_status(url: UrlOption = None, registry: RegistryOption = None) -> None:
    """Print the masked URL, the schema version, pending migrations and the number of
    logged decisions."""
    from llmroute.telemetry.store import mask_url, open_store, pending_migrations
    from llmroute.telemetry.store.url import sqlite_path

    target = _telemetry_url(url, registry)
    if target.lower().startswith("sqlite:"):
        path = sqlite_path(target)
        if path != ":memory:" and not Path(path).exists():  # opening it would create it
            typer.echo(f"url: {mask_url(target)}")
            typer.echo(f"no decision log at {path} yet (`llmroute db upgrade` creates it)")
            return
    store = open_store(target)
    try:
        version = store.schema_version()
        waiting = pending_migrations(store)
        count = store.count_decisions() if version > 0 else None
    finally:
        store.close()
    typer.echo(f"url: {store.url}")
    typer.echo(f"schema version: {version}")
    names = ", ".join(m.label for m in waiting) or "none"
    typer.echo(f"pending migrations: {names}")
    typer.echo(f"decisions: {'-' if count is None else count}")
