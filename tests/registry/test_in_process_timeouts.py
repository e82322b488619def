"""`connect_timeout_s` where nothing connects: a model served in this process alone
(llamacpp, echo), or a route all of whose models are, is a load error at its line, as
the key already is on such a provider. No llama-cpp-python needed: the registry alone."""

from __future__ import annotations

import textwrap
from string import Template

from registry_helpers import assert_points_at, one_error

from llmroute.registry import parse_registry

# line 1 is `encoder: ...`
LOCAL = Template(
    textwrap.dedent(
        """\
    encoder: builtin:static
    providers:
      local: {kind: llamacpp}
      box: {kind: echo}
      http: {kind: openai, base_url: "http://127.0.0.1:8001/v1"}
    models:
      gemma: {provider: local, model: gemma.gguf$gemma}
      parrot: {provider: box, model: parrot$parrot}
      both: {deployments: [{provider: local, model: a.gguf}, {provider: http}], model: q$both}
      remote: {provider: http, model: qwen}
    routes:
      - name: chat
        examples: ["hello"]
        target: gemma
        policy: {$chat}
        $route
    default: {target: gemma}
    """
    )
)


def _text(**keys: str) -> str:
    return LOCAL.substitute(
        {spot: keys.get(spot, "") for spot in ("gemma", "parrot", "both", "chat", "route")}
    )


def test_the_template_loads() -> None:
    parse_registry(_text(), source="reg.yaml")


def test_on_a_model_served_by_llamacpp_alone_it_is_a_load_error() -> None:
    error = one_error(_text(gemma=", connect_timeout_s: 2"))
    assert_points_at(
        error, 7, "models.gemma.connect_timeout_s", "not used where nothing connects", "llamacpp"
    )


def test_on_a_model_served_by_echo_alone_it_is_a_load_error() -> None:
    error = one_error(_text(parrot=", connect_timeout_s: 2"))
    assert_points_at(error, 8, "models.parrot.connect_timeout_s", "echo providers alone")


def test_a_model_with_an_http_deployment_keeps_it() -> None:
    """It bounds the connection to the HTTP deployment."""
    loaded = parse_registry(_text(both=", connect_timeout_s: 2"), source="reg.yaml")
    assert loaded.registry.models["both"].connect_timeout_s == 2


def test_on_a_route_of_local_models_alone_it_is_a_load_error() -> None:
    error = one_error(_text(chat="connect_timeout_s: 2, fallback: [parrot]"))
    assert_points_at(
        error, 15, "routes[0].policy.connect_timeout_s", "every model of the route (gemma, parrot)"
    )


def test_a_route_with_a_model_that_connects_keeps_it() -> None:
    for policy in (
        "connect_timeout_s: 2, fallback: [remote]",
        "connect_timeout_s: 2, content_fallback: both",
    ):
        parse_registry(_text(chat=policy), source="reg.yaml")
    cascade = "cascade: [gemma, remote]"  # the policy bounds every tier's call
    parse_registry(_text(chat="connect_timeout_s: 2", route=cascade), source="reg.yaml")
    verifier = "cascade: {tiers: [gemma, parrot], gates: [{kind: verifier, model: remote}]}"
    parse_registry(_text(chat="connect_timeout_s: 2", route=verifier), source="reg.yaml")


def test_a_route_whose_safety_profile_reroutes_to_a_model_that_connects_keeps_it() -> None:
    """A request the route's safety profile sends to another model keeps the route's
    policy (`plan_request`): the timeout bounds that model's connection."""
    text = _text(chat="connect_timeout_s: 2, safety: guarded") + (
        "safety: {profiles: {standard: {}, guarded: {injection: {route: remote}}}}\n"
    )
    parse_registry(text, source="reg.yaml")
    # the registry's profile, for a route that names none
    text = _text(chat="connect_timeout_s: 2") + (
        "safety: {profile: guarded, profiles: {guarded: {pii: {EMAIL: {route: remote}}}}}\n"
    )
    parse_registry(text, source="reg.yaml")


def test_on_a_default_of_local_models_alone_it_is_a_load_error() -> None:
    """The default's policy is checked as a route's is."""
    text = _text().replace(
        "default: {target: gemma}",
        "default: {target: gemma, policy: {connect_timeout_s: 2, fallback: [parrot]}}",
    )
    error = one_error(text)
    assert_points_at(
        error, 17, "default.policy.connect_timeout_s", "every model of the default (gemma, parrot)"
    )
    kept = text.replace("fallback: [parrot]", "fallback: [remote]")
    assert parse_registry(kept).registry.default.policy.connect_timeout_s == 2
