"""A request the LLM router moves to another route stays under the safety profile its
first route gave it, on `llmroute serve` (a real process on 127.0.0.1, the fake OpenAI
upstream behind it, its router model always answering ``code``): the chosen route's
profile is applied as well, the stricter action for each finding. It was the chosen
route's alone: an address route mail redacts went to route code's model as written.
`/v1/route`, the decision log and ``llmroute route --explain`` name both profiles."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text, wait_for

LLMROUTE = str(Path(sys.executable).parent / "llmroute")
PICKER = "up-picker?reply=" + quote('{"route": "code"}')

REGISTRY = """
encoder: builtin:static
intent: {method: knn, k: 1}
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  large: {provider: fake, model: up-large}
  guarded: {provider: fake, model: up-guarded}
  thinker: {provider: fake, model: up-thinker}
  picker: {provider: fake, model: "%(picker)s"}
routes:
  - name: code
    examples: [debug this SQL query, write a python function]
    target: large
    threshold: 0.25
    reasoning_target: thinker
    policy: {safety: strict, fallback: [small]}
  - name: mail
    examples: [send a letter to my landlord, write a note to my neighbour]
    target: small
    threshold: 0.25
    policy: {safety: careful}
default: {target: small}
safety:
  injection: {enabled: false}
  profiles:
    open: {pii: allow}
    careful: {pii: {EMAIL: redact, "*": allow}}
    strict: {pii: {US_SSN: block, IBAN: {route: guarded}, "*": allow}}
  profile: open
reasoning: {scorer: null}
llm_fallback: {model: picker, margin: 1.0, timeout_s: 5}
"""

LETTER = "send a letter to my landlord"
EMAIL = f"{LETTER} at bob@example.com"
SSN = f"{LETTER} about ssn 536-22-1234"
IBAN = f"{LETTER} with iban GB82 WEST 1234 5698 7654 32"


@dataclass
class Gateway:
    served: Served
    db: Path
    registry: Path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("llm-router-safety")
    db = tmp / "decisions.db"
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"}
    text = REGISTRY % {"url": upstream.url, "picker": PICKER}
    with serve_text(text, tmp, env=env) as served:
        yield Gateway(served, db, tmp / "registry.yaml")


def _post(gateway: Gateway, path: str, text: str) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{gateway.served.url}{path}", json=body, timeout=10)


def _route(gateway: Gateway, text: str) -> dict[str, Any]:
    answer = _post(gateway, "/v1/route", text)
    assert answer.status_code == 200, answer.text
    decided: dict[str, Any] = answer.json()
    return decided


def _sent(upstream: FakeUpstream, before: int) -> list[tuple[str, str]]:
    """The routed models called since `before` (not the router model), with the text."""
    return [
        (r.body["model"], r.body["messages"][-1]["content"])
        for r in upstream.requests[before:]
        if not r.body["model"].startswith("up-picker")
    ]


def _logged(gateway: Gateway, decision_id: str) -> tuple[str, str, dict[str, Any]]:
    """The decision log's route, layer and safety outcome of `decision_id`."""

    def row() -> Any:
        try:
            with contextlib.closing(sqlite3.connect(gateway.db)) as conn:
                query = "SELECT route, layer, signals FROM decisions WHERE id = ?"
                return conn.execute(query, (decision_id,)).fetchone()
        except sqlite3.OperationalError:  # the log's table is not made yet
            return None

    wait_for("the decision in the log", lambda: row() is not None, 10, gateway.served.log)
    route, layer, signals = row()
    return route, layer, json.loads(signals)["safety"]


def test_the_first_routes_redaction_holds_on_the_route_the_llm_router_chose(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    """Route mail redacts an e-mail address, route code (the router model's choice)
    allows it: code's model gets the placeholder, and the decision says why."""
    decided = _route(gateway, EMAIL)
    assert (decided["route"], decided["layer"], decided["model"]) == ("code", "llm_router", "large")
    assert decided["fallbacks"] == ["small"]
    safety = decided["safety"]
    assert (safety["profile"], safety["action"], safety["fired"]) == (
        "careful+strict",
        "redact",
        ["pii:EMAIL"],
    )
    assert (
        "the safety profile of route 'mail' kept as well (careful+strict: redact)"
        in decided["reason"]
    )

    before = len(upstream.requests)
    served = _post(gateway, "/v1/chat/completions", EMAIL)
    assert served.status_code == 200, served.text
    assert served.headers["x-llmroute-route"] == "code"
    assert _sent(upstream, before) == [("up-large", f"{LETTER} at <EMAIL_1>")]
    route, layer, logged = _logged(gateway, served.headers["x-llmroute-decision-id"])
    assert (route, layer) == ("code", "llm_router")
    assert (logged["profile"], logged["action"]) == ("careful+strict", "redact")


def test_the_chosen_routes_block_and_guarded_model_hold(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    """Route code blocks an SSN and sends an IBAN to its guarded model, which mail
    allows: the stricter action is code's (named with both profiles)."""
    before = len(upstream.requests)
    refused = _post(gateway, "/v1/chat/completions", SSN)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "content_policy_violation"
    assert "careful+strict" in error["message"] and "pii:US_SSN" in error["message"]
    assert "536-22" not in refused.text
    assert _sent(upstream, before) == []

    decided = _route(gateway, IBAN)
    assert (decided["route"], decided["model"], decided["fallbacks"]) == ("code", "guarded", [])
    assert decided["safety"]["profile"] == "careful+strict"
    before = len(upstream.requests)
    served = _post(gateway, "/v1/chat/completions", IBAN)
    assert served.status_code == 200, served.text
    assert [model for model, _ in _sent(upstream, before)] == ["up-guarded"]


def test_the_chosen_routes_reasoning_tier_serves_the_redacted_request(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    text = f"{EMAIL}, step by step"
    decided = _route(gateway, text)
    assert (decided["route"], decided["model"], decided["fallbacks"]) == (
        "code",
        "thinker",
        ["small"],
    )
    assert decided["reasoning"]["tier"] == "thinker"
    before = len(upstream.requests)
    served = _post(gateway, "/v1/chat/completions", text)
    assert served.status_code == 200, served.text
    assert _sent(upstream, before) == [("up-thinker", f"{LETTER} at <EMAIL_1>, step by step")]


def test_route_explain_names_both_profiles(gateway: Gateway) -> None:
    out = subprocess.run(
        [LLMROUTE, "route", "--registry", str(gateway.registry), "--explain", EMAIL],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "200", "LLMROUTE_TELEMETRY_URL": "off"},
    )
    assert out.returncode == 0, out.stderr
    assert "code -> large  (llm_router, confidence 1.00)" in out.stdout
    assert "safety: REDACT (profile careful+strict: pii:EMAIL)" in out.stdout
    assert "the safety profile of route 'mail' kept as well (careful+strict: redact)" in out.stdout
