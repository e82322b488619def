"""`within_pool`: a plan kept to the models a client key may reach."""

from __future__ import annotations

from plans import plan_for

from llmroute.decision import SafetyOutcome
from llmroute.dispatch.plan import within_pool
from llmroute.layers.pin import PIN_LAYER
from llmroute.registry.schema import Cascade

WHY = "is outside key 'team''s pool"
OWNER = "team"


def test_a_plan_inside_the_pool_is_unchanged_but_carries_it() -> None:
    plan = plan_for("small", "mid")
    kept = within_pool(plan, ("small", "mid", "large"), OWNER)
    assert kept is not None
    assert (kept.decision, kept.chain, kept.pool) == (
        plan.decision,
        ("small", "mid"),
        ("small", "mid", "large"),
    )


def test_a_target_outside_the_pool_gives_way_to_the_first_fallback_inside() -> None:
    plan = plan_for("large", "mid", "small")
    kept = within_pool(plan, ("small", "mid"), OWNER)
    assert kept is not None
    assert kept.chain == ("mid", "small") and kept.decision.model == "mid"
    assert kept.decision.reason == f"test; large {WHY}"
    assert kept.decision.route == plan.decision.route and kept.decision.id == "d"


def test_no_model_inside_the_pool_is_none() -> None:
    assert within_pool(plan_for("large", "huge"), ("small",), OWNER) is None
    # the registry's default serves a routed request only when the pool holds it
    assert within_pool(plan_for("large"), ("small",), OWNER, default="mid") is None


def test_a_routed_request_with_no_model_inside_goes_to_the_default() -> None:
    plan = plan_for("large", "huge", route="legal")
    kept = within_pool(plan, ("small", "mid"), OWNER, default="small")
    assert kept is not None and kept.chain == ("small",) and kept.cascade is None
    assert kept.decision.model == "small" and kept.decision.route == "legal"
    assert kept.decision.reason == (
        "test; route 'legal' has no model in key 'team''s pool: served by the default, small"
    )


def test_a_named_route_or_model_or_a_guarded_model_is_not_replaced_by_the_default() -> None:
    pinned = plan_for("large", layer=PIN_LAYER)
    assert within_pool(pinned, ("small",), OWNER, default="small") is None
    guarded = plan_for(
        "guard", safety=SafetyOutcome("standard", "route", fired=("pii",), model="guard")
    )
    assert within_pool(guarded, ("small",), OWNER, default="small") is None


def test_a_cascade_runs_only_when_every_tier_and_verifier_is_inside() -> None:
    cascade = Cascade.model_validate({"tiers": ["small", "large"]})
    plan = plan_for("small", cascade=cascade)
    inside = within_pool(plan, ("small", "large"), OWNER)
    assert inside is not None and inside.cascade is cascade
    outside = within_pool(plan, ("small",), OWNER)
    assert outside is not None and outside.cascade is None and outside.chain == ("small",)
    verified = Cascade.model_validate(
        {"tiers": ["small", "large"], "gates": [{"kind": "verifier", "model": "judge"}]}
    )
    plan = plan_for("small", cascade=verified)
    kept = within_pool(plan, ("small", "large"), OWNER)
    assert kept is not None and kept.cascade is None
    kept = within_pool(plan, ("small", "large", "judge"), OWNER)
    assert kept is not None and kept.cascade is verified


def test_a_blocked_plan_is_left_for_the_policy_to_refuse() -> None:
    blocked = plan_for("large", safety=SafetyOutcome("standard", "block", fired=("injection",)))
    kept = within_pool(blocked, ("small",), OWNER)
    assert kept is not None and kept.decision is blocked.decision and kept.chain == ("large",)
