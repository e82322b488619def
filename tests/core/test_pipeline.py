from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from llmroute.decide import Router
from llmroute.decision import Outcome, Verdict
from llmroute.encoders.fake import FakeEncoder
from llmroute.layers.base import DecisionContext, LayerResult


def test_intent_decides_with_confidence_and_margin(router: Router) -> None:
    d = router.decide("write a python function that reverses a list")
    assert (d.route, d.model, d.layer) == ("code", "large", "intent")
    assert 0.5 <= d.confidence <= 1.0
    assert d.margin is not None and d.margin > 0
    assert d.candidates[0].route == "code"
    assert len(d.candidates) == 3
    assert d.registry_version == router.version
    assert [s.layer for s in d.signals] == ["rules", "intent"]
    assert d.signals[0].outcome is Outcome.PASSED
    assert d.signals[1].outcome is Outcome.DECIDED


def test_decision_is_immutable_and_serialisable(router: Router) -> None:
    d = router.decide("weather forecast for tomorrow")
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.route = "x"  # type: ignore[misc]
    payload = json.loads(json.dumps(d.to_dict()))
    assert payload["route"] == "weather"
    assert payload["layers"][1]["layer"] == "intent"
    assert set(payload["timing_us"]) == {"encode", "total"}
    assert len(d.id) == 24
    assert router.decide("weather forecast for tomorrow").id != d.id


@pytest.mark.parametrize(
    ("kwargs", "route", "model"),
    [
        ({"headers": {"X-Tenant": "acme"}}, "rule:tenant", "large"),
        ({"headers": {"x-tenant": "other"}}, "weather", "small"),
    ],
)
def test_header_rule(router: Router, kwargs: dict[str, object], route: str, model: str) -> None:
    d = router.decide("will it rain today in paris", **kwargs)  # type: ignore[arg-type]
    assert (d.route, d.model) == (route, model)


def test_rules_win_before_intent_and_skip_it(router: Router) -> None:
    body = {
        "messages": [{"role": "user", "content": "what is the weather tomorrow"}],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
    }
    d = router.decide(body)
    assert (d.route, d.model, d.layer, d.confidence) == ("code", "large", "rules", 1.0)
    assert d.reason == "rule 'tools'"
    assert d.signals[1].outcome is Outcome.SKIPPED
    assert d.encode_us == 0.0  # the encoder never ran


def test_a_has_images_rule_routes_a_picture(router: Router) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    content = [{"type": "text", "text": "recipe for this dish?"}, image]
    d = router.decide({"messages": [{"role": "user", "content": content}]})
    assert (d.model, d.layer, d.reason) == ("large", "rules", "rule 'images'")
    text_only = router.decide({"messages": [{"role": "user", "content": "recipe for dinner"}]})
    assert text_only.layer == "intent"


def test_regex_and_keyword_rules(router: Router) -> None:
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1'
    assert router.decide(trace).route == "code"
    assert router.decide("deploy a Service Mesh on our cluster").route == "rule:kw"
    # whole words only
    assert router.decide("kubernetesish weather").route != "rule:kw"


def test_below_threshold_goes_to_default_with_reason(
    make: Callable[..., Router], tmp_path: Path
) -> None:
    strict = make(threshold=0.99)
    d = strict.decide("tell me about the history of rome")
    assert (d.route, d.model, d.layer) == ("default", "small", "default")
    assert "below its threshold" in d.reason
    assert d.candidates  # the scores are still there to explain and log
    assert d.margin is not None


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_prompt_goes_to_default(router: Router, text: str) -> None:
    d = router.decide(text)
    assert (d.route, d.layer) == ("default", "default")
    assert "empty prompt" in d.reason


@pytest.mark.parametrize("method", ["linear", "centroid", "knn"])
def test_every_method_routes_the_obvious_cases(
    make: Callable[..., Router], tmp_path: Path, method: str
) -> None:
    r = make(method=method, threshold=0.2)
    assert r.decide("python function to parse a json file").route == "code"
    assert r.decide("recipe for a cake with chocolate").route == "cooking"
    assert r.decide("is it going to rain this weekend").route == "weather"


