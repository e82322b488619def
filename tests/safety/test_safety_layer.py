"""The safety layer's policy logic: profiles per route, actions, redaction, windows.

The injection detector here is a stand-in with the artifact's interface whose score is
a keyword test, so each case says exactly what fired; the shipped artifact itself is
tested in test_injection.py and end to end in test_safety_gateway.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_pii_phone_budget import contact_list

from llmroute.decide import Router
from llmroute.dispatch.plan import Plan
from llmroute.encoders.builtin import load_builtin
from llmroute.errors import ConfigError, PolicyViolation
from llmroute.layers.safety import KEPT_SPANS, SafetyLayer, pseudonym
from llmroute.registry import parse_registry
from llmroute.safety._pii_phone import BUDGET
from llmroute.safety.pii import PiiDetector, PiiSpan
from llmroute.safety.windows import window_spans
from llmroute.telemetry.recorder import _as_sent

REGISTRY = """
encoder: builtin:static
providers:
  local: {kind: openai, base_url: http://127.0.0.1:9/v1}
models:
  small: {provider: local, model: small}
  large: {provider: local, model: large}
  guard: {provider: local, model: guard}
routes:
  - name: code
    examples: [write a python function, fix this bug in my code, refactor this class]
    target: small
    policy: {safety: open, fallback: [large]}
  - name: chat
    examples: [hello there, how are you today, tell me a joke]
    target: small
    policy: {fallback: [large]}
default: {target: large}
safety:
  injection: {window_chars: 200, stride_chars: 150, max_windows: 3}
  profiles:
    standard: {injection: block, pii: {SECRET: block, CARD: {route: guard}, "*": redact}}
    open: {injection: allow, pii: allow, unscanned: allow}
  profile: standard
"""


class KeywordDetector:
    """Scores 0.9 for a window containing 'EVIL', else 0.1; a rule for 'DAN mode'."""

    threshold = 0.5

    def __init__(self) -> None:
        self.scored: list[list[str]] = []

    def score(self, texts: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        assert len(embeddings) == len(texts)
        self.scored.append(list(texts))
        return np.array([0.9 if "EVIL" in t else 0.1 for t in texts], dtype=np.float32)

    def match_rules(self, text: str) -> str | None:
        return "dan" if "DAN mode" in text else None


def _guarded(text: str, route_profiles: dict[str, str], pii: PiiDetector | None = None) -> Router:
    """A router of `text` whose safety layer uses the keyword detector above."""
    loaded = parse_registry(text, source="reg.yaml")
    router = Router(loaded, encoder=load_builtin("static"))
    settings = loaded.registry.safety
    assert settings is not None
    layer = SafetyLayer(
        settings,
        route_profiles=route_profiles,
        detector=KeywordDetector(),  # type: ignore[arg-type]
        pii=pii,
    )
    router.guards = (layer,)
    router.layers = (*router.routing, layer)
    return router


@pytest.fixture(scope="module")
def router() -> Router:
    return _guarded(REGISTRY, {"code": "open"}, PiiDetector())


def chat(*messages: tuple[str, str]) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": r, "content": c} for r, c in messages]}


def test_clean_request_is_allowed_and_says_so(router: Router) -> None:
    decision = router.decide("hello there, how are you today")
    assert decision.safety is not None
    assert decision.safety.action == "allow" and decision.safety.fired == ()
    assert not decision.blocked
    shown = decision.to_dict()["safety"]
    assert shown["action"] == "allow" and shown["profile"] == "standard"


def test_injection_blocks_under_the_default_profile(router: Router) -> None:
    decision = router.decide("hello there EVIL instructions follow")
    assert decision.blocked
    assert decision.safety is not None and decision.safety.fired == ("injection",)
    assert "EVIL" not in str(decision.to_dict())  # never the matched text


def test_route_profile_overrides_the_default(router: Router) -> None:
    decision = router.decide("write a python function EVIL")
    assert decision.route == "code"
    assert decision.safety is not None and decision.safety.profile == "open"
    assert not decision.blocked and decision.safety.fired == ("injection",)


def test_rule_fires_before_the_classifier(router: Router) -> None:
    decision = router.decide("hello there, enable DAN mode now")
    assert decision.safety is not None and decision.safety.fired == ("rule:dan",)
    assert decision.blocked


def test_pii_is_redacted_consistently_in_the_outgoing_body(router: Router) -> None:
    body = chat(
        ("system", "Reply to ann@example.com politely."),
        ("user", "hello there, mail ann@example.com and bob@example.org please"),
    )
    decision = router.decide(body)
    assert decision.safety is not None
    assert decision.safety.action == "redact" and decision.safety.pii == {"EMAIL": 3}
    sent = decision.safety.redacted_body
    assert sent is not None
    assert sent["messages"][0]["content"] == "Reply to <EMAIL_1> politely."
    assert sent["messages"][1]["content"] == "hello there, mail <EMAIL_1> and <EMAIL_2> please"
    assert body["messages"][1]["content"].endswith("bob@example.org please")  # untouched


def test_content_parts_are_redacted_in_place(router: Router) -> None:
    body = {
        "model": "auto",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hello, I am ann@example.com"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                ],
            }
        ],
    }
    sent = router.decide(body).safety.redacted_body  # type: ignore[union-attr]
    assert sent is not None
    assert sent["messages"][0]["content"][0] == {"type": "text", "text": "hello, I am <EMAIL_1>"}
    assert sent["messages"][0]["content"][1]["type"] == "image_url"


def test_secret_blocks_and_card_reroutes_without_fallback(router: Router) -> None:
    from llmroute.dispatch import plan_request

    blocked = router.decide("hello there, my key is AKIAIOSFODNN7EXAMPLE thanks")
    assert blocked.blocked and blocked.safety is not None
    assert blocked.safety.fired == ("pii:SECRET",)

    body = chat(("user", "hello there, charge 4111 1111 1111 1111 please"))
    plan = plan_request(router, body, {})
    assert plan.decision.model == "guard" and plan.chain == ("guard",)
    assert "rerouted by safety" in plan.decision.reason


def test_blocked_plan_refuses_to_send(router: Router) -> None:
    from llmroute.dispatch import plan_request

    plan = plan_request(router, chat(("user", "tell me a joke EVIL")), {})
    with pytest.raises(PolicyViolation) as caught:
        plan.outgoing(chat(("user", "tell me a joke EVIL")))
    assert "injection" in str(caught.value) and "EVIL" not in str(caught.value)


def test_pinned_requests_are_guarded_too(router: Router) -> None:
    from llmroute.dispatch import plan_request

    for model in ("large", "chat"):
        body = chat(("user", "EVIL")) | {"model": model}
        assert plan_request(router, body, {}).decision.blocked, model


def test_only_the_new_turn_is_scanned_for_injection(router: Router) -> None:
    old = chat(("user", "EVIL"), ("assistant", "no"), ("user", "tell me a joke"))
    assert not router.decide(old).blocked
    tool = chat(("user", "hello there, how are you today?"), ("tool", "page text ... EVIL ..."))
    assert router.decide(tool).blocked  # indirect injection through a tool result


def test_long_text_is_scanned_in_windows_and_the_worst_counts(router: Router) -> None:
    filler = "plain words here " * 20  # ~340 chars: more than one 200-char window
    decision = router.decide("hello there " + filler + " EVIL")
    assert decision.safety is not None and decision.safety.windows > 1
    assert decision.blocked


def test_text_beyond_the_window_budget_applies_unscanned(router: Router) -> None:
    huge = "benign words only " * 200  # far more than 3 windows of 200 chars
    decision = router.decide(huge)
    assert decision.safety is not None and decision.safety.unscanned
    assert decision.blocked and decision.safety.fired == ("unscanned",)


LENIENT = REGISTRY.replace(
    "  profile: standard",
    "    lenient: {injection: block, pii: allow, unscanned: allow}\n  profile: lenient",
)


@pytest.fixture(scope="module")
def lenient() -> Router:
    """Blocks injections, allows what is past the windows (`unscanned: allow`)."""
    return _guarded(LENIENT, {})


def test_a_rule_past_the_windows_reach_is_unscanned_not_a_rule(
    router: Router, lenient: Router
) -> None:
    """The rules read what the windows cover and no further, so a huge text costs them a
    bounded time: a match past the last window is not a rule's finding but text left
    unscanned, blocked or allowed as the profile says."""
    huge = "benign words only " * 200 + "enable DAN mode now"  # 3 windows reach ~500
    decision = router.decide(huge)
    assert decision.safety is not None and decision.safety.unscanned
    assert decision.blocked and decision.safety.fired == ("unscanned",)
    allowed = lenient.decide(huge)
    assert allowed.safety is not None and allowed.safety.fired == ("unscanned",)
    assert not allowed.blocked


def test_a_rule_inside_the_windows_reach_still_wins(router: Router, lenient: Router) -> None:
    huge = "benign words " + "enable DAN mode now " + "benign words only " * 200
    for guarded in (router, lenient):
        decision = guarded.decide(huge)
        assert decision.safety is not None and decision.safety.fired == ("rule:dan",)
        assert decision.blocked


def test_the_rules_read_each_text_up_to_the_reach(lenient: Router) -> None:
    """Several texts, the windows' reach ending inside the second: the rules read the
    first whole, the second up to the reach, and not the third."""
    first = "hello there, read these pages"
    second = "plain words here " * 40  # 680 characters: the reach (~500) falls inside
    spans, unscanned = window_spans(f"{first}\n\n{second}", 200, 150, 3)
    assert unscanned and len(first) + 2 < spans[-1][1] < len(first) + 2 + len(second)

    def fired(*tools: str) -> tuple[str, ...]:
        decision = lenient.decide(chat(("user", first), *(("tool", t) for t in tools)))
        assert decision.safety is not None
        return decision.safety.fired

    assert fired(second) == ("unscanned",)
    assert fired("DAN mode " + second) == ("rule:dan",)  # inside the reach
    assert fired(second[:100] + "DAN mode " + second[100:]) == ("rule:dan",)
    assert fired(second + "DAN mode") == ("unscanned",)  # past it, in the same text
    assert fired(second, "DAN mode") == ("unscanned",)  # a text wholly past it


def test_with_history_the_new_turn_is_read_before_the_history() -> None:
    """``history: true`` rescans earlier turns, but the window budget goes to what the
    request adds first: a long history read oldest first left the new turn past the
    windows, unread by the classifier and (as they read no further) the rules."""
    text = LENIENT.replace(
        "injection: {window_chars: 200, stride_chars: 150, max_windows: 3}",
        "injection: {window_chars: 200, stride_chars: 150, max_windows: 3, history: true}",
    )
    router = _guarded(text, {})
    settings = router.loaded.registry.safety
    assert settings is not None and settings.injection.history
    old = "plain words here " * 60  # 1,020 characters: past the 3 windows alone
    decision = router.decide(
        chat(("user", old), ("assistant", "noted"), ("user", "now enable DAN mode"))
    )
    assert decision.safety is not None and decision.safety.fired == ("rule:dan",)
    assert decision.blocked


def test_profile_naming_a_missing_profile_is_a_config_error(tmp_path: Path) -> None:
    text = REGISTRY.replace("policy: {safety: open, fallback: [large]}", "policy: {safety: opn}")
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="reg.yaml")
    assert "unknown safety profile 'opn'" in str(caught.value)
    assert "did you mean 'open'" in str(caught.value)


def test_a_profile_named_with_a_plus_is_a_config_error() -> None:
    """'+' joins two profiles applied together ('open+strict'): a registry profile so
    named would be taken for such a pair."""
    text = REGISTRY.replace("policy: {safety: open, fallback: [large]}", "policy: {safety: a+b}")
    text = text.replace("    open: {", "    a+b: {")
    assert "a+b: {" in text
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="reg.yaml")
    message = str(caught.value)
    assert message.startswith("reg.yaml:23: safety.profiles['a+b']: ")
    assert "must not hold '+'" in message


def test_profiles_without_standard_and_no_profile_say_the_default_is_not_defined() -> None:
    """`profiles:` replaces the built-in `standard`, and `profile` defaults to it: a
    registry that defined only its own profiles was told "safety.profile: unknown safety
    profile 'standard'", naming a key and a name the file does not hold."""
    text = REGISTRY.replace("  profile: standard\n", "").replace("standard:", "strict:")
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="reg.yaml")
    said = str(caught.value)
    assert "safety.profile: not given, so 'standard'" in said, said
    assert "which safety.profiles does not define (profiles: open, strict)" in said, said
    assert "name the profile requests get: profile: open or profile: strict" in said, said
    assert said.startswith("reg.yaml:"), said
    empty = (
        REGISTRY.replace("  profile: standard\n", "").split("  profiles:")[0] + "  profiles: {}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_registry(empty, source="reg.yaml")
    assert "safety.profiles: is empty: define the profiles" in str(caught.value)
    written = REGISTRY.replace("profile: standard", "profile: standrd")
    with pytest.raises(ConfigError) as caught:  # a name the file gives: as before
        parse_registry(written, source="reg.yaml")
    assert "unknown safety profile 'standrd' (did you mean 'standard'?)" in str(caught.value)


def test_injection_cannot_be_redacted() -> None:
    text = REGISTRY.replace("standard: {injection: block,", "standard: {injection: redact,")
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="reg.yaml")
    assert "cannot be redacted" in str(caught.value)


