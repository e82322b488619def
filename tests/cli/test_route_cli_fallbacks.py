"""`llmroute route` shows the fallback chain dispatch would follow (`--explain`'s
``fallbacks:`` line, `--json`'s ``fallbacks``), run as a user runs it: a route's chain,
the default's, none for a guarded reroute or a rule-named model (and why), and a
client key's pool (`--key`) leaving part of the chain out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pool_registries import FALLBACKS
from test_route_cli import llmroute

REGISTRY = (
    FALLBACKS
    + """rules:
  - {name: to-large, when: {keywords: [acme]}, target: large}
auth:
  keys:
    - {name: narrow, key_env: LLMROUTE_TEST_NARROW_KEY, pool: [small, guarded]}
    - {name: spare-only, key_env: LLMROUTE_TEST_SPARE_KEY, pool: [spare, large]}
"""
)

CODE = "debug this SQL query"
UNCLAIMED = "weather on mars"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fallbacks") / "registry.yaml"
    path.write_text(REGISTRY)
    return path


def _explained(registry: Path, text: str, *args: str) -> tuple[str, str]:
    """The decision's first line and the ``fallbacks:`` line of `--explain`."""
    result = llmroute("route", "-r", str(registry), "--explain", *args, text)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    (fallbacks,) = [line for line in lines if line.startswith("fallbacks:")]
    return lines[0], fallbacks


def _json(registry: Path, text: str, *args: str) -> dict[str, object]:
    result = llmroute("route", "-r", str(registry), "--json", *args, text)
    assert result.returncode == 0, result.stderr
    decision: dict[str, object] = json.loads(result.stdout)
    return decision


def test_a_routes_chain_and_the_defaults(registry: Path) -> None:
    first, fallbacks = _explained(registry, CODE)
    assert first.startswith("code -> large ")
    assert fallbacks == "fallbacks: small -> spare"
    first, fallbacks = _explained(registry, UNCLAIMED)
    assert first.startswith("default -> small ")
    assert fallbacks == "fallbacks: spare -> large"
    assert _json(registry, CODE)["fallbacks"] == ["small", "spare"]
    assert _json(registry, UNCLAIMED)["fallbacks"] == ["spare", "large"]


def test_none_and_why(registry: Path) -> None:
    first, fallbacks = _explained(registry, f"{CODE} for bob@example.com")
    assert first.startswith("code -> guarded ")
    assert fallbacks == (
        "fallbacks: none (guarded: safety sent the request to guarded, which serves it alone)"
    )
    assert _json(registry, f"{CODE} for bob@example.com")["fallbacks"] == []
    assert _explained(registry, "acme wants this")[1] == (
        "fallbacks: none (rule-named: rule 'to-large' names large, which is tried alone)"
    )
    assert _explained(registry, "hi there")[1] == (
        "fallbacks: none (route 'chat' has no policy.fallback)"
    )


def test_a_keys_pool_leaves_part_of_the_chain_out(registry: Path) -> None:
    """As the gateway keeps the key's requests inside its pool: the route's target
    outside it, its first fallback inside serves and the other is left out."""
    first, fallbacks = _explained(registry, CODE, "--key", "narrow")
    assert first.startswith("code -> small ")
    assert (
        fallbacks == "fallbacks: none (the key's pool leaves out route 'code''s target large "
        "and fallbacks (spare): small serves alone)"
    )
    assert _json(registry, CODE, "--key", "narrow")["fallbacks"] == []
    # nothing of route chat's chain inside: the default's chain inside the pool serves it
    decision = _json(registry, "hi there", "--key", "spare-only")
    assert (decision["model"], decision["fallbacks"]) == ("spare", ["large"])
    assert _json(registry, CODE, "--key", "spare-only")["fallbacks"] == ["spare"]


def test_a_cascade_routes_target_outside_the_pool_is_named_as_the_reason(tmp_path: Path) -> None:
    """A cascade route whose target (its first tier) the key's pool leaves out is served
    by its fallback alone, without the cascade. The line said "route 'code' has no
    policy.fallback but large": true, but the pool is the reason."""
    path = tmp_path / "registry.yaml"
    cascade = "    target: small\n    cascade: [small, large]\n    policy: {fallback: [large]}"
    text = REGISTRY.replace("    target: large\n    policy: {fallback: [small, spare]}", cascade)
    path.write_text(
        text + "    - {name: big, key_env: LLMROUTE_TEST_BIG_KEY, pool: [large, spare]}\n"
    )
    first, fallbacks = _explained(path, CODE)
    assert first.startswith("code -> small ")
    assert fallbacks == "fallbacks: large (the cascade's tiers, escalated to)"
    first, fallbacks = _explained(path, CODE, "--key", "big")
    assert first.startswith("code -> large ")
    assert fallbacks == (
        "fallbacks: none (the key's pool leaves out route 'code''s target small (and so its "
        "cascade, which runs only with every tier inside): large serves alone)"
    )


def test_a_key_whose_pool_holds_nothing_of_the_chain_is_refused_as_the_gateway_does(
    registry: Path,
) -> None:
    """Safety sent the request to a guarded model outside the pool: nothing else may
    serve it (the gateway's 403)."""
    pii = f"{CODE} for bob@example.com"
    result = llmroute("route", "-r", str(registry), "--key", "spare-only", pii)
    assert result.returncode == 2
    said = " ".join(result.stderr.split())
    assert said == (
        "error: key 'spare-only' may not be served by guarded (route 'code'); "
        "its pool: spare, large"
    )
    unknown = llmroute("route", "-r", str(registry), "--key", "wide", CODE)
    assert unknown.returncode == 2
    assert f"--key: that is not a key name in {registry} " in unknown.stderr
    # the one-line answer is the decision inside the pool
    plain = llmroute("route", "-r", str(registry), "--key", "narrow", CODE)
    assert plain.stdout.startswith("code -> small "), plain.stderr


