"""Synthetic difficulty data: the strong model's benefit grows along one embedding direction."""

from __future__ import annotations

import pytest
from difficulty_rows import synthetic_rows

from llmroute.difficulty.train import Rows


@pytest.fixture(scope="session")
def train_rows() -> Rows:
    return synthetic_rows(300, seed=1)


@pytest.fixture(scope="session")
def val_rows() -> Rows:
    return synthetic_rows(200, seed=2)


@pytest.fixture(scope="session")
def test_rows() -> Rows:
    return synthetic_rows(400, seed=3)
