"""Which requests have a fallback chain, as docs/registry.md and docs/dispatch.md say:
a route's requests get its `policy.fallback`; a rule that names a route gets that route's;
the default, a rule that names a model and a pinned pool model are tried alone (the
registry refuses a `policy` or `fallback` on the default, saying so)."""

from __future__ import annotations

import pytest

from llmroute.decide import Router
from llmroute.dispatch import plan_request
from llmroute.errors import ConfigError
from llmroute.registry import parse_registry

REGISTRY = """
encoder: builtin:static
intent: {method: knn, k: 1}
providers:
  local: {kind: openai, base_url: http://127.0.0.1:9/v1}
models:
  small: {provider: local, model: small}
  large: {provider: local, model: large}
routes:
  - name: code
    examples: [write a python function, fix this bug]
    target: large
    policy: {fallback: [small]}
default: {target: small}
rules:
  - {name: to-code, when: {keywords: [kotlin]}, route: code}
  - {name: to-large, when: {keywords: [acme]}, target: large}
"""


def _chain(router: Router, text: str, model: str = "auto") -> tuple[str, tuple[str, ...]]:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    plan = plan_request(router, body, {})
    return plan.decision.route, plan.chain


def test_only_routes_have_a_fallback_chain() -> None:
    router = Router(parse_registry(REGISTRY))
    assert _chain(router, "write a python function") == ("code", ("large", "small"))
    assert _chain(router, "port this to kotlin") == ("code", ("large", "small"))
    assert _chain(router, "acme wants a summary") == ("rule:to-large", ("large",))
    assert _chain(router, "what is the weather on mars") == ("default", ("small",))
    assert _chain(router, "write a python function", model="large")[1] == ("large",)


@pytest.mark.parametrize("key", ["policy: {fallback: [large]}", "fallback: [large]"])
def test_a_fallback_on_the_default_is_refused_saying_it_has_none(key: str) -> None:
    """It said only "unknown key 'policy'" (or 'fallback') and the default's keys."""
    text = REGISTRY.replace("default: {target: small}", f"default: {{target: small, {key}}}")
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="reg.yaml")
    message = str(caught.value)
    assert message.startswith(f"reg.yaml:14: default.{key.partition(':')[0]}: unknown key")
    assert "the default has no policy, and no fallback chain" in message
    assert "several deployments" in message
