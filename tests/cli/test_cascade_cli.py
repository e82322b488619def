"""`llmroute train gate` and `llmroute bench-cascade` as a user runs them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from strict_json import loads_strict

from llmroute.cli._app import run


def _rows(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        correct = rng.random() < 0.6
        if correct:
            answer = f"Multiply: <<{a}*{b}={a * b}>>{a * b}.\n#### {a * b}"
        else:
            answer = f"Maybe we add, roughly <<{a}+{b}={a + b + 1}>>{a + b + 1} I guess"
        rows.append(
            {
                "prompt": f"Question {i}: what is {a} times {b}?",
                "weak_response": answer,
                "weak_correct": correct,
                "strong_correct": correct or rng.random() < 0.8,
                "strong_response": "ignored",
            }
        )
    return rows


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cascade") / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(150, seed=0)))
    return path


@pytest.fixture(scope="module")
def trained(data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cascade") / "gate"
    assert run(["train", "gate", "--data", str(data_file), "-o", str(out)]) == 0
    return out


def test_train_gate_writes_an_artifact(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = json.loads((trained / "gate.json").read_text())
    assert meta["encoder"].startswith("builtin:static")
    assert meta["trained_on"]["fitted_on"] == "train+val"
    assert meta["metrics"]["val_auc"] > 0.9
    assert (trained / "weights.npz").exists()


def test_bench_cascade_json(
    data_file: Path, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    args = ["bench-cascade", "--data", str(data_file), "--artifact", str(trained), "--json"]
    assert run([*args, "--router", "none"]) == 0
    result = loads_strict(capsys.readouterr().out)
    assert result["n"] == 30 and result["apgr"] > 0.7  # the oracle's here is ~0.78
    assert 0.0 <= result["escalation_at_95pct_quality"] <= 1.0
    assert result["prices"]["default"] and result["break_even_escalation"] == pytest.approx(0.9)
    assert "at_gate_threshold" in result


def test_bench_cascade_other_gates_prices_and_table(
    data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["bench-cascade", "--data", str(data_file), "--router", "none", "--split", "all"]
    assert (
        run([*base, "--gate", "oracle", "--json", "--price-weak", "1", "--price-strong", "4"]) == 0
    )
    result = loads_strict(capsys.readouterr().out)
    assert result["n"] == 150 and result["break_even_escalation"] == pytest.approx(0.75)
    # Strong is right wherever weak is, so the oracle only recovers the whole gap.
    assert result["apgr"] > 0.7 and result["min_lift_over_random"] > 0
    assert result["escalation_at_95pct_quality"] <= 1.0 - result["weak_accuracy"]
    plot = tmp_path / "curves.html"
    assert run([*base, "--gate", "heuristic", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "escalation at 95% of strong accuracy" in out and "default relative prices" in out
    assert f"curves written to {plot}" in out  # as eval's and report's --plot say theirs
    assert plot.read_text().startswith("<!DOCTYPE html>") or "<svg" in plot.read_text()


def test_bench_cascade_writes_tiny_prices_and_costs_in_fixed_point(
    data_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prices of $0.000001 and $0.00002 a call read "1e-06" and "2e-05" before, the costs
    "1.23e-05": the fixed point `llmroute report` writes instead."""
    base = ["bench-cascade", "--data", str(data_file), "--router", "none", "--split", "all"]
    capsys.readouterr()
    assert run([*base, "--gate", "oracle", "--price-weak", "1e-06", "--price-strong", "2e-05"]) == 0
    out = capsys.readouterr().out
    assert "prices weak 0.000001, strong 0.00002" in out
    assert "e-0" not in out and "(cost 0.0000" in out
    capsys.readouterr()
    assert run([*base, "--price-weak", "-1e-06", "--price-strong", "1"]) == 2
    assert "got weak -0.000001 and strong 1" in capsys.readouterr().err


