"""Which requests have which fallback chain, as docs/registry.md and docs/dispatch.md
say: a route's requests get its `policy.fallback`, and a rule that names a route that
route's; the default's requests get the default's `policy.fallback` after the model
picked (with the default's policy); a rule that names a model and a pinned pool model
are tried alone."""

from __future__ import annotations

import pytest

from llmroute.decide import Router
from llmroute.dispatch import plan_request
from llmroute.dispatch.plan import within_pool
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
  spare: {provider: local, model: spare}
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
WITH_POLICY = REGISTRY.replace(
    "default: {target: small}",
    "default:\n  target: small\n  policy: {fallback: [spare, large], retries: 0, timeout_s: 7}",
)


def _chain(router: Router, text: str, model: str = "auto") -> tuple[str, tuple[str, ...]]:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    plan = plan_request(router, body, {})
    return plan.decision.route, plan.chain


def test_without_a_default_policy_only_routes_have_a_fallback_chain() -> None:
    router = Router(parse_registry(REGISTRY))
    assert _chain(router, "write a python function") == ("code", ("large", "small"))
    assert _chain(router, "port this to kotlin") == ("code", ("large", "small"))
    assert _chain(router, "acme wants a summary") == ("rule:to-large", ("large",))
    assert _chain(router, "what is the weather on mars") == ("default", ("small",))
    assert _chain(router, "write a python function", model="large")[1] == ("large",)


def test_the_defaults_requests_fail_over_down_its_policy() -> None:
    """They were tried on the default's target alone (a policy on it was refused)."""
    router = Router(parse_registry(WITH_POLICY))
    plan = plan_request(router, {"messages": [{"role": "user", "content": "weather on mars"}]}, {})
    assert (plan.decision.route, plan.chain) == ("default", ("small", "spare", "large"))
    assert plan.policy is router.loaded.registry.default.policy
    assert (plan.policy.retries, plan.policy.timeout_s) == (0, 7)
    # routes, rules naming a model, pinned models: as before
    assert _chain(router, "write a python function") == ("code", ("large", "small"))
    assert _chain(router, "acme wants a summary") == ("rule:to-large", ("large",))
    assert _chain(router, "weather on mars", model="small")[1] == ("small",)


def test_a_request_a_keys_pool_sends_to_the_default_gets_its_chain_inside_the_pool() -> None:
    """A routed request none of whose chain the key may reach is served by the default:
    its target, then its fallbacks the pool holds, with its policy (it was the target
    alone, without the default's policy)."""
    router = Router(parse_registry(WITH_POLICY))
    default = router.loaded.registry.default
    plan = plan_request(router, {"messages": [{"role": "user", "content": "acme, please"}]}, {})
    assert plan.chain == ("large",)
    kept = within_pool(plan, ("small", "spare"), "k", default.target, default.policy)
    assert kept is not None
    assert (kept.decision.model, kept.chain) == ("small", ("small", "spare"))
    assert kept.policy is default.policy
    assert within_pool(plan, ("tiny",), "k", default.target, default.policy) is None


def test_a_keys_pool_without_the_defaults_target_is_served_by_its_fallbacks_inside() -> None:
    """The default's chain is the pool's way out, as a route's chain is, its target
    left out when outside the pool: its first fallback inside serves (the reason says
    so), then the others inside, with the default's policy. It was a 403: only the
    target counted."""
    router = Router(parse_registry(WITH_POLICY))
    default = router.loaded.registry.default
    plan = plan_request(router, {"messages": [{"role": "user", "content": "acme, please"}]}, {})
    kept = within_pool(plan, ("spare",), "k", default.target, default.policy)
    assert kept is not None
    assert (kept.decision.model, kept.chain) == ("spare", ("spare",))
    assert kept.policy is default.policy and kept.cascade is None
    assert kept.decision.reason.endswith(
        "pool: served by the default's fallback spare (small is outside it)"
    )


@pytest.mark.parametrize(
    ("policy", "field", "said"),
    [
        ("{fallback: [spare, larg]}", "policy.fallback[1]", "unknown model 'larg' (did you mean"),
        ("{fallback: [spare, small]}", "policy.fallback[1]", "'small' is the default's own target"),
        ("{content_fallback: nope}", "policy.content_fallback", "unknown model 'nope'"),
        ("{context_fallback: nope}", "policy.context_fallback", "unknown model 'nope'"),
        ("{safety: strict}", "policy.safety", "safety profile 'strict' is named, and the reg"),
        ("{fallback: [large, large]}", "policy.fallback[1]", "'large' is already in the fal"),
    ],
)
def test_a_bad_default_policy_names_its_file_line_and_field(
    policy: str, field: str, said: str
) -> None:
    text = REGISTRY.replace(
        "default: {target: small}", f"default:\n  target: small\n  policy: {policy}"
    )
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="reg.yaml")
    message = str(caught.value)
    assert message.startswith(f"reg.yaml:17: default.{field}: "), message
    assert said in message


@pytest.mark.parametrize("key", ["fallback: [large]", "fallbacks: [large]", "retries: 2"])
def test_a_fallback_beside_the_defaults_target_says_it_goes_under_its_policy(key: str) -> None:
    """It said "the default has no policy" before the default had one."""
    text = REGISTRY.replace("default: {target: small}", f"default: {{target: small, {key}}}")
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="reg.yaml")
    name = key.partition(":")[0]
    field = "fallback" if name == "fallbacks" else name
    message = str(caught.value)
    assert message.startswith(f"reg.yaml:15: default.{name}: unknown key {name!r}: "), message
    assert f"the default's {field} goes under its policy (policy: {{{field}: ...}})" in message
