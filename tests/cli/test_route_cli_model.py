"""`llmroute route --model NAME` decides a request for NAME as the gateway reads a chat
request's ``model`` (``auto``, a route, a pool model, ``router-<kind>-<threshold>``, an
alias of one), run as a user runs it; the expectations mirror ``POST /v1/route``'s on the
same registry (tests/server/test_route_endpoint_fallbacks.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pool_registries import FALLBACKS, random_difficulty_router
from test_route_cli import llmroute

REGISTRY = (
    FALLBACKS
    + """aliases:
  gpt-4o: auto
  fast: chat
  "claude-*": spare
auth:
  keys:
    - {name: pinned, key_env: LLMROUTE_TEST_PINNED_KEY, models: [code, fast, small]}
    - {name: spare-only, key_env: LLMROUTE_TEST_SPARE_KEY, pool: [spare, large]}
"""
)

CODE = "debug this SQL query"
UNCLAIMED = "weather on mars"
UNKNOWN = (
    "error: --model: the model 'nope' does not exist: use 'auto', a route or a pool model "
    "(GET /v1/models lists them)"
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "registry.yaml"
    path.write_text(REGISTRY)
    return path


def _json(registry: Path, text: str, *args: str) -> dict[str, object]:
    result = llmroute("route", "-r", str(registry), "--json", *args, text)
    assert result.returncode == 0, result.stderr
    decision: dict[str, object] = json.loads(result.stdout)
    return decision


def _chain(registry: Path, text: str, *args: str) -> tuple[object, ...]:
    decision = _json(registry, text, *args)
    assert isinstance(decision["fallbacks"], list)
    return (decision["route"], decision["model"], *decision["fallbacks"])


def _refused(registry: Path, *args: str, stdin: bytes | None = None) -> str:
    """The one-line error of a refused `llmroute route`, its whitespace folded."""
    result = llmroute("route", "-r", str(registry), *args, stdin=stdin)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    return " ".join(result.stderr.split())


def test_auto_routes_as_without_it(registry: Path) -> None:
    assert _chain(registry, CODE, "--model", "auto") == ("code", "large", "small", "spare")
    assert _chain(registry, UNCLAIMED) == ("default", "small", "spare", "large")


def test_a_route_name_pins_the_route_with_its_chain(registry: Path) -> None:
    decision = _json(registry, UNCLAIMED, "--model", "code")
    assert (decision["route"], decision["model"], decision["layer"]) == ("code", "large", "pinned")
    assert decision["fallbacks"] == ["small", "spare"]
    assert decision["reason"] == "pinned by the request's model 'code'"
    plain = llmroute("route", "-r", str(registry), "--model", "code", UNCLAIMED)
    assert plain.stdout.startswith("code -> large  (pinned, confidence 1.00)"), plain.stderr


def test_a_pool_model_is_pinned_alone(registry: Path) -> None:
    assert _chain(registry, CODE, "--model", "spare") == ("pinned", "spare")
    result = llmroute("route", "-r", str(registry), "--explain", "--model", "spare", CODE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pinned -> spare  (pinned, ")
    assert lines[1] == "reason: pinned by the request's model 'spare'"
    assert "fallbacks: none (pinned: the request named spare, which is tried alone)" in lines


def test_an_alias_is_read_as_its_target(registry: Path) -> None:
    assert _chain(registry, CODE, "--model", "gpt-4o") == ("code", "large", "small", "spare")
    decision = _json(registry, CODE, "--model", "fast")
    assert (decision["route"], decision["model"], decision["fallbacks"]) == ("chat", "small", [])
    assert decision["reason"] == "pinned by the request's model 'fast' (an alias of 'chat')"
    glob = _json(registry, CODE, "--model", "claude-sonnet-4-5")
    assert (glob["route"], glob["model"]) == ("pinned", "spare")
    assert glob["reason"] == (
        "pinned by the request's model 'claude-sonnet-4-5' (an alias of 'spare')"
    )


def test_an_unknown_model_is_one_line_naming_it_and_what_is_accepted(registry: Path) -> None:
    assert _refused(registry, "--model", "nope", CODE) == UNKNOWN
    # before stdin is read, not once a line
    assert _refused(registry, "--model", "nope", stdin=f"{CODE}\nhi\n".encode()) == UNKNOWN
    assert _refused(registry, "--model", "router-mf-0.4", CODE) == (
        "error: --model: the model 'router-mf-0.4' names a difficulty router, and this "
        "registry declares none (default.difficulty)"
    )


def test_stdin_lines_are_decided_for_the_model(registry: Path) -> None:
    stdin = f"{CODE}\n{UNCLAIMED}\n".encode()
    result = llmroute("route", "-r", str(registry), "--model", "code", stdin=stdin)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["route"], d["layer"], d["fallbacks"]) for d in lines] == [
        ("code", "pinned", ["small", "spare"]),
        ("code", "pinned", ["small", "spare"]),
    ]


def test_a_key_is_refused_what_its_models_leave_out_as_the_gateway_does(
    registry: Path,
) -> None:
    """A key listing route names only is previewed for them; ``auto`` and a model it does
    not list get the gateway's 403 text, and before an unknown name's 404, as the gateway
    checks them."""
    assert _chain(registry, CODE, "--key", "pinned", "--model", "code")[:2] == ("code", "large")
    assert _chain(registry, CODE, "--key", "pinned", "--model", "fast") == ("chat", "small")
    suffix = (
        "(the gateway refuses this key a request for it: 403 model_not_allowed; --model "
        "NAME decides a request for NAME)"
    )
    for model, shown in (("auto", "auto"), ("spare", "spare"), ("nope", "nope")):
        args = ("--key", "pinned") + (("--model", model) if model != "auto" else ())
        assert _refused(registry, *args, CODE) == (
            f"error: --key pinned: key 'pinned' may not use model '{shown}'; it may use: "
            f"code, fast, small {suffix}"
        )
    # a pinned model outside the key's pool: the gateway's 403, stdin's line named
    assert _refused(registry, "--key", "spare-only", "--model", "small", CODE) == (
        "error: key 'spare-only' may not be served by small (route 'pinned'); its pool: "
        "spare, large"
    )
    stdin = f"{CODE}\n".encode()
    assert _refused(registry, "--key", "spare-only", "--model", "small", stdin=stdin).startswith(
        "error: <stdin>:1: key 'spare-only' may not be served by small"
    )


@pytest.fixture(scope="module")
def difficulty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("difficulty")
    router = random_difficulty_router(folder)
    path = folder / "registry.yaml"
    path.write_text(
        FALLBACKS.replace(
            "default: {target: small, policy: {fallback: [spare, large]}}",
            f"default:\n  target: spare\n  difficulty: {{router: {router}, strong: large, "
            "weak: small, threshold: 0.5}",
        )
    )
    return path


def test_a_difficulty_router_model_decides_alone_at_its_threshold(difficulty: Path) -> None:
    for threshold, model in (("1000", "small"), ("-1000", "large")):
        decision = _json(difficulty, CODE, "--model", f"router-random-{threshold}")
        assert (decision["route"], decision["model"], decision["layer"]) == (
            "default",
            model,
            "difficulty",
        )
        layers = decision["layers"]
        assert isinstance(layers, list)
        assert "intent" not in [layer["layer"] for layer in layers]  # the difficulty router alone
    assert _refused(difficulty, "--model", "router-knn-0.5", CODE) == (
        "error: --model: the model 'router-knn-0.5' is not 'router-random-<threshold>', the "
        "difficulty router this registry declares"
    )