def test_bad_input_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "weak_response": "r", "weak_correct": "no"}) + "\n")
    assert run(["train", "gate", "--data", str(path), "-o", str(tmp_path / "g")]) == 2
    assert "bad.jsonl:1: field 'weak_correct' must be true or false" in capsys.readouterr().err
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(10, seed=1)))
    assert run(["train", "gate", "--data", str(path), "-o", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err  # found while training: the progress display was on
    assert err.startswith("error: ")  # not after its empty line, off a terminal
    assert "at least 50 rows, got 10" in err
    assert run(["bench-cascade", "--data", str(path), "--price-weak", "1"]) == 2
    assert "both --price-weak and --price-strong" in capsys.readouterr().err


def test_bench_cascade_counts_one_row_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(_rows(1, seed=0)[0]) + "\n")
    argv = ["bench-cascade", "--data", str(path), "--gate", "oracle", "--router", "none"]
    assert run([*argv, "--price-weak", "1", "--price-strong", "2"]) == 2
    assert f"no test rows in {path} (1 row)" in capsys.readouterr().err


def test_bench_cascade_against_a_router_with_registry_prices(
    data_file: Path, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Path(__file__).resolve().parents[2] / "examples" / "registry.yaml"
    args = ["bench-cascade", "--data", str(data_file), "--artifact", str(trained), "--json"]
    prices = ["--registry", str(registry), "--weak", "small", "--strong", "large"]
    assert run([*args, *prices, "--router", "linear"]) == 0
    result = loads_strict(capsys.readouterr().out)
    assert result["prices"] == {"weak": 0.2, "strong": 10.0, "default": False}
    router = result["router"]
    assert router["name"] == "router:linear" and 0.0 <= router["apgr"] <= 2.0
    share = router["strong_share_at_95pct_quality"]
    assert router["cost_at_95pct_quality"] == pytest.approx((1 - share) * 0.2 + share * 10.0)
    assert isinstance(result["fewer_strong_calls_than_router"], bool)


def test_bench_cascade_benches_the_rows_the_gate_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gate trained with `--seed 3` is benched on seed 3's test rows: seed 0's test
    rows (which it benched before) hold rows that gate was trained on. Labels here are
    noise, so that the gate's scores, and what escalates, differ from row to row."""
    from llmroute.encoders import load_builtin
    from llmroute.gates.gate_train import gate_split, read_gate_data
    from llmroute.gates.learned import LearnedGateModel

    rng = random.Random(7)
    noisy = [{**row, "weak_correct": rng.random() < 0.5} for row in _rows(150, seed=2)]
    data_file = tmp_path / "noisy.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in noisy))
    gate = tmp_path / "gate-seed-3"
    assert run(["train", "gate", "--data", str(data_file), "--seed", "3", "-o", str(gate)]) == 0
    model = LearnedGateModel.load(str(gate), load_builtin("static"))
    rows = read_gate_data(data_file, need_strong=True)

    def escalation(seed: int) -> float:
        test = gate_split(rows, seed=seed)[2]
        scores = model.score([rows.prompts[i] for i in test], [rows.answers[i] for i in test])
        return float((scores < model.threshold).mean())

    assert escalation(0) != escalation(3)  # the two splits tell apart in the output
    capsys.readouterr()
    args = ["bench-cascade", "--data", str(data_file), "--artifact", str(gate), "--json"]
    assert run([*args, "--router", "none"]) == 0
    result = loads_strict(capsys.readouterr().out)
    assert result["at_gate_threshold"]["escalation"] == pytest.approx(escalation(3))


def _merged(data_file: Path, path: Path) -> Path:
    """The training file with 150 new rows after it: a merged copy, whose seeded split
    puts some of the gate's training rows in its test split."""
    new = [{**r, "prompt": f"New {r['prompt']}"} for r in _rows(150, seed=5)]
    path.write_text(data_file.read_text() + "".join(json.dumps(r) + "\n" for r in new))
    return path


def test_bench_cascade_leaves_out_the_rows_the_gate_was_trained_on(
    data_file: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As `bench` does: a copy of the training file (here merged with new rows) does not
    pass the gate's training rows off as held out; they are left out, and counted."""
    from llmroute.gates.gate_train import gate_split, read_gate_data

    merged = _merged(data_file, tmp_path / "merged.jsonl")
    rows = read_gate_data(merged, need_strong=True)
    test = gate_split(rows, seed=0)[2]
    old = sum(rows.prompts[i].startswith("Question") for i in test)
    assert 0 < old < test.size  # the copy's test split holds rows the gate was trained on
    capsys.readouterr()
    args = ["bench-cascade", "--data", str(merged), "--artifact", str(trained), "--router", "none"]
    assert run([*args, "--json"]) == 0
    result = loads_strict(capsys.readouterr().out)
    # The training file's own test rows (30 of its 150) were never seen: only the rest go.
    left_out = old - sum(rows.prompts[i] in _test_prompts(data_file) for i in test)
    assert left_out > 0 and result["left_out_seen"] == left_out
    assert result["n"] == test.size - left_out
    assert result["rows"] == (
        f"test split ({test.size - left_out} of 300; the {left_out} whose prompts the gate "
        "saw in training left out)"
    )
    assert run([*args, "--split", "all", "--json"]) == 0  # all: the 150 new and 30 held out
    assert loads_strict(capsys.readouterr().out)["n"] == 180
    # On the training file itself, --split all keeps every row, as `bench` does.
    same = ["bench-cascade", "--data", str(data_file), "--artifact", str(trained), "--json"]
    assert run([*same, "--router", "none", "--split", "all"]) == 0
    result = loads_strict(capsys.readouterr().out)
    assert result["n"] == 150 and result["left_out_seen"] == 0


def _test_prompts(data_file: Path) -> set[str]:
    from llmroute.gates.gate_train import gate_split, read_gate_data

    rows = read_gate_data(data_file, need_strong=True)
    return {rows.prompts[i] for i in gate_split(rows, seed=0)[2]}


def test_bench_cascade_refuses_a_file_of_training_rows_only(
    data_file: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held_out = _test_prompts(data_file)
    copy = tmp_path / "copy.jsonl"
    lines = data_file.read_text().splitlines(keepends=True)
    copy.write_text("".join(x for x in reversed(lines) if json.loads(x)["prompt"] not in held_out))
    argv = ["bench-cascade", "--data", str(copy), "--artifact", str(trained), "--split", "all"]
    assert run([*argv, "--router", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: every all row of ") and "nothing unseen to measure" in err


def test_bench_cascade_on_a_gate_without_prompt_hashes(
    data_file: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older artifact still benches, with a one-line warning; a corrupt record is a
    clean error naming gate.json."""
    import shutil

    old = tmp_path / "old-gate"
    shutil.copytree(trained, old)
    meta = json.loads((old / "gate.json").read_text())
    del meta["trained_on"]["seen_prompts"]
    (old / "gate.json").write_text(json.dumps(meta))
    merged = _merged(data_file, tmp_path / "merged.jsonl")
    argv = ["bench-cascade", "--data", str(merged), "--artifact", str(old), "--router", "none"]
    capsys.readouterr()
    assert run([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert loads_strict(captured.out)["left_out_seen"] == 0
    assert captured.err.count("\n") == 1
    assert "records no hashes of its training prompts" in captured.err
    own = ["bench-cascade", "--data", str(data_file), "--artifact", str(old), "--router", "none"]
    assert run([*own, "--json"]) == 0  # its own file's test split is what it left out
    assert capsys.readouterr().err == ""
    meta["trained_on"]["seen_prompts"] = {"hash": "blake2b-64", "b64": "!!!"}
    (old / "gate.json").write_text(json.dumps(meta))
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert "corrupt learned gate: trained_on.seen_prompts.b64" in err and "gate.json" in err


GSM8K = Path("/work/shared/data/gsm8k/gsm8k_dev.jsonl")
needs_gsm8k = pytest.mark.skipif(not GSM8K.exists(), reason=f"{GSM8K} is absent (shared data)")


@needs_gsm8k
def test_builtin_gate_leaves_out_the_rows_it_was_trained_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped gate was fitted on GSM8K's train + validation rows: a reordered copy of
    that file, benched whole, is measured on the 135 it left out only."""
    copy = tmp_path / "reordered.jsonl"
    copy.write_text("".join(reversed(GSM8K.read_text().splitlines(keepends=True))))
    argv = ["bench-cascade", "--data", str(copy), "--split", "all", "--router", "none"]
    assert run([*argv, "--json"]) == 0
    result = loads_strict(capsys.readouterr().out)
    assert result["left_out_seen"] == 541 and result["n"] == 135
    assert run([*argv, "--json", "--data", str(GSM8K), "--split", "test"]) == 0
    assert loads_strict(capsys.readouterr().out)["apgr"] == result["apgr"]  # the same rows


@needs_gsm8k
@pytest.mark.parametrize("name", ["static", "minilm-int8"])
def test_shipped_gates_record_the_split_they_were_fitted_on(name: str) -> None:
    """Each shipped gate's hashes are those of `train gate`'s train + validation rows of
    the file whose digest it records (regenerate them when a gate is retrained)."""
    import numpy as np

    from llmroute.difficulty.calibration import file_digest, seen_prompts
    from llmroute.gates.gate_train import gate_split, read_gate_data
    from llmroute.gates.learned import BUILTIN_DIR, read_gate_meta

    trained_on = read_gate_meta(BUILTIN_DIR / name)["trained_on"]
    assert trained_on["sha256"] == file_digest(GSM8K)
    rows = read_gate_data(GSM8K)
    train, val, _ = gate_split(rows, seed=trained_on["split"]["seed"])
    fitted_on = [rows.prompts[i] for i in np.concatenate([train, val])]
    assert trained_on["seen_prompts"] == seen_prompts(fitted_on)


def test_an_encoder_other_than_the_gates_is_refused_not_ignored(
    data_file: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a trained gate, `--encoder` was ignored without a word: the gate's own encoder
    embedded the rows, the router comparison's included, whatever the user named; and an
    --encoder that is no encoder (`static`) passed, or read as a missing builtin gate."""
    base = ["bench-cascade", "--data", str(data_file), "--router", "none", "--json"]
    capsys.readouterr()
    assert run([*base, "--artifact", str(trained), "--encoder", "builtin:minilm-int8"]) == 2
    err = capsys.readouterr().err
    assert f"--encoder builtin:minilm-int8: the gate in {trained} was trained with" in err, err
    assert "builtin:static" in err and "leave --encoder out" in err, err
    assert run([*base, "--artifact", str(trained), "--encoder", "builtin:static"]) == 0
    assert loads_strict(capsys.readouterr().out)["n"] == 30
    missing = str(tmp_path / "no-such-data.jsonl")  # refused before the data is read
    for gate in ("learned", "heuristic"):
        argv = ["bench-cascade", "--data", missing, "--gate", gate, "--encoder", "static"]
        assert run(argv) == 2
        err = capsys.readouterr().err
        assert "--encoder must be builtin:NAME (minilm, minilm-int8 or static), not 'static'" in err
