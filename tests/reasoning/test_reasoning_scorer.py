"""The reasoning scorer: labelled data, training, the artifact, the shipped scorers and
`llmroute train reasoning`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from llmroute.cli._app import run
from llmroute.difficulty.calibration import file_digest, seen_mask, seen_prompts
from llmroute.encoders import load_builtin
from llmroute.errors import ConfigError, DataError
from llmroute.reasoning import (
    ReasoningScorer,
    binary_metrics,
    builtin_scorer_dir,
    load_scorer,
    read_reasoning,
    read_scorer_meta,
    roc_auc,
    save_scorer,
    split_reasoning,
    train_scorer,
)
from llmroute.reasoning.artifact import BUILTIN_DIR
from llmroute.reasoning.train import threshold_at_fpr

PASSAGE = "The following passage is long enough to be shared by several questions. " * 4


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _synthetic(n: int = 60) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "text": f"solve the equation {i}x + {i + 3} = {2 * i} and prove it",
                "label": "reasoning",
            }
        )
        rows.append({"text": f"what time does store number {i} open today", "label": "direct"})
    return rows


# -- data -------------------------------------------------------------------------------


def test_read_reasoning(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "d.jsonl",
        [
            {"text": "prove it", "label": "reasoning", "source": "x"},
            "",
            {"text": "hi", "label": "direct", "group": "g1", "extra": 1},
        ],
    )
    data = read_reasoning(path)
    assert data.texts == ("prove it", "hi")
    assert data.labels.tolist() == [1, 0]
    assert data.groups[1] == "g1" and data.sources == ("x", None)


def test_labels_are_read_in_any_case(tmp_path: Path) -> None:
    """As safety data's are: "Reasoning" was refused, "Jailbreak" taken."""
    rows: list[object] = [
        {"text": "prove it", "label": "Reasoning"},
        {"text": "hi", "label": " DIRECT "},
        {"text": "why?", "label": "reasoning"},
    ]
    assert read_reasoning(_write(tmp_path / "d.jsonl", rows)).labels.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"label": "direct"}', "missing field 'text'"),
        ('{"prompt": "x", "weak_correct": true}', "missing field 'text'"),  # difficulty's
        ('{"text": null, "label": "direct"}', "field 'text' must be a non-empty string"),
        ('{"text": "  ", "label": "direct"}', "field 'text' must be a non-empty string"),
        ('{"text": "x", "label": "Hard"}', '"reasoning" or "direct" (in any case), got "Hard"'),
        ('{"text": "x", "label": 1}', '"reasoning" or "direct" (in any case), got 1'),
        ('{"text": "x"}', "missing field 'label'"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"text": "ok", "label": "direct"}, line])
    with pytest.raises(DataError, match=r"field|JSON|object") as info:
        read_reasoning(path)
    assert f"{path}:2" in str(info.value) and message in str(info.value)


def test_one_label_only_or_empty_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="both labels"):
        read_reasoning(_write(tmp_path / "one.jsonl", [{"text": "a", "label": "direct"}]))
    with pytest.raises(DataError, match="no labelled rows"):
        read_reasoning(_write(tmp_path / "empty.jsonl", [""]))


def test_split_keeps_passages_together_and_is_fixed(tmp_path: Path) -> None:
    rows: list[object] = [
        {"text": f"{PASSAGE}\nQuestion {i}?\nA. x\nB. y\nAnswer:", "label": "reasoning"}
        for i in range(5)
    ]
    rows += _synthetic(50)
    data = read_reasoning(_write(tmp_path / "d.jsonl", rows))
    train, val, test = split_reasoning(data, seed=3)
    assert sorted([*train, *val, *test]) == list(range(len(data)))
    passage_side = {side for side, idx in enumerate((train, val, test)) for i in idx if i < 5}
    assert len(passage_side) == 1
    again = split_reasoning(data, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    for side in (train, val, test):  # each side keeps both labels
        assert 0 < data.labels[side].mean() < 1


# -- metrics and training ---------------------------------------------------------------


def test_roc_auc_and_metrics() -> None:
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    m = binary_metrics(np.array([0.1, 0.6, 0.8, 0.4]), labels, 0.5)
    assert (m["tpr"], m["fpr"], m["accuracy"]) == (0.5, 0.5, 0.5)


def test_threshold_at_fpr_bounds_false_positives() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(1000)
    labels = (rng.random(1000) < 0.3).astype(np.intp)
    for max_fpr in (0.0, 0.05, 0.2):
        threshold = threshold_at_fpr(scores, labels, max_fpr)
        fpr = float((scores[labels == 0] >= threshold).mean())
        assert fpr <= max_fpr


def test_train_scorer_separates_and_picks_on_validation() -> None:
    rng = np.random.default_rng(1)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < 0.4).astype(np.intp)
        x = rng.normal(size=(n, 16)).astype(np.float32)
        x[:, 0] += np.where(y == 1, 2.0, -2.0)
        return x / np.linalg.norm(x, axis=1, keepdims=True), y

    (xt, yt), (xv, yv) = sample(400), sample(200)
    trained = train_scorer(xt, yt, xv, yv, encoder_identity="fake:16", max_fpr=0.05)
    assert trained.validation["auc"] > 0.95
    assert trained.validation["fpr"] <= 0.05
    assert trained.hyper["c"] in [row["c"] for row in trained.sweep]
    assert trained.scorer.score(xv[0]) == pytest.approx(trained.scorer.scores(xv[:1])[0])


