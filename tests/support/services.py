"""Tests that need a real service (Redis, PostgreSQL) skip when it is not reachable,
except under ``CI=true``, where a skipped backend would be an untested one: they fail."""

from __future__ import annotations

import os

import pytest


def require(why_not: str | None) -> None:
    """Go on when `why_not` is None (the service answered); else skip, or fail in CI."""
    if why_not is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {why_not}")
    pytest.skip(why_not)
