"""`diff_registries` and `read_traffic`: the same requests routed by two registries
(static encoder, offline), and the traffic files they are read from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmroute.decide import Router
from llmroute.encoders import load_builtin
from llmroute.errors import DataError
from llmroute.evaluate.registry_diff import BLOCKED, Traffic, diff_registries, read_traffic
from llmroute.registry import parse_registry

BASE = """
encoder: builtin:static
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  small: {provider: p, model: s, price: {input: 1, output: 2}}
  large: {provider: p, model: l, price: {input: 10, output: 20}}
  thinker: {provider: p, model: t, price: {input: 30, output: 60}, reasoning: true}
routes:
  - {name: code, examples: [write a python function, fix this bug in my code], target: small,
     threshold: 0.7}
  - {name: chat, examples: [hello there, how are you today], target: small, threshold: 0.7}
default: {target: large}
"""
NEW = (
    BASE.replace(
        "fix this bug in my code], target: small", "fix this bug in my code], target: large"
    ).replace("default: {target: large}", "default: {target: large, reasoning_target: thinker}")
    + "reasoning: {scorer: null}\n"
    + "safety:\n  profiles: {strict: {injection: allow, pii: {SECRET: block, '*': allow}}}\n"
    + "  profile: strict\n"
)
CODE = "write a python function that reverses a string"
HELLO = "hello there, how are you today?"
SECRET = "my key is AKIAIOSFODNN7EXAMPLE, keep it safe"
PROOF = "prove that the square root of two is irrational"


def _router(text: str, tmp_path: Path) -> Router:
    return Router(
        parse_registry(text, source="r.yaml"), encoder=load_builtin("static"), cache_dir=tmp_path
    )


def test_moves_shares_safety_thinking_and_cost(tmp_path: Path) -> None:
    traffic = [
        Traffic(CODE, 100, 50),
        Traffic(CODE + " in place", 100, 50),
        Traffic(HELLO, 10, 10),
        Traffic(SECRET, 20, 20),
        Traffic(PROOF),  # no token counts: not priced
    ]
    diff = diff_registries(_router(BASE, tmp_path), _router(NEW, tmp_path), traffic, examples=1)
    assert diff.n == 5
    assert [(m.before, m.after, m.count) for m in diff.model_moves] == [
        ("small", "large", 2),
        ("large", BLOCKED, 1),
        ("large", "thinker", 1),
    ]
    assert diff.model_moves[0].examples == (CODE,)  # one example a move, as asked
    assert diff.route_changed == 0  # the routes kept their requests; their models changed
    assert diff.models_before == {"small": 3, "large": 2}
    assert diff.models_after == {"large": 2, BLOCKED: 1, "small": 1, "thinker": 1}
    assert diff.safety_before == {"none": 5}
    assert diff.safety_after == {"allow": 4, "block": 1}
    assert (diff.thinking_before, diff.thinking_after) == (0, 1)
    # 4 priced: base 2x(100x1+50x2) + (10x1+10x2) + the secret on large (20x10+20x20)
    assert diff.priced == 4
    assert diff.cost_before_usd == pytest.approx(1030 / 1e6)
    # new: 2x(100x10+50x20) + 30 (hello, small) + 0 (blocked) = 4030
    assert diff.cost_after_usd == pytest.approx(4030 / 1e6)
    payload = diff.to_dict()
    assert payload["model_changed_share"] == pytest.approx(0.8)
    assert payload["models"]["thinker"] == {"before": 0, "after": 1}
    json.dumps(payload)


def test_a_route_move_and_the_same_registry(tmp_path: Path) -> None:
    moved = BASE.replace("[hello there, how are you today]", "[what is the weather]")
    base = _router(BASE, tmp_path)
    diff = diff_registries(base, _router(moved, tmp_path), [Traffic(HELLO), Traffic(CODE)])
    assert [(m.before, m.after, m.count) for m in diff.route_moves] == [("chat", "default", 1)]
    assert [(m.before, m.after) for m in diff.model_moves] == [("small", "large")]
    same = diff_registries(base, base, [Traffic(HELLO), Traffic(CODE)])
    assert (same.route_changed, same.model_changed, same.priced) == (0, 0, 0)


def test_long_examples_are_cut_on_one_line(tmp_path: Path) -> None:
    text = "tell me\n" + "something about nothing at all " * 10
    moved = BASE.replace("default: {target: large}", "default: {target: small}")
    diff = diff_registries(_router(BASE, tmp_path), _router(moved, tmp_path), [Traffic(text)])
    (example,) = diff.model_moves[0].examples
    assert len(example) == 80 and example.endswith("…") and "\n" not in example


def test_traffic_from_plain_lines_and_from_an_export(tmp_path: Path) -> None:
    plain = tmp_path / "prompts.txt"
    plain.write_text(f"{CODE}\n\n{HELLO}\n")
    assert read_traffic(plain).requests == [Traffic(CODE), Traffic(HELLO)]
    exported = tmp_path / "export.jsonl"
    rows = [
        {"prompt": CODE, "tokens_in": 12, "tokens_out": 30, "layer": "intent"},
        {"prompt": None, "tokens_in": 5, "tokens_out": 0, "layer": "intent"},  # hash only
        {"prompt": HELLO, "tokens_in": None, "layer": "pinned"},  # the client chose
        {"text": HELLO},
    ]
    exported.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    read = read_traffic(exported)
    assert read.requests == [Traffic(CODE, 12, 30), Traffic(HELLO)]
    assert (read.without_text, read.pinned) == (1, 1)


@pytest.mark.parametrize("name", ["export.ndjson", "export.json", "EXPORT.JSONL"])
def test_an_export_under_another_jsonl_name_is_read_as_jsonl(tmp_path: Path, name: str) -> None:
    """Only ".jsonl" was JSONL: `export -o traffic.ndjson` was read as plain text, each
    JSON line routed as a prompt (every request compared, silently wrong)."""
    exported = tmp_path / name
    exported.write_text(json.dumps({"prompt": CODE, "tokens_in": 12, "tokens_out": 30}) + "\n")
    assert read_traffic(exported).requests == [Traffic(CODE, 12, 30)]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"intent": "code"}', "needs a 'prompt' (or 'text') string"),
        ('{"prompt": 3}', "'prompt' must be a non-empty string"),
        ('{"prompt": "hi", "tokens_in": -1}', "'tokens_in' must be a whole number >= 0"),
        ('{"prompt": "hi", "tokens_out": true}', "'tokens_out' must be a whole number"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_bad_rows_are_named_by_line(tmp_path: Path, line: str, words: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(DataError) as caught:
        read_traffic(path)
    assert caught.value.line == 2 and words in str(caught.value)
