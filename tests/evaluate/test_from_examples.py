from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from intent_synth import INTENTS, synthetic_rows

from llmroute.cli._app import run
from llmroute.decide import Router
from llmroute.encoders.fake import FakeEncoder
from llmroute.errors import ConfigError, DataError
from llmroute.evaluate.data import LabelledRow
from llmroute.evaluate.from_examples import (
    DEFAULT_MODEL,
    FromExamplesConfig,
    FromExamplesResult,
    registry_from_examples,
)
from llmroute.evaluate.run import evaluate_router
from llmroute.registry import dump_registry, load_registry, parse_registry


def build(tmp_path: Path, rows: list[LabelledRow], **options: object) -> FromExamplesResult:
    config = FromExamplesConfig(**options)  # type: ignore[arg-type]
    return registry_from_examples(rows, config, encoder=FakeEncoder(), cache_dir=tmp_path)


def test_end_to_end_with_out_of_scope_rows(tmp_path: Path) -> None:
    rows = synthetic_rows()
    result = build(tmp_path, rows, oos_label="oos", encoder="builtin:static")
    registry = result.registry
    assert [r.name for r in registry.routes] == sorted(INTENTS, key=[r.intent for r in rows].index)
    assert {r.target for r in registry.routes} == {DEFAULT_MODEL}
    assert registry.default.target == DEFAULT_MODEL
    assert registry.intent.method == "linear"
    assert registry.intent.threshold == pytest.approx(result.choice.threshold, abs=1e-6)
    assert 0.0 <= result.choice.threshold <= 1.0
    assert result.choice.oos_recall is not None and result.choice.oos_recall >= 0.9
    assert result.choice.in_scope_accuracy is not None and result.choice.in_scope_accuracy > 0.8

    # Every row is an example; calibration scored each one with a head that never saw it.
    examples = {t for r in registry.routes for t in r.examples}
    assert examples == {r.text for r in rows if r.intent != "oos"}
    assert set(registry.intent.out_of_scope) == {r.text for r in rows if r.intent == "oos"}
    assert result.n_out_of_scope_examples == result.n_calibration_oos == 30
    assert result.n_calibration == len(rows)
    assert result.folds == 5

    # The YAML loads, round-trips, and the calibrated registry routes unseen rows well.
    path = tmp_path / "registry.yaml"
    path.write_text(result.yaml_text, encoding="utf-8")
    loaded = load_registry(path)
    assert dump_registry(loaded.registry) == result.yaml_text
    assert parse_registry(result.yaml_text, source="x.yaml").registry == registry
    router = Router(loaded, encoder=FakeEncoder(), cache_dir=tmp_path)
    fresh = synthetic_rows(seed=7)
    report = evaluate_router(router, fresh, oos_label="oos")
    assert report.in_scope_accuracy is not None and report.in_scope_accuracy > 0.8
    assert report.oos_recall is not None and report.oos_recall >= 0.7
    assert "threshold" in "\n".join(result.summary())


def test_is_deterministic(tmp_path: Path) -> None:
    rows = synthetic_rows()
    first = build(tmp_path, rows, oos_label="oos", seed=3)
    second = build(tmp_path, rows, oos_label="oos", seed=3)
    assert first.yaml_text == second.yaml_text


@pytest.mark.parametrize("method", ["centroid", "knn"])
def test_other_methods_without_out_of_scope(tmp_path: Path, method: str) -> None:
    rows = [r for r in synthetic_rows() if r.intent != "oos"]
    result = build(tmp_path, rows, method=method, per_route=5, in_scope_pass=0.9)
    assert result.registry.intent.method == method
    assert Counter(len(r.examples) for r in result.registry.routes) == {5: 6}
    assert result.registry.intent.out_of_scope == []
    assert result.choice.oos_recall is None
    assert "keeps 0.9" in result.choice.rule


def test_base_registry_keeps_its_pool(tmp_path: Path) -> None:
    base_text = """
encoder: builtin:static
providers:
  vllm: {kind: openai, base_url: "http://10.0.0.1:8000/v1"}
models:
  cheap: {provider: vllm, model: qwen}
  big: {provider: vllm, model: llama}
routes:
  - name: old
    target: big
    examples: [something old]
default: {target: cheap}
"""
    base = parse_registry(base_text, source="base.yaml")
    config = FromExamplesConfig(oos_label="oos")
    result = registry_from_examples(
        synthetic_rows(), config, base=base, encoder=FakeEncoder(), cache_dir=tmp_path
    )
    registry = result.registry
    assert set(registry.models) == {"cheap", "big"}
    assert "old" not in {r.name for r in registry.routes}
    assert {r.target for r in registry.routes} == {"cheap"}
    assert result.yaml_text.count("builtin:static") == 1


