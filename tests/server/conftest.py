"""Fixtures the gateway tests share: a fake OpenAI-compatible upstream and a fake
Anthropic upstream, real HTTP servers on 127.0.0.1, one of each per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_anthropic import FakeAnthropic, fake_anthropic
from fake_upstream import FakeUpstream, fake_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def claude() -> Iterator[FakeAnthropic]:
    with fake_anthropic() as fake:
        yield fake
