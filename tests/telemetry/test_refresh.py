"""`refresh`: mining low-margin and default traffic into a candidate registry."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from log_factory import logged

from llmroute.decide import Router
from llmroute.registry import parse_registry
from llmroute.telemetry.record import LoggedDecision
from llmroute.telemetry.refresh import (
    NoPrompts,
    RefreshConfig,
    average_linkage,
    mine_prompts,
    propose,
    routing_change,
)

REGISTRY = """\
# a small registry for the refresh tests
encoder: builtin:static
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:8001/v1"}
models:
  small: {provider: local, model: s, price: {input: 0.1, output: 0.4}}
  large: {provider: local, model: l, price: {input: 3, output: 15}}
intent:
  threshold: 0.5
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
    examples:
      - recipe for chocolate cake
      - how long to boil an egg
      - cooking pasta with garlic sauce
      - best recipe for dinner tonight
default: {target: small}
"""

PASSPORT = [
    f"{verb} my passport {where}"
    for verb, where in itertools.product(
        ["how do I renew", "where can I renew", "what documents renew", "how long to renew"],
        ["at the embassy", "for travel abroad", "before it expires", "online", "by mail"],
    )
]  # 20 paraphrases of a topic no route covers
WEATHER_LIKE = [
    f"weather forecast {when} {place}"
    for when, place in itertools.product(
        ["tomorrow", "this weekend", "today"], ["in london", "in rome", "for the coast"]
    )
]  # close to the weather route, but logged with a low margin
ORDINARY = [
    "write a python function to reverse a string",
    "fix the bug in this python class",
    "recipe for banana bread",
    "how long to cook rice",
    "will it snow tomorrow in oslo",
]


def make_log() -> list[LoggedDecision]:
    log = [logged("default", margin=0.05, prompt=p, ts=100.0 + i) for i, p in enumerate(PASSPORT)]
    log += [logged("weather", margin=0.04, prompt=p, ts=200.0) for p in WEATHER_LIKE]
    log += [logged("code", margin=0.8, prompt=p, ts=300.0) for p in ORDINARY * 4]
    log += [logged("default", margin=0.05, prompt=PASSPORT[0], ts=400.0)]  # a repeat
    return log


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Router:
    loaded = parse_registry(REGISTRY, source="test.yaml")
    return Router(loaded, cache_dir=tmp_path_factory.mktemp("cache"))


def test_mining_takes_default_and_low_margin_prompts_once() -> None:
    mined, with_prompt = mine_prompts(make_log(), max_margin=0.1)
    assert with_prompt == len(make_log())
    texts = [m.text for m in mined]
    assert texts == PASSPORT + WEATHER_LIKE  # ordinary high-margin traffic left out
    assert len(texts) == len(set(texts))


def test_average_linkage_finds_separated_groups() -> None:
    a = [[1.0, 0.0, 0.0]] * 3
    b = [[0.0, 1.0, 0.0]] * 2
    c = [[0.0, 0.0, 1.0]]
    assert average_linkage(a + b + c, 0.5) == [[0, 1, 2], [3, 4], [5]]
    assert average_linkage([], 0.5) == []


def test_new_topic_becomes_a_candidate_route(router: Router) -> None:
    proposal = propose(make_log(), router, RefreshConfig(), original_text=REGISTRY)
    new = proposal.new_routes
    assert list(new) == ["candidate-1"], proposal.to_dict()
    assert len(new["candidate-1"]) == 5
    assert set(new["candidate-1"]) <= set(PASSPORT)
    cluster = next(c for c in proposal.clusters if c.new)
    assert cluster.size >= 15 and cluster.was_routed == {"default": cluster.size}
    # the written candidate: loads, has the route with the default's target, marked
    data = yaml.safe_load(proposal.yaml_text)
    route = next(r for r in data["routes"] if r["name"] == "candidate-1")
    assert route["target"] == "small"
    assert "# candidate route mined by llmroute refresh" in proposal.yaml_text
    assert proposal.candidate.registry.routes[-1].name == "candidate-1"


def test_prompts_near_an_existing_route_become_its_examples(router: Router) -> None:
    proposal = propose(make_log(), router, RefreshConfig(), original_text=REGISTRY)
    added = proposal.added_examples
    assert list(added) == ["weather"], proposal.to_dict()
    assert set(added["weather"]) <= set(WEATHER_LIKE)
    weather = next(r for r in proposal.candidate.registry.routes if r.name == "weather")
    assert weather.examples[:4] == (
        "what is the weather tomorrow",
        "will it rain today in paris",
        "weather forecast for the weekend",
        "is it sunny outside today",
    )
    assert len(weather.examples) == 4 + len(added["weather"])
    assert "llmroute refresh added the last" in proposal.yaml_text


def test_the_candidate_routes_the_mined_topic_to_the_new_route(router: Router) -> None:
    proposal = propose(make_log(), router, RefreshConfig(), original_text=REGISTRY)
    candidate = Router(proposal.candidate, encoder=router.encoder)
    change = routing_change(router, candidate, PASSPORT)
    moved = {(a, b): k for a, b, k in change.transitions}
    assert moved.get(("default", "candidate-1"), 0) >= 10, change.to_dict()
    unchanged = routing_change(router, candidate, ["recipe for chocolate cake"])
    assert unchanged.changed == 0


def test_min_cluster_drops_small_groups(router: Router) -> None:
    proposal = propose(make_log(), router, RefreshConfig(min_cluster=50), original_text=REGISTRY)
    assert proposal.clusters == [] and proposal.n_clustered == 0
    assert proposal.candidate.registry == parse_registry(REGISTRY).registry


def test_hash_only_log_is_a_clear_error(router: Router) -> None:
    log = [logged("default", margin=0.01) for _ in range(5)]
    with pytest.raises(NoPrompts, match=r"telemetry\.prompts: full or redacted"):
        propose(log, router)


def test_live_registry_file_is_not_touched(router: Router, tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY, encoding="utf-8")
    loaded = parse_registry(REGISTRY, source=str(path), base_dir=tmp_path)
    live = Router(loaded, encoder=router.encoder, cache_dir=tmp_path)
    proposal = propose(make_log(), live)
    assert path.read_text(encoding="utf-8") == REGISTRY
    assert proposal.new_routes
