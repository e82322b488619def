"""Decision-log backends: `SqliteStore` (default, one file) and `PostgresStore` (the
``postgres`` extra), both behind the `Store` protocol, opened from a URL by
`open_store`."""

from __future__ import annotations

from llmroute.telemetry.store.base import Store
from llmroute.telemetry.store.migrate import Migration, latest_version, load_migrations
from llmroute.telemetry.store.migrate import pending as _pending
from llmroute.telemetry.store.sqlite import SqliteStore
from llmroute.telemetry.store.url import (
    ENV_VAR,
    mask_url,
    open_store,
    resolve_telemetry_url,
)

__all__ = [
    "ENV_VAR",
    "Migration",
    "SqliteStore",
    "Store",
    "latest_version",
    "load_migrations",
    "mask_url",
    "open_store",
    "pending_migrations",
    "resolve_telemetry_url",
]


def pending_migrations(store: Store) -> list[Migration]:
    """The migrations `store` still lacks (by its schema version), in order."""
    from llmroute.telemetry.store.postgres import PostgresStore

    if isinstance(store, SqliteStore | PostgresStore):
        version = store.schema_version()
        return [m for m in _pending(store.backend, ()) if m.version > version]
    return []


def __getattr__(name: str) -> object:
    # PostgresStore is importable from here without importing psycopg (it does so on
    # construction); the lazy attribute keeps this module's import cheap.
    if name == "PostgresStore":
        from llmroute.telemetry.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(name)
