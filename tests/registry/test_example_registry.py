"""examples/registry.yaml: the registry users start from must load and stay sensible."""

from __future__ import annotations

from pathlib import Path

from llmroute.registry import load_registry, summarize

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "registry.yaml"
ROUTES = {"code", "math", "summarize", "translate", "chitchat", "creative_writing"}


def test_example_loads_with_the_documented_pool() -> None:
    reg = load_registry(EXAMPLE).registry
    assert str(reg.encoder.model_dump()["name"]) == "minilm-int8"
    assert reg.providers["local"].base_url == "http://127.0.0.1:8001/v1"
    assert reg.providers["local"].api_key_env is None
    assert reg.providers["openai"].api_key_env == "OPENAI_API_KEY"
    assert reg.providers["anthropic"].api_key_env == "ANTHROPIC_API_KEY"
    assert list(reg.models) == ["small", "medium", "large", "reasoner"]
    prices = [reg.models[m].price.input for m in reg.models]
    assert prices == sorted(prices) and all(p > 0 for p in prices)
    assert reg.default.target == "medium"


def test_example_routes() -> None:
    reg = load_registry(EXAMPLE).registry
    assert {r.name for r in reg.routes} == ROUTES
    for route in reg.routes:
        assert 15 <= len(route.examples) <= 25, route.name
        assert route.description, route.name
    targets = {r.name: (r.target, r.policy.fallback) for r in reg.routes}
    assert targets["chitchat"][0] == "small"
    assert targets["code"] == ("medium", ("large",))
    assert targets["math"] == ("reasoner", ("large",))
    texts = [t.casefold() for r in reg.routes for t in r.examples]
    assert len(set(texts)) == len(texts)


def test_example_rules() -> None:
    reg = load_registry(EXAMPLE).registry
    by_name = {rule.name: rule for rule in reg.rules}
    assert 2 <= len(by_name) <= 3
    assert any(r.when.header for r in reg.rules)
    assert any(r.when.regex for r in reg.rules)
    assert any(r.when.has_tools for r in reg.rules)
    assert reg.models["small"].vision is False


def test_example_summary_mentions_every_route() -> None:
    text = "\n".join(summarize(load_registry(EXAMPLE)))
    for name in ROUTES:
        assert f"  {name} -> " in text
