"""Build a route registry from a labelled file: one route per label, threshold calibrated.

The labelled rows are split first (stratified, seeded): the examples come from one part
and the intent threshold is chosen on the other, never on rows the head was trained on
and never on a test set. Out-of-scope rows (`oos_label`) are split the same way: the
training part becomes `intent.out_of_scope` examples, the validation part tells the
threshold how much off-topic traffic it must catch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from llmroute.decide import Router
from llmroute.encoders import CachedEncoder, default_cache_dir
from llmroute.encoders.base import Encoder
from llmroute.errors import ConfigError, DataError
from llmroute.evaluate.calibrate import OOS, ThresholdChoice, choose_threshold
from llmroute.evaluate.data import LabelledRow, cap_per_label, group_by_label, stratified_split
from llmroute.layers.intent import IntentLayer
from llmroute.registry import LoadedRegistry, Registry, Route, dump_registry, parse_registry

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_MODEL",
    "DEFAULT_PROVIDER",
    "FromExamplesConfig",
    "FromExamplesResult",
    "registry_from_examples",
]

DEFAULT_ENCODER = "builtin:minilm"
DEFAULT_MODEL = "default-model"
DEFAULT_PROVIDER = {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8001/v1"}}
METHODS = ("linear", "centroid", "knn")


@dataclass(frozen=True, slots=True)
class FromExamplesConfig:
    oos_label: str | None = None
    per_route: int | None = None  # examples per route; None keeps every training row
    val_fraction: float = 0.2
    method: str = "linear"
    encoder: str | None = None  # None: the base registry's encoder, else DEFAULT_ENCODER
    seed: int = 0
    oos_recall: float = 0.9  # target on validation when there are out-of-scope rows
    in_scope_pass: float = 0.98  # share of validation in-scope rows kept without them

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method '{self.method}' (choose from {', '.join(METHODS)})")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.per_route is not None and self.per_route < 1:
            raise ConfigError(f"per_route must be at least 1, got {self.per_route}")
        for name in ("oos_recall", "in_scope_pass"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {value}")


@dataclass(frozen=True, slots=True)
class FromExamplesResult:
    registry: Registry
    yaml_text: str
    choice: ThresholdChoice
    n_routes: int
    n_examples: int
    n_out_of_scope_examples: int
    n_validation: int
    n_validation_oos: int

    def summary(self) -> list[str]:
        def pct(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.1%}"

        return [
            f"routes: {self.n_routes}, examples: {self.n_examples}, "
            f"out-of-scope examples: {self.n_out_of_scope_examples}",
            f"validation part: {self.n_validation} rows "
            f"({self.n_validation_oos} out of scope), never used as examples",
            f"method: {self.registry.intent.method}, threshold: {self.choice.threshold:.4f} "
            f"({self.choice.rule})",
            f"at that threshold on the validation part: in-scope accuracy "
            f"{pct(self.choice.in_scope_accuracy)}, oos recall {pct(self.choice.oos_recall)}",
        ]


def _dedupe(texts: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def _base_document(base: LoadedRegistry | None) -> dict[str, Any]:
    if base is None:
        return {
            "providers": DEFAULT_PROVIDER,
            "models": {DEFAULT_MODEL: {"provider": "local", "model": DEFAULT_MODEL}},
            "default": {"target": DEFAULT_MODEL},
        }
    document = yaml.safe_load(dump_registry(base.registry))
    if not isinstance(document, dict):  # pragma: no cover - dump_registry writes a mapping
        raise ConfigError("the base registry did not dump to a mapping", file=base.source)
    return document


def _document(
    base: LoadedRegistry | None,
    config: FromExamplesConfig,
    routes: dict[str, list[str]],
    out_of_scope: list[str],
    threshold: float,
) -> dict[str, Any]:
    document = _base_document(base)
    encoder = config.encoder or (document.get("encoder") if base else None) or DEFAULT_ENCODER
    target = document["default"]["target"]
    intent = dict(document.get("intent") or {})
    intent.update(method=config.method, threshold=round(threshold, 6), out_of_scope=out_of_scope)
    document.update(
        encoder=encoder,
        intent=intent,
        routes=[{"name": name, "target": target, "examples": ex} for name, ex in routes.items()],
    )
    return document


def _validate(document: dict[str, Any], source: str) -> LoadedRegistry:
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return parse_registry(text, source=f"<registry built from {source}>")


def _check_labels(labels: Sequence[str], source: str) -> None:
    """Labels become route names: reject the ones the schema would, naming the label."""
    for label in labels:
        try:
            Route(name=label, examples=("x",), target="m")
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise DataError(
                f"label {label!r} cannot be a route name: {reason}", file=source
            ) from exc


def registry_from_examples(
    rows: Sequence[LabelledRow],
    config: FromExamplesConfig,
    *,
    base: LoadedRegistry | None = None,
    encoder: Encoder | None = None,
    cache_dir: Path | None = None,
    source: str = "labelled data",
) -> FromExamplesResult:
    """Build, calibrate and validate a registry from labelled rows (see module docstring).

    `encoder` overrides the one the registry names (tests pass a `FakeEncoder`);
    embeddings go through the on-disk cache either way.
    """
    config.check()
    train, val = stratified_split(rows, config.val_fraction, seed=config.seed)
    oos_train = [r.text for r in train if r.intent == config.oos_label]
    in_train = cap_per_label(
        [r for r in train if r.intent != config.oos_label], config.per_route, seed=config.seed
    )
    routes = {label: _dedupe([r.text for r in g]) for label, g in group_by_label(in_train).items()}
    _check_labels(list(routes), source)
    if len(routes) < 2:
        raise DataError(
            f"need at least two in-scope labels to build routes, found {len(routes)}", file=source
        )
    val = [r for r in val if r.intent in routes or r.intent == config.oos_label]
    if not val:
        raise DataError(
            "no rows left for the validation part (too few rows per label)", file=source
        )
    oos_examples = _dedupe(oos_train)
    loaded = _validate(_document(base, config, routes, oos_examples, 0.0), source)
    router = Router(loaded, encoder=encoder, cache_dir=cache_dir)
    choice = _calibrate(router, val, list(routes), config, cache_dir)
    final = _validate(_document(base, config, routes, oos_examples, choice.threshold), source)
    return FromExamplesResult(
        registry=final.registry,
        yaml_text=dump_registry(final.registry),
        choice=choice,
        n_routes=len(routes),
        n_examples=sum(len(v) for v in routes.values()),
        n_out_of_scope_examples=len(oos_examples),
        n_validation=len(val),
        n_validation_oos=sum(r.intent == config.oos_label for r in val),
    )


def intent_layer(router: Router) -> IntentLayer:
    for layer in router.layers:
        if isinstance(layer, IntentLayer):
            return layer
    raise ConfigError("the router has no intent layer")


def _calibrate(
    router: Router,
    val: Sequence[LabelledRow],
    names: list[str],
    config: FromExamplesConfig,
    cache_dir: Path | None,
) -> ThresholdChoice:
    """Score the validation rows once with the intent head, then sweep thresholds."""
    layer = intent_layer(router)
    cache = (cache_dir if cache_dir is not None else default_cache_dir()) / "embeddings"
    vectors = CachedEncoder(router.encoder, cache).encode([r.text for r in val])
    scores = np.asarray(layer.confidences(layer.head.scores(vectors)), dtype=np.float32)
    index = {name: i for i, name in enumerate(names)}
    gold = np.asarray([index.get(r.intent, OOS) for r in val], dtype=np.intp)
    return choose_threshold(
        scores,
        gold,
        len(names),
        oos_recall_target=config.oos_recall,
        in_scope_pass=config.in_scope_pass,
    )
