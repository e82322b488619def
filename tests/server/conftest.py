"""Fixtures the gateway tests share: a fake OpenAI-compatible upstream and a fake
Anthropic upstream, real HTTP servers on 127.0.0.1, one of each per test module; and
`gateway`, the module's REGISTRY served in front of both (a module that serves
something else defines its own `gateway`, which takes precedence)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_anthropic import FakeAnthropic, fake_anthropic
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import Served, serve_text


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def claude() -> Iterator[FakeAnthropic]:
    with fake_anthropic() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: FakeUpstream,
    claude: FakeAnthropic,
) -> Iterator[Served]:
    """`llmroute serve` of the module's REGISTRY, a template naming the fakes' URLs
    (``%(url)s``, ``%(anthropic)s``), without a decision log."""
    text = request.module.REGISTRY % {"url": upstream.url, "anthropic": claude.url}
    tmp = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with serve_text(text, tmp, env={"LLMROUTE_TELEMETRY_URL": "off"}) as served:
        yield served
