"""The learned cascade gate: answer checks, training on a synthetic signal, the artifact's
round trip and its refusals."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from llmroute.encoders import load_builtin
from llmroute.encoders.fake import FakeEncoder
from llmroute.errors import ConfigError, DataError
from llmroute.gates.gate_train import GateData, auc, gate_split, read_gate_data, train_gate
from llmroute.gates.learned import CHECK_NAMES, LearnedGateModel, answer_checks


def _checks(prompt: str, answer: str) -> dict[str, float]:
    return dict(zip(CHECK_NAMES, answer_checks(prompt, answer).tolist(), strict=True))


def test_checks_recompute_the_annotated_arithmetic() -> None:
    good = _checks("a", "She sells 9 * 2 = <<9*2=18>>18 eggs.\n#### 18")
    bad = _checks("a", "She sells 9 * 2 = <<9*2=19>>19 eggs.\n#### 19")
    carried = _checks("a", "That is <<9*2=18>>16 eggs.\n#### 16")
    assert good["bad_annotations"] == 0 and good["final_matches_last_result"] == 1
    assert good["has_final_marker"] == 1 and good["no_final_answer"] == 0
    assert bad["bad_annotations"] == 1 and bad["bad_annotation_share"] == 1
    assert carried["bad_carried_result"] == 1 and carried["final_matches_last_result"] == 0


def test_checks_see_truncation_plain_steps_and_code_free_evaluation() -> None:
    cut = _checks("a", "First 15 + 25 = <<15+2")
    assert cut["truncated"] == 1 and cut["unclosed_annotation"] == 1 and cut["no_final_answer"]
    assert _checks("a", "So 3 x 60 = 170 metres. The answer is 170.")["bad_plain_steps"] == 1
    said = _checks("a", "So the answer is 7.5")
    assert said["has_answer_is"] == 1 and said["final_not_integer"] == 1
    # Anything but arithmetic in an annotation is ignored, never evaluated.
    assert _checks("a", "<<__import__('os').getcwd()=1>>1\n#### 1")["bad_annotations"] == 0
    assert _checks("a", "")["empty"] == 1


def _answer(rng: random.Random, correct: bool) -> str:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if correct:
        return f"We multiply {a} by {b}: <<{a}*{b}={a * b}>>{a * b}.\n#### {a * b}"
    return f"Perhaps we add them, roughly <<{a}+{b}={a + b + 3}>>{a + b + 3} I think"


def _synthetic(n: int, seed: int) -> GateData:
    rng = random.Random(seed)
    prompts, answers, weak, strong = [], [], [], []
    for i in range(n):
        correct = rng.random() < 0.6
        prompts.append(f"Question {i}: what is the product of two numbers number {seed}?")
        answers.append(_answer(rng, correct))
        weak.append(correct)
        strong.append(correct or rng.random() < 0.8)
    return GateData(tuple(prompts), tuple(answers), np.array(weak), np.array(strong))


@pytest.fixture(scope="module")
def static() -> object:
    return load_builtin("builtin:static")


def test_training_separates_an_easy_signal(static: object) -> None:
    data = _synthetic(120, seed=1)
    model, metrics = train_gate(data, static, refit=False)  # type: ignore[arg-type]
    assert metrics["val_auc"] > 0.95 and metrics["fitted_on"] == "train"
    fresh = _synthetic(60, seed=2)
    scores = model.score(fresh.prompts, fresh.answers)
    assert scores.shape == (60,) and ((scores >= 0) & (scores <= 1)).all()
    assert auc(scores, fresh.weak) > 0.95
    assert 0.0 <= model.threshold <= 1.0


def test_artifact_round_trip_and_refusals(static: object, tmp_path: Path) -> None:
    data = _synthetic(80, seed=3)
    model, _ = train_gate(data, static)  # type: ignore[arg-type]
    folder = model.save(tmp_path / "gate")
    loaded = LearnedGateModel.load(folder, static)  # type: ignore[arg-type]
    assert loaded.threshold == pytest.approx(model.threshold)
    assert loaded.parts == model.parts
    np.testing.assert_allclose(
        loaded.score(data.prompts[:10], data.answers[:10]),
        model.score(data.prompts[:10], data.answers[:10]),
        atol=1e-5,
    )
    with pytest.raises(ConfigError, match=r"builtin:static.*fake:64"):
        LearnedGateModel.load(folder, FakeEncoder(64))
    meta = json.loads((folder / "gate.json").read_text())
    wrong = ["answer"] if meta["parts"] != ["answer"] else ["checks"]
    (folder / "gate.json").write_text(json.dumps({**meta, "parts": wrong}))
    with pytest.raises(ConfigError, match="malformed learned gate"):
        LearnedGateModel.load(folder, static)  # type: ignore[arg-type]
    (folder / "gate.json").write_text("{not json")
    with pytest.raises(ConfigError, match="malformed"):
        LearnedGateModel.load(folder, static)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no such learned gate"):
        LearnedGateModel.load(tmp_path / "nowhere", static)  # type: ignore[arg-type]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"gate\.json is missing"):
        LearnedGateModel.load(tmp_path / "empty", static)  # type: ignore[arg-type]


def test_the_builtin_gate_loads_for_its_encoder_only(static: object) -> None:
    gate = LearnedGateModel.load("builtin", static)  # type: ignore[arg-type]
    scores = gate.score(["What is 2+3?", "What is 2+3?"], ["2+3=<<2+3=5>>5\n#### 5", ""])
    assert scores.shape == (2,) and scores[0] > scores[1]
    assert 0.0 < gate.threshold < 1.0
    with pytest.raises(ConfigError, match="builtin"):
        LearnedGateModel.load("builtin", FakeEncoder(32))
    other = Path(__file__).resolve().parents[2] / "src/llmroute/gates/data/minilm-int8"
    with pytest.raises(ConfigError, match=r"minilm-int8.*static"):
        LearnedGateModel.load(other, static)  # type: ignore[arg-type]


def test_bad_lines_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    good = {"prompt": "p", "weak_response": "r", "weak_correct": True}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "p", "weak_correct": 1}))
    with pytest.raises(DataError, match=r"rows.jsonl:2: missing field 'weak_response'"):
        read_gate_data(path)
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "weak_correct": "yes"}))
    with pytest.raises(DataError, match=r":3: field 'weak_correct' must be true or false"):
        read_gate_data(path)
    path.write_text(json.dumps({**good, "extra": 1}) + "\n")
    rows = read_gate_data(path)
    assert len(rows) == 1 and rows.strong is None
    with pytest.raises(DataError, match="strong_correct"):
        read_gate_data(path, need_strong=True)


def test_too_few_rows_names_the_minimum(static: object) -> None:
    with pytest.raises(DataError, match="at least 50 rows, got 20"):
        train_gate(_synthetic(20, seed=4), static)  # type: ignore[arg-type]


def test_the_split_is_the_difficulty_split() -> None:
    from llmroute.difficulty.data import LabelledPrompts, split

    data = _synthetic(100, seed=5)
    assert data.strong is not None
    labelled = LabelledPrompts(
        data.prompts, data.weak, data.strong, tuple(map(str, range(100))), (None,) * 100
    )
    for mine, theirs in zip(gate_split(data), split(labelled), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_the_fits_run_with_blas_on_one_thread(static: object) -> None:
    """The L-BFGS fits' small products, split across OpenBLAS's threads, mostly waited
    for each other (676 GSM8K rows: 14-32 s against 8-15 s on one thread, the same gate).
    The limit is lifted afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    seen: list[set[int]] = []

    def progress(message: str) -> None:
        if "validation AUC" in message:  # a candidate's fit, not the embedding
            seen.append(blas_threads())

    with threadpool_limits(limits=2, user_api="blas"):
        if blas_threads() != {2}:
            pytest.skip("numpy is linked to no BLAS that threadpoolctl can set")
        train_gate(_synthetic(200, seed=5), static, progress=progress)  # type: ignore[arg-type]
        assert blas_threads() == {2}
    assert seen and all(threads == {1} for threads in seen), seen
