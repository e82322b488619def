"""Fixtures of the decision-log tests: records built from real `Decision`s, a SQLite
file per test and a PostgreSQL schema per test (127.0.0.1:5432, database ``test``, user
``postgres``). Without a reachable server the PostgreSQL tests skip, except under
``CI=true``, where they fail."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import require
from telemetry_records import PG_BASE, MakeRecord, build_record, pg_execute, pg_reachable


@pytest.fixture
def make_record() -> MakeRecord:
    return build_record


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'telemetry.db'}"


@pytest.fixture(scope="session")
def _pg_available() -> None:
    require(pg_reachable())


@pytest.fixture
def pg_schema(_pg_available: None) -> Iterator[str]:
    """A fresh schema, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        pg_execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def postgres_url(pg_schema: str) -> str:
    """A URL whose connections see only this test's schema (and are named after it,
    so a test can find and terminate them)."""
    return f"{PG_BASE}?options=-csearch_path%3D{pg_schema}&application_name={pg_schema}"


@pytest.fixture
def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