def test_a_key_whose_models_leave_out_auto_is_refused_as_the_gateway_does(
    tmp_path: Path,
) -> None:
    """A key's ``models`` are the ``model`` values it may send: one without ``auto`` is
    refused the request this command decides by default (the gateway's 403
    ``model_not_allowed``); ``--key`` read only its ``pool`` and showed a decision the
    gateway never makes. The refusal points at ``--model``, which decides another."""
    path = tmp_path / "registry.yaml"
    path.write_text(
        REGISTRY
        + "    - {name: pinned, key_env: LLMROUTE_TEST_PINNED_KEY, models: [code, small]}\n"
        + "    - {name: routed, key_env: LLMROUTE_TEST_ROUTED_KEY, models: [auto], pool: [spare]}\n"
    )
    for stdin in (None, f"{CODE}\n".encode()):
        args = () if stdin is not None else (CODE,)
        result = llmroute("route", "-r", str(path), "--key", "pinned", *args, stdin=stdin)
        assert result.returncode == 2
        said = " ".join(result.stderr.split())
        assert said == (
            "error: --key pinned: key 'pinned' may not use model 'auto'; it may use: code, "
            "small (the gateway refuses this key a request for it: 403 model_not_allowed; "
            "--model NAME decides a request for NAME)"
        )
        assert result.stdout == ""
    decision = _json(path, CODE, "--key", "routed")  # auto listed: decided, inside its pool
    assert (decision["model"], decision["fallbacks"]) == ("spare", [])


def test_stdin_lines_carry_their_fallbacks(registry: Path) -> None:
    result = llmroute(
        "route", "-r", str(registry), "--key", "spare-only", stdin=f"{CODE}\nhi there\n".encode()
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["model"], d["fallbacks"]) for d in lines] == [
        ("large", ["spare"]),
        ("spare", ["large"]),
    ]
    stdin = f"hi\n{CODE} for bob@example.com\n".encode()
    refused = llmroute("route", "-r", str(registry), "--key", "spare-only", stdin=stdin)
    assert refused.returncode == 2
    assert "error: <stdin>:2: key 'spare-only' may not be served by guarded" in refused.stderr


def test_a_blocked_request_has_none(tmp_path: Path) -> None:
    """Nothing is sent, so nothing is fallen back to (the route's chain is not)."""
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY.replace("{pii: {route: guarded}}", "{pii: block}"))
    first, fallbacks = _explained(path, f"{CODE} for bob@example.com")
    assert first.startswith("code -> large ") and "BLOCKED by safety" in first
    assert fallbacks == "fallbacks: none (blocked by safety: nothing is sent)"


def test_a_key_given_instead_of_its_name_is_not_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--key sk-...`` (the key itself, which ``--key`` reads like): the error named the
    value given, the key's secret on stderr (a CI log). It now names the key whose it is,
    read from its ``key_env`` variable or matched with its ``sha256``."""
    from_env, hashed = "sk-narrow-41421356237", "sk-hashed-73205080756"
    digest = hashlib.sha256(hashed.encode()).hexdigest()
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY + f"    - {{name: hashed, sha256: {digest}, pool: [small]}}\n")
    monkeypatch.setenv("LLMROUTE_TEST_NARROW_KEY", from_env)
    for secret, name in ((from_env, "narrow"), (hashed, "hashed")):
        result = llmroute("route", "-r", str(path), "--key", secret, CODE)
        assert result.returncode == 2
        assert secret not in result.stdout + result.stderr
        said = " ".join(result.stderr.split())
        assert said == (
            "error: --key takes a client key's name (auth.keys[].name), not the key "
            f"itself: this one is key {name!r}'s, use --key {name}"
        )


@pytest.mark.parametrize(
    "value",
    [
        "sk-unknown-17320508075",  # a key's prefix: a secret the command's env doesn't hold
        "SK_live_unknown",
        "a" * 31,  # longer than a name is likely to be: a token
        "Bearer 4f3c2a",  # not a name at all
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "abc123",  # a short secret without a known prefix: shaped as a name is
        "wide",
    ],
)
def test_an_unknown_key_is_not_shown(registry: Path, value: str) -> None:
    """A secret the CLI cannot match to a key (its ``key_env`` unset where the command
    runs, or another registry's key) was echoed in the error, on stderr (a CI log); a
    short one shaped as a name (``abc123``) still was. No value that is not one of the
    registry's key names is echoed: the names are listed instead."""
    result = llmroute("route", "-r", str(registry), "--key", value, CODE)
    assert result.returncode == 2
    assert value not in result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert said == (
        f"error: --key: that is not a key name in {registry} (auth.keys[].name; the value "
        "given is not shown: it may be a key itself) (keys: narrow, spare-only)"
    )


def test_a_near_miss_of_a_key_name_names_the_key_not_the_value(registry: Path) -> None:
    result = llmroute("route", "-r", str(registry), "--key", "narow", CODE)
    assert result.returncode == 2
    assert "narow" not in result.stderr.replace("narrow", "")
    assert " ".join(result.stderr.split()).endswith(
        "(keys: narrow, spare-only) (did you mean 'narrow'?)"
    )