@pytest.mark.parametrize(
    ("regions", "expected"),
    [
        ("[US, XX]", "reg.yaml:20: safety.pii.phone_regions[1]: unknown phone region 'XX'"),
        ("[]", "reg.yaml:20: safety.pii.phone_regions: name at least one region"),
    ],
)
def test_an_unknown_phone_region_names_its_line(regions: str, expected: str) -> None:
    """It was found only when the detector was built, the error naming the file alone."""
    text = REGISTRY.replace("safety:\n", f"safety:\n  pii: {{phone_regions: {regions}}}\n", 1)
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="reg.yaml")
    assert expected in str(caught.value)


def test_a_misspelt_action_is_one_message_naming_the_actions() -> None:
    """It was up to five lines, naming the union member it failed (`RouteTo`)."""
    text = REGISTRY.replace(
        'standard: {injection: block, pii: {SECRET: block, CARD: {route: guard}, "*": redact}}',
        'standard: {injection: blok, pii: {SECRET: block, CARD: {route: guard}, "*": redcat}}',
    )
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="reg.yaml")
    lines = str(caught.value).splitlines()
    assert len(lines) == 2 and all("RouteTo" not in line for line in lines)
    assert (
        "safety.profiles.standard.injection: must be allow, block or {route: MODEL}, "
        "not 'blok' (did you mean 'block'?)" in lines[0]
    )
    assert "safety.profiles.standard.pii['*']: must be allow, redact, block" in lines[1]


