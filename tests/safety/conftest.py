"""Fixtures of the safety tests."""

from __future__ import annotations

import phonenumbers.phonenumbermatcher as matcher_module
import pytest


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts libphonenumber's parse calls made by the matcher (a library call count)."""
    count = [0]
    real = matcher_module.parse

    def counting(*args: object, **kwargs: object) -> object:
        count[0] += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(matcher_module, "parse", counting)
    return count
