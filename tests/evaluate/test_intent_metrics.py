from __future__ import annotations

import pytest

from llmroute.evaluate.intent_metrics import (
    DEFAULT,
    accuracy,
    confusion_counts,
    in_scope_accuracy,
    intent_report,
    normalise_gold,
    oos_precision,
    oos_recall,
    per_route_metrics,
    top_confusions,
)

# gold:  a a a b b oos oos oos
# pred:  a a b b d d   d   a
GOLD = ["a", "a", "a", "b", "b", DEFAULT, DEFAULT, DEFAULT]
PRED = ["a", "a", "b", "b", DEFAULT, DEFAULT, DEFAULT, "a"]


def test_headline_metrics_on_a_hand_made_case() -> None:
    assert accuracy(GOLD, PRED) == pytest.approx(5 / 8)
    assert in_scope_accuracy(GOLD, PRED) == pytest.approx(3 / 5)
    assert oos_recall(GOLD, PRED) == pytest.approx(2 / 3)
    assert oos_precision(GOLD, PRED) == pytest.approx(2 / 3)


def test_undefined_metrics_are_none_not_zero() -> None:
    assert oos_recall(["a"], ["a"]) is None
    assert oos_precision(["a"], ["a"]) is None
    assert in_scope_accuracy([DEFAULT], [DEFAULT]) is None
    assert accuracy([], []) is None
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        accuracy(["a", "b"], ["a"])


def test_per_route_precision_recall_f1_support() -> None:
    metrics = per_route_metrics(GOLD, PRED, ["a", "b", "c"])
    a, b, c = metrics["a"], metrics["b"], metrics["c"]
    assert (a.precision, a.recall, a.support) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert a.f1 == pytest.approx(2 / 3)
    assert (b.precision, b.recall, b.support) == (0.5, 0.5, 2)
    assert b.f1 == pytest.approx(0.5)
    assert (c.precision, c.recall, c.f1, c.support) == (None, None, None, 0)
    zero = per_route_metrics(["a"], ["b"], ["a", "b"])
    assert zero["b"].precision == 0.0 and zero["a"].precision is None


def test_a_route_that_got_none_of_its_rows_has_f1_zero() -> None:
    """With nothing routed to it (precision undefined) its F1 was None, shown as n/a:
    `eval --compare` left a route the candidate stopped routing to out of its changes
    (no delta), and sorted it among the unchanged ones."""
    zero = per_route_metrics(["a", "a"], [DEFAULT, "b"], ["a", "b"])
    assert (zero["a"].precision, zero["a"].recall, zero["a"].f1) == (None, 0.0, 0.0)
    assert zero["b"].f1 == 0.0  # routed to, none of its own: all false positives


def test_confusion_counts_and_top_confusions() -> None:
    table = confusion_counts(GOLD, PRED)
    assert table == {
        "a": {"a": 2, "b": 1},
        "b": {"b": 1, DEFAULT: 1},
        DEFAULT: {DEFAULT: 2, "a": 1},
    }
    assert sum(n for row in table.values() for n in row.values()) == len(GOLD)
    assert top_confusions(table, 2) == [("a", "b", 1), ("b", DEFAULT, 1)]


def test_unknown_labels_count_as_out_of_scope_and_are_reported() -> None:
    mapped, unknown = normalise_gold(["a", "oos", "zz", "a"], ["a", "b"], "oos")
    assert mapped == ["a", DEFAULT, DEFAULT, "a"]
    assert unknown == ["zz"]
    report = intent_report(
        ["a", "oos", "zz", "b"], ["a", DEFAULT, "a", "b"], ["a", "b"], oos_label="oos"
    )
    assert (report.n, report.n_in_scope, report.n_out_of_scope) == (4, 2, 2)
    assert report.accuracy == 0.75
    assert report.oos_recall == 0.5
    assert report.unknown_labels == ["zz"]
    payload = report.to_dict()
    assert {"accuracy", "in_scope_accuracy", "oos_recall", "oos_precision", "n"} <= set(payload)
    assert payload["per_route"]["a"]["support"] == 1
    assert payload["confusion"][DEFAULT] == {"a": 1, DEFAULT: 1}