def _calling(arguments: str, content: str | None = None) -> dict[str, Any]:
    call = {"id": "c1", "type": "function", "function": {"name": "send", "arguments": arguments}}
    return {"role": "assistant", "content": content, "tool_calls": [call]}


def test_tool_call_arguments_in_the_history_are_scanned_and_redacted(router: Router) -> None:
    """What a model wrote into a tool call goes back to it (and its provider) on every
    later turn: PII there is redacted like any text, secrets blocked."""
    arguments = json.dumps({"to": "zoe@secret.example", "note": "hello there"})
    body = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "hello there, send a note"},
            _calling(arguments),
            {"role": "tool", "tool_call_id": "c1", "content": "sent"},
            {"role": "user", "content": "thanks, tell me a joke"},
        ],
    }
    decision = router.decide(body)
    assert decision.safety is not None and decision.safety.pii == {"EMAIL": 1}
    sent = decision.safety.redacted_body
    assert sent is not None
    sent_arguments = sent["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent_arguments) == {"to": "<EMAIL_1>", "note": "hello there"}
    assert "zoe@" in body["messages"][1]["tool_calls"][0]["function"]["arguments"]  # untouched
    keyed = json.dumps({"key": "AKIAIOSFODNN7EXAMPLE"})
    body["messages"][1] = _calling(keyed)
    blocked = router.decide(body)
    assert blocked.blocked and blocked.safety is not None
    assert blocked.safety.fired == ("pii:SECRET",)


def test_an_agents_tool_only_turns_end_turns_and_short_results_share_windows(
    router: Router,
) -> None:
    """An assistant message that only calls tools (no content) is a turn's end: an agent's
    history is not scanned again each turn (with a budget of 3 windows, 16 earlier tool
    turns would leave text unscanned); and many short tool results of one turn are read
    in one window, not one window each."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "hello there, look it up"}]
    for i in range(16):
        messages += [
            _calling(json.dumps({"q": f"page {i}"})),
            {"role": "tool", "tool_call_id": "c1", "content": f"result {i}"},
        ]
    decision = router.decide({"model": "auto", "messages": messages})
    assert decision.safety is not None and not decision.safety.unscanned
    assert decision.safety.windows == 1 and not decision.blocked
    parallel = [*messages[:2], *({"role": "tool", "content": f"result {i}"} for i in range(17))]
    decision = router.decide({"model": "auto", "messages": parallel})
    assert decision.safety is not None and decision.safety.windows == 1
    assert not decision.blocked
    parallel.append({"role": "tool", "content": "result EVIL"})
    assert router.decide({"model": "auto", "messages": parallel}).blocked  # still read


def test_placeholders_the_request_already_holds_are_not_issued_again(router: Router) -> None:
    """A text quoting "<EMAIL_1>" keeps it; the real address gets another number, so that
    restoring the answer cannot put the address where the user wrote the tag."""
    body = chat(("user", "hello there, the template says <EMAIL_1>; mine is kim@k.example"))
    sent = router.decide(body).safety.redacted_body  # type: ignore[union-attr]
    assert sent is not None
    assert sent["messages"][0]["content"] == (
        "hello there, the template says <EMAIL_1>; mine is <EMAIL_2>"
    )


def test_a_block_names_what_blocked_it_not_what_it_redacted(router: Router) -> None:
    from llmroute.dispatch import plan_request

    text = "hello there, mail ann@example.com my key AKIAIOSFODNN7EXAMPLE"
    plan = plan_request(router, chat(("user", text)), {})
    assert plan.decision.safety is not None
    assert plan.decision.safety.fired == ("pii:EMAIL", "pii:SECRET")  # all it found
    with pytest.raises(PolicyViolation) as caught:
        plan.outgoing(chat(("user", text)))
    assert "pii:SECRET" in str(caught.value) and "EMAIL" not in str(caught.value)


def test_tool_call_arguments_are_read_as_json_values(router: Router) -> None:
    """Escapes neither hide a value (a phone number after a newline, an address with an
    accent) nor let a redaction break the JSON; a number that is a card is redacted too,
    as a string; nothing is blocked for it."""
    arguments = json.dumps(
        {"note": "line\n4155552671", "to": "zoë@k.example", "card": 4111111111111111, "n": 7}
    )
    assert "\\u00eb" in arguments and "\\n" in arguments
    body = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "hello there, send it"},
            _calling(arguments),
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
            {"role": "user", "content": "thanks"},
        ],
    }
    decision = router.decide(body)
    assert decision.safety is not None and not decision.blocked
    sent = decision.safety.redacted_body
    assert sent is not None
    redacted = json.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"])
    assert redacted["note"] == "line\n<PHONE_1>"
    assert redacted["to"] == "<EMAIL_1>"
    assert redacted["card"] == "<CARD_1>" or decision.safety.action == "route"
    assert redacted["n"] == 7


def test_the_gateways_own_placeholders_in_history_keep_their_numbers(router: Router) -> None:
    """An answer not restored carries the gateway's placeholder back in the next turn's
    history: the same address gets the same tag again, not a second one."""
    body = chat(
        ("user", "hello there, my email is kim@k.example"),
        ("assistant", "I'll write to <EMAIL_1>."),
        ("user", "and cc kim@k.example please"),
    )
    sent = router.decide(body).safety.redacted_body  # type: ignore[union-attr]
    assert sent is not None
    assert sent["messages"][0]["content"] == "hello there, my email is <EMAIL_1>"
    assert sent["messages"][2]["content"] == "and cc <EMAIL_1> please"


def test_identifiers_and_metadata_holding_pii_are_rewritten_not_acted_on(router: Router) -> None:
    body = {
        **chat(("user", "hello there, write to ann@example.com")),
        "user": "ann@example.com",
        "safety_identifier": "card 4111 1111 1111 1111",  # CARD reroutes in a message
        "prompt_cache_key": "tenant-7",
        "metadata": {"owner": "ann@example.com", "ticket": "T-1", "n": 3},
    }
    decision = router.decide(body)
    safety = decision.safety
    assert safety is not None and safety.action == "redact" and safety.model is None
    assert safety.pii == {"EMAIL": 1}  # counts are the messages' findings
    assert safety.fields == {
        "user": pseudonym("ann@example.com"),
        "safety_identifier": pseudonym("card 4111 1111 1111 1111"),
        "metadata": {"owner": "<EMAIL_1>", "ticket": "T-1", "n": 3},  # the text's number
    }
    assert decision.to_dict()["safety"]["fields"] == ["metadata", "safety_identifier", "user"]
    sent = Plan(decision, ("large",)).outgoing(body)
    assert sent["user"] == pseudonym("ann@example.com") and sent["prompt_cache_key"] == "tenant-7"
    assert sent["messages"][0]["content"] == "hello there, write to <EMAIL_1>"
    assert body["user"] == "ann@example.com"  # the caller's body is untouched


def test_identifiers_pass_where_the_profile_allows_their_pii(router: Router) -> None:
    body = {**chat(("user", "write a python function")), "user": "ann@example.com"}
    decision = router.decide(body)
    assert decision.route == "code" and decision.safety is not None
    assert decision.safety.fields is None
    assert Plan(decision, ("small",)).outgoing(body)["user"] == "ann@example.com"


def test_a_blocked_request_is_logged_with_the_pseudonym_too(router: Router) -> None:
    """Nothing is sent, but a blocked request is logged: its end user as the pseudonym
    the docs promise, not the address (the ones most likely to be looked at)."""
    body = {**chat(("user", "hello there EVIL")), "user": "ann@example.com"}
    decision = router.decide(body)
    assert decision.blocked and decision.safety is not None
    assert decision.safety.fields == {"user": pseudonym("ann@example.com")}
    with pytest.raises(PolicyViolation):
        Plan(decision, ("large",)).outgoing(body)
    assert _as_sent(decision, body)["user"] == pseudonym("ann@example.com")


def test_a_keyed_pseudonym_is_an_hmac_a_provider_cannot_test_addresses_against(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain SHA-256 of an address can be matched against a list of candidates; with
    `pii.pseudonym_key_env` the pseudonym is keyed with the operator's secret."""
    import hashlib
    import hmac

    secret = "s3cret-pseudonym-key-0123456789"
    text = REGISTRY.replace(
        "  profile: standard\n",
        "  profile: standard\n  pii: {pseudonym_key_env: LLMROUTE_TEST_PSEUDONYM_KEY}\n",
    )
    loaded = parse_registry(text, source="reg.yaml")
    monkeypatch.setenv("LLMROUTE_TEST_PSEUDONYM_KEY", secret)
    keyed = Router(loaded, encoder=load_builtin("static"))
    decision = keyed.decide({**chat(("user", "hello there")), "user": "ann@example.com"})
    assert decision.safety is not None and decision.safety.fields is not None
    digest = hmac.new(secret.encode(), b"ann@example.com", hashlib.sha256).hexdigest()[:32]
    assert decision.safety.fields["user"] == "hmac:" + digest
    monkeypatch.delenv("LLMROUTE_TEST_PSEUDONYM_KEY")
    with pytest.raises(ConfigError) as caught:
        Router(loaded, encoder=load_builtin("static"))
    assert "reg.yaml:" in str(caught.value)
    assert "safety.pii.pseudonym_key_env: environment variable" in str(caught.value)
    assert secret not in str(caught.value)


def test_a_request_of_many_numbered_texts_spends_one_phone_budget(
    router: Router, parses: list[int]
) -> None:
    """The phone finder's work budget is the request's: 30 messages of 100 numbers each,
    and 100 more in ``metadata``, make no more matcher parses than one message at the
    budget, where each text had a budget of its own (3,100 numbers read, seconds of
    decision); every number is still found (so much text is past the injection windows:
    blocked as unscanned here), and the metadata's redacted."""
    router.decide(chat(("user", contact_list(BUDGET)[0])))
    at_budget, parses[0] = parses[0], 0
    text, numbers = contact_list(100)
    body = chat(*[("user", text)] * 30) | {"metadata": {"contacts": text}}
    decision = router.decide(body)
    assert 0 < parses[0] <= at_budget
    assert decision.safety is not None and decision.safety.pii == {"PHONE": 3000}
    assert decision.safety.fields is not None
    contacts = decision.safety.fields["metadata"]["contacts"]
    assert contacts.count("<PHONE_") == 100 and not any(n in contacts for n in numbers)


def test_the_defaults_requests_get_the_defaults_profile() -> None:
    """`default.policy.safety` is the profile of requests no route claimed (as a route's
    `policy.safety` is its requests'); they had the registry's `safety.profile`."""
    text = REGISTRY.replace(
        "default: {target: large}",
        "default: {target: large, policy: {safety: open}}\nintent: {threshold: 0.9}",
    ).replace(
        "  injection: {window_chars: 200, stride_chars: 150, max_windows: 3}",
        "  injection: {enabled: false}\n  pii: {enabled: false}",
    )
    built = Router(parse_registry(text), encoder=load_builtin("static"))
    decision = built.decide("what is the weather on mars")
    assert decision.route == "default"
    assert decision.safety is not None and decision.safety.profile == "open"
    routed = built.decide("hello there, how are you today")
    assert routed.route == "chat"
    assert routed.safety is not None and routed.safety.profile == "standard"
    # the layer reads the profile of a request no routing layer decided as the default's
    keyed = _guarded(REGISTRY + "intent: {threshold: 0.9}\n", {"default": "open"})
    decision = keyed.decide("what is the weather on mars EVIL")
    assert decision.route == "default" and not decision.blocked
    assert keyed.decide("hello there, how are you today EVIL").blocked


def _spans_in(value: object) -> int:
    """The PII spans `value` holds, in whatever containers."""
    if isinstance(value, PiiSpan):
        return 1
    if isinstance(value, Mapping):
        return sum(_spans_in(v) for v in value.values())
    if isinstance(value, tuple | list):
        return sum(_spans_in(v) for v in value)
    if hasattr(value, "__slots__"):
        return sum(_spans_in(getattr(value, name, None)) for name in value.__slots__)
    return 0


@pytest.mark.parametrize("n", [3, KEPT_SPANS + 1])
def test_a_decision_keeps_a_bounded_count_of_pii_spans_and_another_profile_still_applies(
    router: Router, n: int
) -> None:
    """The decision keeps the spans the PII detector found so that another profile (a key's
    pool sends the request to the default) applies without reading the texts again; but a
    request with 100,000 phone numbers kept 100,000 spans (13 MB) with its decision until
    the telemetry queue wrote it. Past `KEPT_SPANS` it keeps counts alone, and the other
    profile's outcome is the same: the detector reads the texts again."""
    emails = [f"user{i}@example.com" for i in range(n)]
    # in the system prompt: the injection windows read the user's (no text left unscanned)
    body = chat(("system", " ".join(emails)), ("user", "write a python function")) | {
        "model": "code"
    }
    decision = router.decide(body)
    safety = decision.safety
    assert safety is not None and safety.profile == "open" and safety.action == "allow"
    assert safety.pii == {"EMAIL": n}
    kept = _spans_in(safety.detected)
    assert kept == (n if n <= KEPT_SPANS else 0)
    layer = router.guards[0]
    assert isinstance(layer, SafetyLayer)
    applied = layer.also_under(safety, router.request(body), "standard")
    assert applied is not None
    merged, detail = applied
    assert merged.action == "redact" and merged.pii == {"EMAIL": n}
    assert merged.redacted_body is not None
    sent = merged.redacted_body["messages"][0]["content"]
    assert sent.count("<EMAIL_") == n and not any(f"{e} " in f"{sent} " for e in emails)
    assert detail["pii"] == {"EMAIL": n}
    assert _spans_in(merged.detected) == kept
