"""The migration files of each backend and what a database still lacks.

Each store runs its own migrations (`SqliteStore.migrate`, `PostgresStore.migrate`)
because how to serialise two processes differs: SQLite takes the write lock with
``BEGIN IMMEDIATE``, PostgreSQL a transaction-scoped advisory lock. Both apply every
pending migration and record it in ``schema_migrations`` inside one transaction, so a
failure leaves the database as it was.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

__all__ = ["Backend", "Migration", "latest_version", "load_migrations", "pending"]

Backend = Literal["sqlite", "postgres"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: `version` from its ``NNNN_`` prefix, `name` the rest."""

    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    def statements(self) -> list[str]:
        """The script split into statements (sqlite3 runs one statement per call)."""
        out: list[str] = []
        buffer = ""
        for line in self.sql.splitlines(keepends=True):
            if not buffer.strip() and line.lstrip().startswith("--"):
                continue
            buffer += line
            if sqlite3.complete_statement(buffer):
                out.append(buffer.strip())
                buffer = ""
        if buffer.strip():
            out.append(buffer.strip())
        return out


@cache
def load_migrations(backend: Backend) -> tuple[Migration, ...]:
    """The backend's migrations in version order (read from the package data)."""
    folder = resources.files("llmroute.telemetry.migrations").joinpath(backend)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        sql = entry.read_text(encoding="utf-8")
        found.append(Migration(int(match.group(1)), match.group(2), sql))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate {backend} migration versions: {versions}")
    return tuple(found)


def latest_version(backend: Backend) -> int:
    migrations = load_migrations(backend)
    return migrations[-1].version if migrations else 0


def pending(backend: Backend, applied: Iterable[int]) -> list[Migration]:
    """The migrations not in `applied`, in order."""
    done = set(applied)
    return [m for m in load_migrations(backend) if m.version not in done]