def test_too_few_rows_per_label() -> None:
    x = np.eye(8, dtype=np.float32)
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.intp)
    with pytest.raises(DataError, match="at least 10"):
        train_scorer(x, y, x, y, encoder_identity="fake:8")


# -- artifact ---------------------------------------------------------------------------


def _artifact(
    tmp_path: Path, identity: str = "builtin:static@abc;max_tokens=256;truncate=head"
) -> Path:
    scorer = ReasoningScorer(np.arange(4, dtype=np.float32) / 10, -0.25, 0.6, identity)
    return save_scorer(
        scorer, tmp_path / "gate", hyper={"c": 1.0}, trained_on={"rows": 3}, metrics={"x": 1}
    )


def test_artifact_round_trip(tmp_path: Path) -> None:
    folder = _artifact(tmp_path)
    loaded = load_scorer(folder, encoder_identity="builtin:static@abc;max_tokens=256;truncate=head")
    assert loaded.weights.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert (loaded.bias, loaded.threshold) == (-0.25, 0.6)
    meta = read_scorer_meta(folder)
    assert meta["hyper"] == {"c": 1.0} and meta["dim"] == 4 and meta["kind"] == "logistic"
    x = np.array([0.0, 0.0, 1.0, 0.0], dtype=np.float32)
    assert loaded.score(x) == pytest.approx(1 / (1 + np.exp(-(0.2 - 0.25))))


def test_artifact_accepts_other_truncation_of_the_same_weights(tmp_path: Path) -> None:
    folder = _artifact(tmp_path)
    load_scorer(folder, encoder_identity="builtin:static@abc;max_tokens=128;truncate=tail")


def test_artifact_refuses_another_encoder(tmp_path: Path) -> None:
    folder = _artifact(tmp_path)
    with pytest.raises(ConfigError, match="trained with encoder 'builtin:static@abc"):
        load_scorer(folder, encoder_identity="builtin:minilm-int8@abc;max_tokens=256")


def test_a_scorer_path_that_is_a_file_or_not_there_is_said_as_such(tmp_path: Path) -> None:
    """Not "corrupt reasoning scorer: [Errno 20] Not a directory: 'FILE/reasoning.json'",
    nor a folder that is not there said to lack its reasoning.json."""
    (tmp_path / "scorer").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError) as a_file:
        load_scorer(tmp_path / "scorer")
    assert str(a_file.value) == (
        f"{tmp_path / 'scorer'}: a file, not a reasoning scorer (a folder written by "
        "`llmroute train reasoning`)"
    )
    with pytest.raises(ConfigError, match="no such reasoning scorer") as missing:
        load_scorer(tmp_path / "nothing")
    assert "reasoning.json" not in str(missing.value)


