"""The intent layer is unsure of a request mostly in scripts its encoder does not read.

Decisions with the real static encoder (BERT's English WordPiece vocabulary: Latin only)
on prompts written for these tests (none is in benchmarks/data); `scripts: any` turns
the check off and routes as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmroute.assemble import SCRIPT_WINDOW, script_check
from llmroute.decide import Router
from llmroute.decision import Decision, LayerSignal, Outcome
from llmroute.encoders import CachedEncoder, RemoteEncoder, load_builtin
from llmroute.encoders.fake import FakeEncoder
from llmroute.layers.intent import UNREAD_SCRIPTS, IntentLayer
from llmroute.registry import parse_registry

REGISTRY = """
encoder: %(encoder)s
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:8001/v1"}
models:
  small: {provider: local, model: s}
  large: {provider: local, model: l}
intent:
  threshold: 0.3
  out_of_scope: [what is the capital of peru, who won the football match yesterday]
routes:
  - name: code
    target: large
    examples:
      - write a python function to parse json
      - fix this python bug in my function
      - refactor this javascript class into smaller methods
      - why does this sql query return duplicate rows
  - name: weather
    target: small
    examples:
      - what is the weather tomorrow
      - will it rain today in paris
      - weather forecast for the weekend
  - name: translate
    target: small
    examples:
      - translate this sentence into french
      - how do you say thank you in japanese
      - what does this german word mean in english
default: {target: small}
"""

STATIC = "builtin:static"
UNREAD = [
    ("帮我写一个函数，把字符串反转过来", "Han 100%"),
    ("明天北京会下雨吗？", "Han 100%"),
    ("اكتب دالة تعكس النص", "Arabic 100%"),
    ("Какая погода будет завтра в Москве?", "Cyrillic 100%"),
]
READ = [
    ("write a python function that reverses a string", "code"),
    ("will it rain tomorrow in london", "weather"),
    # code with Chinese comments is still code: its identifiers outweigh the comments
    (
        "fix the bug in this python function:\n"
        "def reverse(s):  # 反转字符串\n"
        "    return s[::-1]  # 返回结果\n",
        "code",
    ),
    # mostly English, with a few words in other scripts
    ("how do you say 谢谢 and спасибо in french?", "translate"),
]


def router_for(tmp_path: Path, encoder: str = STATIC) -> Router:
    return Router(parse_registry(REGISTRY % {"encoder": encoder}), cache_dir=tmp_path)


def intent_signal(decision: Decision) -> LayerSignal:
    return next(s for s in decision.signals if s.layer == "intent")


def intent_layer(router: Router) -> IntentLayer:
    return next(layer for layer in router.layers if isinstance(layer, IntentLayer))


@pytest.fixture(scope="module")
def routers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Router, Router]:
    """The static encoder as declared (Latin), and told it reads any script."""
    cache = tmp_path_factory.mktemp("cache")
    any_script = "{kind: builtin, name: static, scripts: any}"
    return router_for(cache), router_for(cache, any_script)


@pytest.mark.parametrize(("text", "shares"), UNREAD)
def test_text_mostly_in_a_script_the_encoder_does_not_read_is_unsure(
    routers: tuple[Router, Router], text: str, shares: str
) -> None:
    latin, any_script = routers
    decision = latin.decide(text)
    reason = f"text mostly in a script the encoder does not read ({shares} of the letters)"
    assert (decision.layer, decision.route, decision.model) == ("default", "default", "small")
    assert decision.reason == f"default: {reason}"
    assert decision.confidence == 0.0 and decision.margin is None
    signal = intent_signal(decision)
    assert signal.outcome is Outcome.PASSED and not signal.candidates
    assert dict(signal.detail) == {"reason": reason, UNREAD_SCRIPTS: shares}
    # Told that the encoder reads every script, the intent layer scores the same text
    # (and with these examples routes it with some confidence, meaningless as it is).
    scored = any_script.decide(text)
    assert intent_signal(scored).candidates and UNREAD_SCRIPTS not in intent_signal(scored).detail


@pytest.mark.parametrize(("text", "route"), READ)
def test_latin_text_code_with_cjk_comments_and_mixed_text_route_as_with_any(
    routers: tuple[Router, Router], text: str, route: str
) -> None:
    latin, any_script = routers
    check = intent_layer(latin).scripts
    assert check is not None and check.reads == ("latin",)  # the check ran, and passed
    assert intent_layer(any_script).scripts is None
    decision, before = latin.decide(text), any_script.decide(text)
    assert (decision.layer, decision.route) == ("intent", route), decision.reason
    assert (decision.route, decision.confidence, decision.margin, decision.reason) == (
        before.route,
        before.confidence,
        before.margin,
        before.reason,
    )
    assert intent_signal(decision).candidates == intent_signal(before).candidates


def test_declared_scripts_are_scored_the_others_are_not(tmp_path: Path) -> None:
    router = router_for(tmp_path, "{kind: builtin, name: static, scripts: [latin, cyrillic]}")
    russian = router.decide("Какая погода будет завтра в Москве?")
    assert intent_signal(russian).candidates and UNREAD_SCRIPTS not in intent_signal(russian).detail
    chinese = router.decide("明天北京会下雨吗？")
    assert chinese.reason.startswith("default: text mostly in a script the encoder does not read")


def test_an_unread_request_is_not_embedded_when_nothing_else_needs_it(tmp_path: Path) -> None:
    encoder = FakeEncoder()
    spec = "{kind: builtin, name: static, scripts: [latin]}"
    router = Router(
        parse_registry(REGISTRY % {"encoder": spec}), encoder=encoder, cache_dir=tmp_path
    )
    calls = encoder.calls
    decision = router.decide("明天北京会下雨吗？")
    assert decision.layer == "default" and UNREAD_SCRIPTS in intent_signal(decision).detail
    assert encoder.calls == calls and decision.encode_us == 0.0
    assert router.decide("will it rain tomorrow").layer == "intent"
    assert encoder.calls == calls + 1


def test_what_each_kind_of_encoder_reads(tmp_path: Path) -> None:
    """The built-ins declare Latin; an embeddings endpoint declares nothing (any), unless
    the registry names its scripts; the window is what the encoder reads."""
    static = load_builtin("static")
    assert static.scripts == ("latin",)  # type: ignore[attr-defined]
    assert CachedEncoder(static, tmp_path).scripts == ("latin",)  # wrapped, still declared
    assert CachedEncoder(FakeEncoder(), tmp_path).scripts is None
    builtin = parse_registry(REGISTRY % {"encoder": STATIC}).registry
    check = script_check(builtin, static)
    assert check is not None and (check.window, check.truncate) == (256 * 6, "head")
    tail = parse_registry(
        REGISTRY % {"encoder": "{kind: builtin, name: static, max_tokens: 64, truncate: tail}"}
    ).registry
    check = script_check(tail, static)
    assert check is not None and (check.window, check.truncate) == (64 * 6, "tail")
    endpoint = "{kind: openai, base_url: 'http://127.0.0.1:9/v1', model: e5%s}"
    remote = RemoteEncoder("http://127.0.0.1:9/v1", "e5")
    try:
        plain = parse_registry(REGISTRY % {"encoder": endpoint % ""}).registry
        assert script_check(plain, remote) is None
        declared = parse_registry(REGISTRY % {"encoder": endpoint % ", scripts: latin"}).registry
        check = script_check(declared, remote)
        assert check is not None and check.reads == ("latin",) and check.window == SCRIPT_WINDOW
    finally:
        remote.close()