def test_bad_inputs(tmp_path: Path) -> None:
    one_label = [LabelledRow(f"text {i}", "only") for i in range(10)]
    with pytest.raises(DataError, match="at least two in-scope labels"):
        build(tmp_path, one_label)
    reserved = [*synthetic_rows(), LabelledRow("fallback text", "default")]
    with pytest.raises(DataError, match=r"label 'default' cannot be a route name: .*reserved"):
        build(tmp_path, reserved)
    spaced = [*synthetic_rows(), LabelledRow("a b", "two words"), LabelledRow("c d", "two words")]
    with pytest.raises(DataError, match="label 'two words' cannot be a route name: invalid"):
        build(tmp_path, spaced)
    with pytest.raises(ConfigError, match="unknown method"):
        build(tmp_path, synthetic_rows(), method="svm")
    with pytest.raises(ConfigError, match="folds"):
        build(tmp_path, synthetic_rows(), folds=1)


def test_folds_are_stratified_seeded_and_skip_single_row_labels() -> None:
    from llmroute.evaluate.from_examples import _fold_of

    labels = np.repeat(np.arange(4), [10, 7, 1, 2])
    folds = _fold_of(labels, 5, seed=0)
    assert (folds == _fold_of(labels, 5, seed=0)).all()
    assert folds[labels == 2].tolist() == [-1]  # one row: never held out
    for label, count in ((0, 10), (1, 7), (3, 2)):
        per_fold = np.bincount(folds[labels == label], minlength=5)
        assert per_fold.sum() == count
        assert per_fold.max() - per_fold.min() <= 1  # spread evenly over the folds


def test_single_example_labels_are_kept_but_not_scored(tmp_path: Path) -> None:
    rows = [*synthetic_rows(), LabelledRow("a lonely request about gardening", "gardening")]
    result = build(tmp_path, rows, oos_label="oos")
    assert "gardening" in {r.name for r in result.registry.routes}
    assert result.n_calibration == len(rows) - 1