def test_missing_and_corrupt_artifacts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no reasoning scorer here"):
        load_scorer(tmp_path)
    folder = _artifact(tmp_path)
    (folder / "weights.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="corrupt reasoning scorer"):
        load_scorer(folder)
    (folder / "reasoning.json").write_text('{"encoder": "x", "threshold": 0.5, "format": 99}')
    with pytest.raises(ConfigError, match="format 99"):
        load_scorer(folder)


def test_non_finite_or_mis_sized_scorers_are_refused(tmp_path: Path) -> None:
    """A NaN weight or threshold loaded, and the gate then never fired; weights of another
    width than the encoder's passed `registry check`, then every decision raised."""
    good = ReasoningScorer(np.arange(4, dtype=np.float32) / 10, -0.25, 0.6, "e")
    for name, scorer in (
        ("weights", dataclasses.replace(good, weights=np.array([0, np.nan, 0, 0], np.float32))),
        ("bias", dataclasses.replace(good, bias=float("nan"))),
        ("threshold", dataclasses.replace(good, threshold=float("nan"))),
    ):
        folder = save_scorer(scorer, tmp_path / name, hyper={}, trained_on={}, metrics={})
        with pytest.raises(ConfigError, match="corrupt reasoning scorer"):
            load_scorer(folder)
    folder = _artifact(tmp_path)
    load_scorer(folder, dim=4)
    with pytest.raises(ConfigError, match="the encoder's vectors 256-wide"):
        load_scorer(folder, dim=256)


# -- the shipped scorers ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["static", "minilm-int8"])
def test_shipped_scorers(name: str) -> None:
    folder = BUILTIN_DIR / name
    assert sum(f.stat().st_size for f in folder.iterdir()) < 1_000_000
    meta = read_scorer_meta(folder)
    assert meta["encoder"].startswith(f"builtin:{name}@")
    assert meta["metrics"]["test"]["auc"] > 0.95
    assert meta["metrics"]["validation"]["fpr"] <= 0.05


def test_builtin_resolution() -> None:
    static = load_builtin("static")
    folder, expected = builtin_scorer_dir(static.identity)
    assert folder == BUILTIN_DIR / "static"
    load_scorer(folder, encoder_identity=expected)
    folder, expected = builtin_scorer_dir("builtin:minilm@53aa51172d14;max_tokens=256")
    assert folder == BUILTIN_DIR / "minilm-int8" and expected == "builtin:minilm-int8@53aa51172d14"
    with pytest.raises(ConfigError, match="train one with `llmroute train reasoning"):
        builtin_scorer_dir("openai:text-embedding-3-small@https://api.openai.com/v1")


# -- the command ------------------------------------------------------------------------


def test_train_reasoning_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path / "labels.jsonl", _synthetic())
    out = tmp_path / "gate"
    code = run(["train", "reasoning", "--data", str(data), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "validation" in printed and "AUC" in printed and str(out) in printed
    scorer = load_scorer(out, encoder_identity=load_builtin("static").identity)
    assert scorer.weights.shape == (load_builtin("static").dim,)
    meta = read_scorer_meta(out)
    assert meta["trained_on"]["encoder_spec"] == "builtin:static"
    assert "test" not in meta["metrics"]  # the test split is left alone
    # the texts it was fitted on and chose C and the threshold with, and no test text
    labelled = read_reasoning(data)
    train, val, test = split_reasoning(labelled, seed=0)
    seen = seen_mask(meta["trained_on"]["seen_prompts"], labelled.texts, what="", meta_file=None)
    assert seen is not None and set(np.flatnonzero(seen)) == {*train, *val}
    assert not seen[test].any()


def test_train_reasoning_bad_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path / "labels.jsonl", [{"text": "x", "label": "maybe"}])
    code = run(["train", "reasoning", "--data", str(data), "-o", str(tmp_path / "o")])
    assert code == 2
    assert "labels.jsonl:1" in capsys.readouterr().err


SHARED = Path("/work/shared/data")
SOURCES = (
    "gsm8k/gsm8k_dev.jsonl",
    "mmlu/mmlu_dev.jsonl",
    "clinc150/train.jsonl",
    "banking77/train.jsonl",
)


@pytest.mark.skipif(
    not all((SHARED / s).exists() for s in SOURCES), reason=f"{SHARED} is absent (shared data)"
)
@pytest.mark.parametrize("name", ["static", "minilm-int8"])
def test_shipped_scorers_record_the_rows_they_were_trained_on(name: str, tmp_path: Path) -> None:
    """Each shipped scorer's hashes are those of the train + validation rows of the labels
    benchmarks/train_reasoning_artifacts.py builds (the file whose digest it records):
    regenerate them when a scorer is retrained."""
    import importlib.util

    script = Path(__file__).parents[2] / "benchmarks/train_reasoning_artifacts.py"
    spec = importlib.util.spec_from_file_location("train_reasoning_artifacts", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    labels = tmp_path / "reasoning_labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in module.build_labels(SHARED)))
    trained_on = read_scorer_meta(BUILTIN_DIR / name)["trained_on"]
    assert trained_on["sha256"] == file_digest(labels)
    data = read_reasoning(labels)
    train, val, _ = split_reasoning(data, seed=trained_on["split"]["seed"])
    assert trained_on["seen_prompts"] == seen_prompts([data.texts[i] for i in (*train, *val)])
