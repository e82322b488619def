from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llmroute.decide import Router
from llmroute.encoders.fake import FakeEncoder
from llmroute.registry import parse_registry

REGISTRY = """
encoder: builtin:static
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:8001/v1"}
models:
  small: {provider: local, model: s}
  large: {provider: local, model: l}
intent:
  method: %(method)s
  threshold: %(threshold)s
routes:
  - name: code
    target: large
    examples:
      - write a python function to parse json
      - fix this python bug in my function
      - refactor this javascript class
      - python function that sorts a list
  - name: weather
    target: small
    examples:
      - what is the weather tomorrow
      - will it rain today in paris
      - weather forecast for the weekend
      - is it sunny outside today
  - name: cooking
    target: small
    threshold: 0.2
    examples:
      - recipe for chocolate cake
      - how long to boil an egg
      - cooking pasta with garlic sauce
      - best recipe for dinner tonight
default: {target: small}
rules:
  - name: tenant
    when: {header: {x-tenant: acme}}
    target: large
  - name: tools
    when: {has_tools: true}
    route: code
  - name: images
    when: {has_images: true}
    target: large
  - name: trace
    when: {regex: 'Traceback \\(most recent call last\\)', min_tokens: 3}
    route: code
  - name: kw
    when: {keywords: [kubernetes, "service mesh"]}
    target: large
"""


def make_router(
    tmp_path: Path, method: str = "linear", threshold: float = 0.5, **kwargs: object
) -> Router:
    loaded = parse_registry(
        REGISTRY % {"method": method, "threshold": threshold}, source="test.yaml"
    )
    return Router(loaded, encoder=FakeEncoder(), cache_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


MakeRouter = Callable[..., Router]


@pytest.fixture
def make(tmp_path: Path) -> MakeRouter:
    """Build routers over the test registry that share one cache directory."""

    def build(method: str = "linear", threshold: float = 0.5, **kwargs: object) -> Router:
        return make_router(tmp_path, method, threshold, **kwargs)

    return build


@pytest.fixture
def router(make: MakeRouter) -> Router:
    return make()
