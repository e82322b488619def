"""`for_model`: the route's and the model's `params`, `rename_params` and `drop_params`
applied to a body, the request's own values winning under either name."""

from __future__ import annotations

from typing import Any

from llmroute.dispatch.model_params import for_model, renamed, with_defaults, within_output
from llmroute.registry.schema import Model

RENAME = {"max_tokens": "max_completion_tokens"}


def _model(**extra: Any) -> Model:
    return Model(provider="p", model="m", **extra)


def test_a_plain_model_gets_the_body_itself() -> None:
    body = {"messages": [], "temperature": 0.3}
    assert for_model(body, _model()) is body


def test_the_request_wins_under_either_name() -> None:
    model = _model(params={"max_completion_tokens": 900}, rename_params=RENAME)
    assert for_model({"max_tokens": 50}, model) == {"max_completion_tokens": 50}
    model = _model(params={"max_tokens": 900}, rename_params=RENAME)
    assert for_model({"max_completion_tokens": 50}, model) == {"max_completion_tokens": 50}
    assert for_model({}, model) == {"max_completion_tokens": 900}


def test_both_names_set_keeps_the_new_ones_value() -> None:
    assert renamed({"max_tokens": 1, "max_completion_tokens": 2}, RENAME) == {
        "max_completion_tokens": 2
    }
    assert renamed({"max_tokens": 1, "max_completion_tokens": None}, RENAME) == {
        "max_completion_tokens": 1
    }


def test_route_params_come_before_the_models_and_are_renamed_too() -> None:
    model = _model(params={"max_tokens": 900, "seed": 1}, rename_params=RENAME)
    sent = for_model({}, model, {"max_tokens": 100, "seed": 7})
    assert sent == {"max_completion_tokens": 100, "seed": 7}


def test_dropped_parameters_go_whoever_set_them() -> None:
    model = _model(drop_params=("temperature", "top_p"), rename_params=RENAME)
    body = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 5, "n": 2}
    sent = for_model(body, model, {"temperature": 0})
    assert sent == {"max_completion_tokens": 5, "n": 2}
    assert body == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 5, "n": 2}  # untouched


def test_defaults_fill_objects_key_by_key() -> None:
    sent = with_defaults({"extra_body": {"a": 1}}, {"extra_body": {"a": 0, "b": 2}})
    assert sent == {"extra_body": {"a": 1, "b": 2}}


def test_an_answer_limit_above_the_models_cap_is_lowered_to_it() -> None:
    """The router may pick a model whose `max_output_tokens` the client did not know; its
    API would refuse a larger `max_tokens`."""
    capped = _model(max_output_tokens=100)
    body = {"max_tokens": 5000, "max_completion_tokens": 50, "messages": []}
    assert within_output(body, capped) == {**body, "max_tokens": 100}
    within = {"max_tokens": 100, "messages": []}
    assert within_output(within, capped) is within
    assert within_output(body, _model()) is body  # no cap said: sent as asked