def test_decide_many_matches_decide_and_encodes_once(
    make: Callable[..., Router], tmp_path: Path
) -> None:
    router = make()
    texts = ["python bug", "rain in paris", "", "boil an egg"]
    encoder = router.encoder
    assert isinstance(encoder, FakeEncoder)
    before = encoder.calls
    batch = router.decide_many(texts)
    assert encoder.calls == before + 1
    single = [router.decide(t) for t in texts]
    assert [d.route for d in batch] == [d.route for d in single]
    assert [d.confidence for d in batch] == pytest.approx([d.confidence for d in single])
    # each decision's total holds its share of the batch's encoding
    assert all(d.total_us >= d.encode_us > 0 for d in batch)
    assert router.decide_many([]) == []


def test_each_request_is_encoded_once_even_with_many_layers(
    make: Callable[..., Router], tmp_path: Path
) -> None:
    class Peek:
        name = "peek"
        always_runs = False

        def evaluate(self, ctx: DecisionContext) -> LayerResult:
            assert ctx.embedding.shape == (256,)
            return LayerResult(annotated=True)

    base = make()
    router = Router(base.loaded, encoder=base.encoder, layers=(Peek(), Peek(), *base.layers))
    encoder = router.encoder
    assert isinstance(encoder, FakeEncoder)
    before = encoder.texts_encoded
    d = router.decide("weather forecast")
    assert encoder.texts_encoded == before + 1
    assert d.signals[0].outcome is Outcome.ANNOTATED


def test_always_run_layer_overrides_an_earlier_verdict(
    make: Callable[..., Router], tmp_path: Path
) -> None:
    class Guard:
        name = "safety"
        always_runs = True

        def evaluate(self, ctx: DecisionContext) -> LayerResult:
            if "password" in ctx.request.text:
                return LayerResult(verdict=Verdict("guarded", "small", 1.0, "secret"))
            return LayerResult()

    base = make()
    router = Router(base.loaded, encoder=base.encoder, layers=(*base.layers, Guard()))
    assert router.decide("python function for my password").route == "guarded"
    assert router.decide("python function to sort").route == "code"


def test_linear_head_is_cached_between_loads(make: Callable[..., Router], tmp_path: Path) -> None:
    first = make()
    heads = list((tmp_path / "heads").glob("linear-*.npz"))
    assert len(heads) == 1
    stamp = heads[0].stat().st_mtime_ns
    second = make()
    assert heads[0].stat().st_mtime_ns == stamp
    text = "python function that sorts"
    assert second.decide(text).confidence == pytest.approx(first.decide(text).confidence)


def test_corrupt_head_cache_is_retrained(
    make: Callable[..., Router], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make()
    (head,) = (tmp_path / "heads").glob("linear-*.npz")
    head.write_bytes(b"not a zip")
    router = make()
    assert router.decide("python function that sorts").route == "code"
    assert "unreadable cached intent head" in caplog.text


def test_a_bodys_model_is_honoured_as_the_sdk_and_gateway_honour_it(router: Router) -> None:
    """`decide(body)` routed a body pinned to a model or route as if it said auto (docs
    present it as the way to see the full decision of an SDK call)."""
    from llmroute.errors import ModelNotFound

    def body(model: str | None) -> dict[str, object]:
        text = "will it rain today in paris"
        return {"messages": [{"role": "user", "content": text}], "model": model}

    assert (router.decide(body(None)).route, router.decide(body("auto")).route) == (
        "weather",
        "weather",
    )
    pinned = router.decide(body("large"))
    assert (pinned.route, pinned.model, pinned.layer) == ("pinned", "large", "pinned")
    route = router.decide(body("cooking"))
    assert (route.route, route.layer) == ("cooking", "pinned")
    assert [d.layer for d in router.decide_many([body("large"), "hi"])] == ["pinned", "intent"]
    with pytest.raises(ModelNotFound):
        router.decide(body("no-such-model"))