def test_a_base_registrys_artifacts_and_errors_are_read_as_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--base team/registry.yaml` run from another folder looked for the base's
    difficulty router under the working directory ('no such router artifact'), and an
    error in what the base gave named '<registry built from ...>' and a line of a text
    never written anywhere."""
    team = tmp_path / "team"
    team.mkdir()
    data = tmp_path / "labels.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"prompt": f"question {i}", "weak_correct": i % 3 == 0, "strong_correct": True}
            )
            + "\n"
            for i in range(60)
        )
    )
    out = team / "routers" / "r"
    assert (
        run(["train", "difficulty", "--data", str(data), "--router", "random", "-o", str(out)]) == 0
    )
    base_text = (
        "encoder: builtin:static\n"
        "providers: {vllm: {kind: openai, base_url: 'http://10.0.0.1:8000/v1'}}\n"
        "models: {cheap: {provider: vllm, model: qwen}, big: {provider: vllm, model: llama}}\n"
        "routes: [{name: old, target: big, examples: [something old]}]\n"
        "default:\n"
        "  target: cheap\n"
        "  difficulty: {router: routers/r, strong: big, weak: cheap, threshold: 0.5}\n"
    )
    base_path = team / "registry.yaml"
    base_path.write_text(base_text)
    monkeypatch.chdir(tmp_path)
    config = FromExamplesConfig(oos_label="oos")
    rows = synthetic_rows()
    result = registry_from_examples(rows, config, base=load_registry(base_path), cache_dir=tmp_path)
    assert result.registry.default.difficulty is not None

    base_path.write_text(base_text + "rules: [{name: r1, when: {has_tools: true}, route: old}]\n")
    with pytest.raises(ConfigError) as info:
        registry_from_examples(rows, config, base=load_registry(base_path), cache_dir=tmp_path)
    error = info.value
    assert (error.file, error.line, error.field) == (str(base_path), 8, "rules[0].route")
    assert "unknown route 'old'" in error.message and "not the --base registry's" in error.message


def test_the_bases_relative_paths_are_rewritten_for_the_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--base team/registry.yaml -o out/new.yaml` kept `router: routers/r` as the base
    wrote it, so out/new.yaml named out/routers/r: 'no such router artifact' at its
    first load. The path is now relative to the output file (../team/routers/r)."""
    team, out = tmp_path / "team", tmp_path / "out"
    team.mkdir()
    out.mkdir()
    data = tmp_path / "difficulty.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"q {i}", "weak_correct": i % 3 == 0, "strong_correct": True})
            + "\n"
            for i in range(60)
        )
    )
    router = team / "routers" / "r"
    assert (
        run(["train", "difficulty", "--data", str(data), "--router", "random", "-o", str(router)])
        == 0
    )
    (team / "registry.yaml").write_text(
        "encoder: builtin:static\n"
        "providers: {vllm: {kind: openai, base_url: 'http://10.0.0.1:8000/v1'}}\n"
        "models: {cheap: {provider: vllm, model: qwen}, big: {provider: vllm, model: llama}}\n"
        "routes: [{name: old, target: big, examples: [something old]}]\n"
        "default:\n"
        "  target: cheap\n"
        "  difficulty: {router: routers/r, strong: big, weak: cheap, threshold: 0.5}\n"
    )
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "".join(json.dumps({"text": r.text, "intent": r.intent}) + "\n" for r in synthetic_rows())
    )
    monkeypatch.chdir(tmp_path)
    args = ["registry", "from-examples", str(labels), "--base", "team/registry.yaml"]
    assert run([*args, "-o", "out/new.yaml"]) == 0
    built = load_registry(out / "new.yaml")
    assert built.registry.default.difficulty is not None
    assert built.registry.default.difficulty.router == "../team/routers/r"
    Router(built).close()  # loads the router artifact: found
    assert run([*args, "-o", "team/beside.yaml"]) == 0  # the same folder: as written
    beside = load_registry(team / "beside.yaml").registry.default.difficulty
    assert beside is not None and beside.router == "routers/r"


def test_every_kept_path_is_rebased_and_the_rest_left_as_written(tmp_path: Path) -> None:
    """The injection artifact, the reasoning scorer, learned cascade gates and llamacpp
    GGUF files are moved too; absolute paths, ``builtin``, ``package:`` and other
    providers' model names stay."""
    from llmroute.registry.relocate import relocate_paths

    document = {
        "providers": {"gguf": {"kind": "llamacpp"}, "api": {"kind": "openai"}},
        "models": {
            "local": {"provider": "gguf", "model": "models/q.gguf"},
            "packaged": {"provider": "gguf", "model": "package:demo"},
            "hosted": {"provider": "api", "model": "gpt-4.1"},
            "mixed": {
                "model": "shared.gguf",
                "deployments": [
                    {"provider": "gguf"},
                    {"provider": "gguf", "model": "/abs/own.gguf"},
                    {"provider": "api", "model": "gpt-4.1-mini"},
                ],
            },
        },
        "default": {"target": "local", "difficulty": {"router": "/abs/router"}},
        "safety": {"injection": {"artifact": "detectors/inj"}},
        "reasoning": {"scorer": "builtin"},
        "routes": [
            {"name": "short", "cascade": ["local", "hosted"]},
            {
                "name": "gated",
                "cascade": {
                    "tiers": ["local", {"model": "mixed", "gates": [{"kind": "learned"}]}],
                    "gates": ["heuristic", {"kind": "learned", "artifact": "gates/g"}],
                },
            },
        ],
    }
    relocate_paths(document, tmp_path / "team", tmp_path / "out" / "deep")
    models = document["models"]
    assert models["local"]["model"] == "../../team/models/q.gguf"
    assert models["packaged"]["model"] == "package:demo"
    assert models["hosted"]["model"] == "gpt-4.1"
    assert models["mixed"]["model"] == "../../team/shared.gguf"
    assert [d.get("model") for d in models["mixed"]["deployments"]] == [
        None,
        "/abs/own.gguf",
        "gpt-4.1-mini",
    ]
    assert document["default"]["difficulty"] == {"router": "/abs/router"}
    assert document["safety"] == {"injection": {"artifact": "../../team/detectors/inj"}}
    assert document["reasoning"] == {"scorer": "builtin"}
    cascade = document["routes"][1]["cascade"]
    assert cascade["gates"][1]["artifact"] == "../../team/gates/g"  # refresh keeps routes
    assert cascade["tiers"][1]["gates"] == [{"kind": "learned"}]  # builtin: no path
    scorer: dict[str, object] = {"reasoning": {"scorer": "scorers/s"}}
    relocate_paths(scorer, tmp_path / "team", tmp_path)
    assert scorer == {"reasoning": {"scorer": "team/scorers/s"}}
