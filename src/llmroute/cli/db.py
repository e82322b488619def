"""`llmroute db upgrade`, `status`, `forget` and `prune`: the decision log's database.

The URL comes from ``--url``, else ``$LLMROUTE_TELEMETRY_URL``, else the registry's
``telemetry.url``; it is only ever printed masked. The gateway migrates on start-up by
itself; these commands are for deploys that migrate first (one job, before the
workers) and for checking what a database holds.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from llmroute.cli._app import (
    RegistryOption,
    app,
    check_telemetry_url,
    fail,
    find_registry,
    resolve_registry,
    unknown_client,
)

__all__ = ["db_app", "db_forget", "db_prune", "db_status", "db_upgrade"]

db_app = typer.Typer(
    help="Create, upgrade and erase from the decision-log database.", no_args_is_help=True
)
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
        return check_telemetry_url(url.strip(), "--url")
    if ENV_VAR in os.environ:
        resolved = resolve_telemetry_url(TelemetrySettings(), os.environ)
        if resolved is None:
            fail(f"the decision log is off (${ENV_VAR} is {os.environ[ENV_VAR]!r}); pass --url")
        return check_telemetry_url(resolved, f"${ENV_VAR}")
    path = resolve_registry(registry)
    settings = load_registry(path).registry.telemetry
    resolved = resolve_telemetry_url(settings, {})
    if resolved is None:
        fail(f"the decision log is off in {path} (telemetry); pass --url")
    return resolved


@db_app.command("upgrade")
def db_upgrade(url: UrlOption = None, registry: RegistryOption = None) -> None:
    """Apply pending migrations and print the schema version."""
    from llmroute.telemetry.store import latest_version, open_store

    store = open_store(_telemetry_url(url, registry))
    try:
        before = store.schema_version()
        version = store.migrate()
    finally:
        store.close()
    known = latest_version(store.backend)
    if version > known:  # a newer llmroute migrated it: nothing here to apply, not an error
        applied = _newer(known)
    else:
        applied = "up to date" if version == before else f"upgraded from {before}"
    typer.echo(f"{store.url}: schema version {version} ({applied})")


def _newer(known: int) -> str:
    """What a schema newer than this llmroute's migrations is said to be. Not an error:
    an older gateway keeps writing to it (it names its columns); reading the newer
    columns takes a newer llmroute."""
    return f"newer than this llmroute knows, {known}: upgrade llmroute"


@db_app.command("status")
def db_status(url: UrlOption = None, registry: RegistryOption = None) -> None:
    """Print the masked URL, the schema version, pending migrations and the number of
    logged decisions."""
    from llmroute.telemetry.store import (
        latest_version,
        mask_url,
        open_store,
        pending_migrations,
    )
    from llmroute.telemetry.store.url import sqlite_path

    target = _telemetry_url(url, registry)
    if target.lower().startswith("sqlite:"):
        path = sqlite_path(target)
        if path != ":memory:" and not Path(path).exists():  # opening it would create it
            typer.echo(f"url: {mask_url(target)}")
            where = os.path.abspath(path)
            typer.echo(f"no decision log at {where} yet (`llmroute db upgrade` creates it)")
            return
    store = open_store(target)
    try:
        version = store.schema_version()
        waiting = pending_migrations(store)
        count = store.count_decisions() if version > 0 else None
    finally:
        store.close()
    known = latest_version(store.backend)
    typer.echo(f"url: {store.url}")
    typer.echo(f"schema version: {version}" + (f" ({_newer(known)})" if version > known else ""))
    names = ", ".join(m.label for m in waiting) or "none"
    typer.echo(f"pending migrations: {names}")
    typer.echo(f"decisions: {'-' if count is None else count}")


@db_app.command("forget")
def db_forget(
    end_user: Annotated[
        list[str] | None,
        typer.Option(
            "--end-user",
            help="An end user's id as the client sent it (user, safety_identifier, "
            "metadata.user_id); its pseudonyms are matched too. Repeatable.",
            show_default=False,
        ),
    ] = None,
    client: Annotated[
        str | None,
        typer.Option(
            "--client",
            help="A client key's name (auth.keys): its requests; '' for the requests made "
            "without a key (without auth, or before it had one). With --end-user, only that end "
            "user's requests made with it.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    registry: RegistryOption = None,
) -> None:
    """Erase from the decision log the requests of an end user, of a client key, or of
    an end user made with a key (both options given narrow, as a filter), with their
    feedback and shadow rows: a data subject's erasure request. Stored
    responses and batches are erased apart (`llmroute responses forget`, `llmroute
    batches forget`)."""
    from llmroute.layers.safety import pseudonym
    from llmroute.telemetry.store import open_store

    users = [u for u in (end_user or []) if u]
    if not users and client is None:
        fail("say whose requests to erase: --end-user ID (repeatable) or --client NAME")
    key = _pseudonym_key(registry) if users else None
    # as logged: the id itself, or the pseudonym safety sent upstream and logged instead
    forms = sorted({form for u in users for form in (u, pseudonym(u), pseudonym(u, key))})
    store = open_store(_existing_log(_telemetry_url(url, registry)))
    try:
        if store.schema_version() == 0:
            fail(f"{store.url}: the decision log has no tables yet; nothing to erase")
        decisions, feedback, shadow = store.forget(end_users=forms, client=client)
    finally:
        store.close()
    # nothing erased for a key the registry lacks: a typo, read as done (a removed key's
    # rows are erased all the same: forgetting it is the point)
    why = _unknown_key(client, registry) if not decisions else ""
    typer.echo(
        f"{store.url}: erased {decisions} decision{'s' * (decisions != 1)}, {feedback} "
        f"feedback and {shadow} shadow row{'s' * (shadow != 1)}{why}"
    )


@db_app.command("prune")
def db_prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Erase decisions logged before this: a duration ago (30d, 12w, 24h) or an "
            "ISO date (2026-01-01). Default: the registry's telemetry.retention_days.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    registry: RegistryOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say how many decisions would go; erase nothing.")
    ] = False,
) -> None:
    """Erase the decisions older than a retention period, with their feedback and shadow
    rows, a few thousand a transaction: what a gateway with `telemetry.retention_days`
    does by itself hourly, for logs no gateway prunes (or a one-off clean-up)."""
    from llmroute.registry import load_registry
    from llmroute.telemetry.store import open_store
    from llmroute.telemetry.windows import WindowError, parse_instant
    from llmroute.telemetry.writer import PRUNE_BATCH

    if older_than is None:
        path = find_registry(registry)
        if path is None:  # the log may be given by --url: how old is what is missing
            fail("say how old: --older-than 30d, or a registry with telemetry.retention_days")
        days = load_registry(path).registry.telemetry.retention_days
        if days is None:
            fail(f"say how old: --older-than 30d, or set telemetry.retention_days in {path}")
        older_than = f"{days:g}d"
    try:
        before = parse_instant(older_than)
    except WindowError as exc:
        fail(f"--older-than: {exc}")
    store = open_store(_existing_log(_telemetry_url(url, registry)))
    erased = [0, 0, 0]
    when = datetime.fromtimestamp(before, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        if store.schema_version() == 0:
            fail(f"{store.url}: the decision log has no tables yet; nothing to erase")
        if dry_run:
            n = store.count_decisions(until=before)
            typer.echo(
                f"{store.url}: would erase {n} decision{'s' * (n != 1)} logged before {when} "
                "(with their feedback and shadow rows); nothing erased"
            )
            return
        while True:
            counts = store.prune(before, most=PRUNE_BATCH)
            erased = [a + b for a, b in zip(erased, counts, strict=True)]
            if counts[0] < PRUNE_BATCH:
                break
    finally:
        store.close()
    decisions, feedback, shadow = erased
    typer.echo(
        f"{store.url}: erased {decisions} decision{'s' * (decisions != 1)} logged before "
        f"{when}, {feedback} feedback and {shadow} shadow row{'s' * (shadow != 1)}"
    )


def _existing_log(target: str) -> str:
    """`target`, unless it is a SQLite file that is not there: erasing from it would create
    it (and say "no tables yet"), leaving an empty log where a mistyped path or another
    working directory pointed."""
    from llmroute.telemetry.store import mask_url
    from llmroute.telemetry.store.url import sqlite_path

    if target.lower().startswith("sqlite:"):
        path = sqlite_path(target)
        if path != ":memory:" and not Path(path).exists():
            where = os.path.abspath(path)
            fail(f"{mask_url(target)}: no decision log at {where}; nothing to erase")
    return target


def _unknown_key(client: str | None, registry: Path | None) -> str:
    """`unknown_client`'s words for the registry given or found, once the erasure is made:
    one that cannot be read (the log named by --url) adds nothing."""
    from llmroute.errors import ConfigError
    from llmroute.registry import load_registry

    path = registry if registry is not None else find_registry(None)
    if not client or path is None:
        return ""
    try:
        loaded = load_registry(path)
    except ConfigError:
        return ""
    return unknown_client(client, loaded.registry)


def _pseudonym_key(registry: Path | None) -> bytes | None:
    """The registry's `safety.pii.pseudonym_key_env` secret, when there is a registry and
    the variable is set (ids were then logged as ``hmac:`` pseudonyms)."""
    from llmroute.registry import load_registry

    path = registry if registry is not None else find_registry(None)
    if path is None:
        return None
    safety = load_registry(path).registry.safety
    env = None if safety is None else safety.pii.pseudonym_key_env
    secret = os.environ.get(env) if env else None
    return secret.encode() if secret else None
