"""`llmroute train difficulty`, `calibrate` and `bench` as a user runs them, and a
registry whose default is a difficulty router (pipeline, and the gateway's
``router-<name>-<threshold>`` models through the planner)."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
from strict_json import loads_strict

from llmroute.cli._app import run
from llmroute.decide import Router
from llmroute.dispatch import plan_request
from llmroute.errors import ConfigError, ModelNotFound

EASY = ["what is {} plus {}?", "name a colour like {} or {}", "say hi to {} and {}"]
HARD = [
    "prove that the sequence {} converges and bound its limit by {} using induction",
    "derive the closed form of the recurrence {} with initial value {} step by step",
    "find every integer solution of {}x^3 - {}y^2 = 7 and justify each case",
]


def _rows(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        hard = i % 2 == 0
        template = rng.choice(HARD if hard else EASY)
        prompt = template.format(rng.randint(1, 999), rng.randint(1, 999))
        weak = (rng.random() < 0.15) if hard else (rng.random() < 0.9)
        strong = (rng.random() < 0.85) if hard else (rng.random() < 0.92)
        rows.append({"prompt": prompt, "weak_correct": weak, "strong_correct": strong})
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("difficulty")
    data = tmp / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(400, 1)))
    out = tmp / "router"
    assert (
        run(["train", "difficulty", "--data", str(data), "--router", "linear", "-o", str(out)]) == 0
    )
    assert (out / "router.json").exists() and (out / "arrays.npz").exists()
    return data, out


def test_train_then_bench_on_the_held_out_split(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, router = trained
    capsys.readouterr()
    assert run(["bench", "--router", str(router), "--data", str(data), "--json"]) == 0
    result = loads_strict(capsys.readouterr().out)
    for key in ("apgr", "cpt50", "cpt80", "n", "weak_accuracy", "strong_accuracy"):
        assert key in result
    assert result["rows"] == "the test split of its training file"
    assert 60 <= result["n"] <= 100  # about a fifth of 400
    assert result["apgr"] > 0.6 > result["random"]["apgr"] - 0.05  # the task is learnable
    assert 0 < result["cpt50"] < 0.5


def test_an_edited_copy_of_the_training_file_cannot_pass_its_rows_off_as_unseen(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its SHA-256 differs, so the file counts as another; the rows whose prompts the
    router saw in training are still left out, only the test split and new rows count."""
    data, router = trained
    fresh = _rows(60, 99)
    edited = tmp_path / "edited.jsonl"
    edited.write_text(data.read_text() + "".join(json.dumps(r) + "\n" for r in fresh))
    capsys.readouterr()
    assert run(["bench", "--router", str(router), "--data", str(edited), "--json"]) == 0
    result = loads_strict(capsys.readouterr().out)
    meta = json.loads((router / "router.json").read_text())
    test_rows = meta["trained_on"]["rows"]["test"]
    new = {str(r["prompt"]) for r in fresh} - {
        json.loads(line)["prompt"] for line in data.read_text().splitlines()
    }
    assert result["n"] <= test_rows + len(new)  # none of the rows it saw
    assert result["n"] >= len(new)
    assert "whose prompts it saw in training are left out" in result["rows"]
    # a file of nothing but seen prompts (its train and validation rows) has nothing to
    # measure
    from llmroute.difficulty import read_labels, split

    train_idx, val_idx, _ = split(read_labels(data), seed=meta["trained_on"]["split"]["seed"])
    lines = data.read_text().splitlines(keepends=True)
    seen = tmp_path / "seen.jsonl"
    seen.write_text("".join(lines[i] for i in [*train_idx, *val_idx][:50]))
    assert run(["bench", "--router", str(router), "--data", str(seen)]) == 2
    assert "nothing unseen" in capsys.readouterr().err


@pytest.mark.parametrize("b64", ["!!!", "AAAA"])
def test_corrupt_seen_prompts_are_refused_not_read_as_none_seen(
    trained: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    b64: str,
) -> None:
    """ "!!!" decoded (unvalidated) to no hashes: every row of an edited copy of the
    training file then counted as unseen, its training rows benched as held out."""
    data, artifact = trained
    edited = tmp_path / "edited"
    shutil.copytree(artifact, edited)
    meta = json.loads((edited / "router.json").read_text())
    meta["trained_on"]["seen_prompts"]["b64"] = b64
    (edited / "router.json").write_text(json.dumps(meta))
    copy = tmp_path / "copy.jsonl"
    copy.write_text(data.read_text() + json.dumps(_rows(1, 99)[0]) + "\n")
    capsys.readouterr()
    for command in (["calibrate", "--strong-share", "0.3"], ["bench"]):
        assert run([*command, "--router", str(edited), "--data", str(copy)]) == 2
        err = capsys.readouterr().err
        assert f"{edited / 'router.json'}: corrupt router artifact: trained_on.seen_prompts" in err


def test_calibrate_prints_a_threshold_for_the_share(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, router = trained
    capsys.readouterr()
    argv = ["calibrate", "--router", str(router), "--data", str(data), "--strong-share", "0.3"]
    assert run(argv) == 0
    captured = capsys.readouterr()
    float(captured.out.strip())
    # Cross-fitted (the default), the router has seen the validation rows: test ones.
    assert "test split" in captured.err


def test_train_cross_validates_by_default_and_holds_out_with_one_fold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(400, 3)))
    crossed, held = tmp_path / "crossed", tmp_path / "held"
    argv = ["train", "difficulty", "--data", str(data), "--router", "linear"]
    capsys.readouterr()
    assert run([*argv, "-o", str(crossed)]) == 0
    said = capsys.readouterr().out
    assert "10-fold cross-validated APGR" in said and "test rows left out" in said
    meta = json.loads((crossed / "router.json").read_text())
    assert meta["trained_on"]["fitted_on"] == "train+val" and meta["metrics"]["folds"] == 10

    assert run([*argv, "--folds", "1", "-o", str(held)]) == 0
    assert "validation APGR" in capsys.readouterr().out
    assert json.loads((held / "router.json").read_text())["trained_on"]["fitted_on"] == "train"
    calibrate = ["calibrate", "--data", str(data), "--strong-share", "0.3"]
    assert run([*calibrate, "--router", str(held)]) == 0
    assert "validation split" in capsys.readouterr().err
    assert run([*calibrate, "--router", str(crossed), "--split", "val"]) == 0
    assert "rows it was fitted on" in capsys.readouterr().err


def test_bench_plots_and_prices(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, router = trained
    page = tmp_path / "curve.html"
    argv = ["bench", "--router", str(router), "--data", str(data), "--plot", str(page)]
    capsys.readouterr()
    assert run([*argv, "--prices", "0.001,0.01"]) == 0
    assert "<svg" in page.read_text()
    assert f"curves written to {page}" in capsys.readouterr().out  # as eval's --plot says


def test_bench_writes_tiny_costs_in_fixed_point_as_report_does(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A cost per request of $0.00002 read "2e-05" before: an exponent in user units."""
    data, router = trained
    argv = ["bench", "--router", str(router), "--data", str(data), "--prices", "1e-06,2e-05"]
    capsys.readouterr()
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "cost with every call strong: 0.00002 per request" in out
    assert "cost at CPT(50%): " in out and "cost_" not in out  # words, not --json's keys
    costs = [line for line in out.splitlines() if line.startswith("cost ")]
    assert len(costs) == 4 and not any("e-" in line for line in costs)


def test_bench_on_rows_without_a_gap_is_one_line_and_dollars_in_a_title_plot(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Weak and strong equally right on the benched rows (a small sample) was a
    traceback; a data file named with `$` a matplotlib mathtext one."""
    _, router = trained
    same = tmp_path / "same.jsonl"
    rows = [{"prompt": f"what is {i} plus {i}?", "weak_correct": True, "strong_correct": True}
            for i in range(5)]  # fmt: skip
    same.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert run(["bench", "--router", str(router), "--data", str(same), "--json"]) == 2
    err = capsys.readouterr().err
    assert "weak and strong accuracy are equal" in err and "Traceback" not in err
    dollars = tmp_path / "price$_$x.jsonl"
    dollars.write_text("".join(json.dumps(r) + "\n" for r in _rows(60, 3)))
    png = tmp_path / "curve.png"
    argv = ["bench", "--router", str(router), "--data", str(dollars), "--split", "all"]
    assert run([*argv, "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_an_output_that_is_a_file_is_refused_before_training_and_a_replaced_one_said(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o naming a file failed once the training time was spent; an artifact already in
    -o was replaced without a word."""
    data, _ = trained
    taken = tmp_path / "taken"
    taken.write_text("x")
    argv = ["train", "difficulty", "--data", str(data), "--router", "random", "--folds", "1000"]
    capsys.readouterr()
    assert run([*argv, "-o", str(taken)]) == 2
    assert "is a file" in capsys.readouterr().err
    out = tmp_path / "again"
    assert run([*argv, "-o", str(out)]) == 0
    said = capsys.readouterr()
    assert "note: replacing" not in said.err and "--folds 1000 capped" in said.out
    assert run([*argv, "-o", str(out)]) == 0
    assert f"note: replacing the difficulty router in {out}" in capsys.readouterr().err


def test_a_folder_of_other_files_is_not_said_to_be_replaced(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-o` a project folder holding a registry said "note: replacing what it holds",
    as if the registry were gone; it is kept, beside the router's files."""
    data, _ = trained
    (tmp_path / "registry.yaml").write_text("version: 1\n")
    argv = ["train", "difficulty", "--data", str(data), "--router", "random", "--folds", "1"]
    capsys.readouterr()
    assert run([*argv, "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "replacing" not in err, err
    assert (tmp_path / "registry.yaml").read_text() == "version: 1\n"


def test_a_plot_it_cannot_write_is_one_line_not_a_traceback(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, router = trained
    argv = ["bench", "--router", str(router), "--data", str(data), "--plot"]
    capsys.readouterr()
    assert run([*argv, str(tmp_path / "curve.txt")]) == 2
    assert "--plot must end in .png or .html, got" in capsys.readouterr().err
    missing = tmp_path / "no-such-folder" / "curve.html"
    assert run([*argv, str(missing)]) == 2
    assert f"{missing}: No such file or directory" in capsys.readouterr().err


def test_calibrate_needs_prompts_only(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, router = trained
    traffic = tmp_path / "traffic.jsonl"
    prompts = [r["prompt"] for r in _rows(40, 9)]
    traffic.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    argv = ["calibrate", "--router", str(router), "--data", str(traffic)]
    capsys.readouterr()
    assert run([*argv, "--strong-share", "0.25"]) == 0
    out = capsys.readouterr()
    float(out.out)  # the threshold alone on stdout
    assert "25.0% of 40 prompts" in out.err
    # bench needs the outcomes
    assert run(["bench", "--router", str(router), "--data", str(traffic)]) == 2
    assert "traffic.jsonl:1: missing field 'weak_correct'" in capsys.readouterr().err


def test_calibrate_on_an_empty_file_asks_for_prompts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its data is read before the router loads: no router is needed to see it."""
    empty = tmp_path / "traffic.jsonl"
    empty.write_text("\n")
    argv = ["calibrate", "--router", str(tmp_path / "router"), "--data", str(empty)]
    assert run([*argv, "--strong-share", "0.25"]) == 2
    err = capsys.readouterr().err
    assert "no rows (expected JSON lines with 'prompt')" in err
    assert "weak_correct" not in err and "Traceback" not in err


@pytest.mark.parametrize("share", ["0", "1", "1.5", "-0.2"])
def test_a_share_outside_zero_one_is_a_usage_error(trained: tuple[Path, Path], share: str) -> None:
    data, router = trained
    argv = ["calibrate", "--router", str(router), "--data", str(data), "--strong-share", share]
    assert run(argv) == 2


def test_bad_labels_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": "x", "weak_correct": True, "strong_correct": False})
    data.write_text(
        good + "\n" + json.dumps({"prompt": "y", "weak_correct": 1, "strong_correct": True}) + "\n"
    )
    assert run(["train", "difficulty", "--data", str(data), "-o", str(tmp_path / "r")]) == 2
    assert ":2:" in capsys.readouterr().err
    data.write_text(good + "\n" + good.replace('"x"', '"x \\ud800"') + "\n")
    assert run(["train", "difficulty", "--data", str(data), "-o", str(tmp_path / "r")]) == 2
    assert ":2: not valid Unicode" in capsys.readouterr().err


def test_too_few_rows_names_the_minimum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found while training (the progress display on): the error is stderr's first line;
    the progress display, off a terminal, left an empty line before it."""
    data = tmp_path / "small.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(60, 2)))
    assert run(["train", "difficulty", "--data", str(data), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "200" in err  # the default router (mlp) needs 200 rows


def test_a_file_too_small_to_cross_validate_names_the_routers_minimum_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten rows were refused for cross-validation's 40 alone: given 40, mlp then asked
    for 200 training rows in every fold."""
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(10, 2)))
    assert run(["train", "difficulty", "--data", str(data), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "(40 rows)" in err and "'mlp' needs at least 200 training rows in every fold" in err


REGISTRY = """
encoder: builtin:static
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  small: {provider: local, model: s}
  large: {provider: local, model: l}
intent:
  out_of_scope: ["what is 5 plus 7?", "prove that this series converges", "name a colour",
                 "derive the closed form of a recurrence", "find integer solutions"]
routes:
  - {name: greet, examples: ["hello there", "good morning to you"], target: small}
  - {name: thanks, examples: ["thank you so much", "thanks a lot!"], target: small}
default:
  target: small
  difficulty: {router: %(router)s, strong: large, weak: small, %(dial)s}
"""


def _router(tmp_path: Path, router: Path, dial: str) -> Router:
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY % {"router": router, "dial": dial})
    return Router.from_yaml(path)


def test_a_registry_default_splits_by_difficulty(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    _, artifact = trained
    router = _router(tmp_path, artifact, "strong_share: 0.5")
    hard = router.decide(
        "prove that the sequence 3 converges and bound its limit by 4 using induction"
    )
    easy = router.decide("what is 12 plus 30?")
    assert (hard.layer, hard.model) == ("difficulty", "large")
    assert (easy.layer, easy.model) == ("difficulty", "small")
    assert router.decide("hello there").route == "greet"  # intent still decides first
    # the margin is the score less the threshold, the confidence tanh(4·|margin|)
    for decision in (hard, easy):
        (signal,) = [s for s in decision.signals if s.layer == "difficulty"]
        margin = signal.detail["score"] - signal.detail["threshold"]
        assert decision.margin == pytest.approx(margin, abs=1e-5)
        assert decision.confidence == pytest.approx(math.tanh(4 * abs(margin)), abs=1e-4)
    assert hard.margin is not None and easy.margin is not None
    assert hard.margin >= 0 > easy.margin


@pytest.mark.parametrize("dial", ["threshold: -1000", "threshold: 1000"])
def test_an_empty_prompt_is_not_scored_the_default_serves_it(
    trained: tuple[Path, Path], tmp_path: Path, dial: str
) -> None:
    """An image-only turn has no text: its zero vector's score sent it to whichever model
    the threshold favoured (with `auto` and with ``router-<kind>-<t>`` alike)."""
    _, artifact = trained
    router = _router(tmp_path, artifact, dial)  # default.target: small, strong: large
    image_only = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
        ]
    }
    for request in ("", "  \n", image_only):
        decision = router.decide(request)
        assert (decision.layer, decision.model, decision.reason) == (
            "default",
            "small",
            "default: empty prompt",
        )
        (signal,) = [s for s in decision.signals if s.layer == "difficulty"]
        assert signal.outcome == "passed" and "score" not in signal.detail
    for model in ("router-linear--1000", "router-linear-1000"):
        plan = plan_request(router, {**image_only, "model": model}, {})
        assert (plan.decision.layer, plan.decision.model) == ("default", "small")


RUSSIAN = "Докажи, что последовательность сходится, и оцени её предел по индукции."


@pytest.mark.parametrize(
    ("dial", "model", "scored"),
    [
        ("threshold: 1000", "large", False),  # never strong when scored: strong, unscored
        ("threshold: -1000, unread: weak", "small", False),
        ("threshold: -1000, unread: score", "large", True),
    ],
)
def test_text_the_encoder_does_not_read_is_not_scored_unless_asked(
    trained: tuple[Path, Path], tmp_path: Path, dial: str, model: str, scored: bool
) -> None:
    _, artifact = trained
    router = _router(tmp_path, artifact, dial)
    decision = router.decide(RUSSIAN)
    assert (decision.layer, decision.model) == ("difficulty", model)
    (signal,) = [s for s in decision.signals if s.layer == "difficulty"]
    assert signal.detail["unread_scripts"] == "Cyrillic 100%"
    assert ("score" in signal.detail) is scored
    if not scored:
        unread = "unread: weak" in dial
        assert decision.reason == (
            "not scored: text mostly in a script the encoder does not read (Cyrillic 100% of "
            f"the letters): {'weak' if unread else 'strong'} model"
        )
    # English text is scored as ever
    english = router.decide("what is 12 plus 30?")
    assert english.model == ("small" if dial.startswith("threshold: 1000") else "large")


def test_router_models_check_the_script_themselves(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """``router-<kind>-<t>`` runs the difficulty layer alone: no intent layer said it."""
    _, artifact = trained
    router = _router(tmp_path, artifact, "threshold: 0.0")
    body = {
        "messages": [{"role": "user", "content": "请证明这个数列收敛，并用归纳法给出极限的上界。"}]
    }
    plan = plan_request(router, {**body, "model": "router-linear-1000"}, {})
    assert plan.decision.model == "large" and plan.decision.layer == "difficulty"
    assert plan.decision.reason.startswith("not scored: text mostly in a script")


def test_router_models_pick_their_own_threshold(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, artifact = trained
    router = _router(tmp_path, artifact, "threshold: 0.0")
    body = {"messages": [{"role": "user", "content": "what is 12 plus 30?"}]}
    always_strong = plan_request(router, {**body, "model": "router-linear--1000"}, {})
    never_strong = plan_request(router, {**body, "model": "router-linear-1000"}, {})
    assert always_strong.decision.model == "large" and never_strong.decision.model == "small"
    assert always_strong.chain == ("large",)
    signed = plan_request(router, {**body, "model": "router-linear-+1000"}, {})
    assert signed.decision.model == "small"  # a leading + is a number written in ASCII too
    with pytest.raises(ModelNotFound):
        plan_request(router, {**body, "model": "router-knn-0.5"}, {})
    # not a finite threshold written in ASCII digits: no such model
    for odd in ("router-linear-1e999", "router-linear-\u0661", "router-linear-inf"):
        with pytest.raises(ModelNotFound):
            plan_request(router, {**body, "model": odd}, {})


def test_the_listed_router_model_is_the_registrys_exact_threshold(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """`/v1/models` listed router-linear-0.155171 for a threshold of 0.15517081...: what
    scored in between went strong with `auto`, weak with the listed id."""
    from llmroute.dispatch.plan import difficulty_model

    _, artifact = trained
    router = _router(tmp_path, artifact, "strong_share: 0.3")
    listed = difficulty_model(router)
    layer = router.difficulty
    assert listed is not None and layer is not None
    assert float(listed.rsplit("-", 1)[1]) == layer.threshold
    assert difficulty_model(_router(tmp_path, artifact, "threshold: 0.25")) == "router-linear-0.25"


def test_a_router_trained_with_another_encoder_is_refused(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    _, artifact = trained
    path = tmp_path / "registry.yaml"
    text = (REGISTRY % {"router": artifact, "dial": "threshold: 0.1"}).replace(
        "builtin:static", "builtin:minilm-int8"
    )
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Router.from_yaml(path)
    assert "static" in str(caught.value) and "minilm-int8" in str(caught.value)


@pytest.mark.parametrize("quantiles", ["NaN", '"0.1"', "true", "null", "1e999"])
def test_a_strong_share_from_corrupt_quantiles_is_refused_at_load(
    trained: tuple[Path, Path], tmp_path: Path, quantiles: str
) -> None:
    """An edited router.json: a NaN quantile loaded as a NaN threshold (every request to
    the weak model, confidence NaN in the decision); a string was a TypeError from numpy."""
    _, artifact = trained
    edited = tmp_path / "edited"
    shutil.copytree(artifact, edited)
    meta = json.loads((edited / "router.json").read_text())
    count = len(meta["trained_on"]["val_score_quantiles"])
    listed = ", ".join([quantiles] * count)
    meta["trained_on"]["val_score_quantiles"] = "QUANTILES"
    text = json.dumps(meta).replace('"QUANTILES"', f"[{listed}]")
    (edited / "router.json").write_text(text)
    with pytest.raises(ConfigError, match="quantiles are corrupt"):
        _router(tmp_path, edited, "strong_share: 0.5")
    # the same router with a threshold of its own needs no quantiles
    assert _router(tmp_path, edited, "threshold: 0.1").difficulty is not None


@pytest.mark.parametrize(
    "recipe", [[], {"seed": "x"}, {"seed": 1e400}, {"fractions": [0.5]}, {"fractions": "ab"}]
)
def test_a_corrupt_split_recipe_is_one_line_from_calibrate_and_bench(
    trained: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recipe: object,
) -> None:
    """An edited `trained_on.split` was a traceback (AttributeError, ValueError or
    TypeError) from `calibrate` and `bench` on the training file."""
    data, artifact = trained
    edited = tmp_path / "edited"
    shutil.copytree(artifact, edited)
    meta = json.loads((edited / "router.json").read_text())
    meta["trained_on"]["split"] = recipe
    (edited / "router.json").write_text(json.dumps(meta))
    capsys.readouterr()
    for command in (["calibrate", "--strong-share", "0.3"], ["bench"]):
        assert run([*command, "--router", str(edited), "--data", str(data)]) == 2
        err = capsys.readouterr().err
        assert f"{edited / 'router.json'}: corrupt router artifact: trained_on.split" in err
        assert "Traceback" not in err


@pytest.mark.parametrize("spec", ["openai:text-embedding-3-small", "builtin:nosuch", "builtin", 5])
def test_a_bad_encoder_spec_is_said_as_the_artifacts_fault(
    trained: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spec: object,
) -> None:
    """An edited `trained_on.encoder_spec` was reported as "--encoder must be
    builtin:NAME", an option neither command has."""
    data, artifact = trained
    edited = tmp_path / "edited"
    shutil.copytree(artifact, edited)
    meta = json.loads((edited / "router.json").read_text())
    meta["trained_on"]["encoder_spec"] = spec
    (edited / "router.json").write_text(json.dumps(meta))
    capsys.readouterr()
    for command in (["calibrate", "--strong-share", "0.3"], ["bench"]):
        assert run([*command, "--router", str(edited), "--data", str(data)]) == 2
        err = capsys.readouterr().err
        assert f"{edited / 'router.json'}: corrupt router artifact: trained_on.encoder_spec" in err
        assert "--encoder" not in err


def test_an_encoder_spec_train_took_is_taken_by_calibrate_and_bench(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train difficulty --encoder builtin:builtin:static` trains (`load_builtin` takes a
    "builtin:" prefix on the name) and writes that spec: calibrate and bench refused
    the artifact they were given as corrupt."""
    data, _ = trained
    out = tmp_path / "router"
    train = ["train", "difficulty", "--data", str(data), "--router", "linear", "--folds", "1"]
    assert run([*train, "--encoder", "builtin:builtin:static", "-o", str(out)]) == 0
    meta = json.loads((out / "router.json").read_text())
    assert meta["trained_on"]["encoder_spec"] == "builtin:builtin:static"
    capsys.readouterr()
    for command in (["calibrate", "--strong-share", "0.3"], ["bench"]):
        assert run([*command, "--router", str(out), "--data", str(data)]) == 0, capsys.readouterr()
        assert "corrupt" not in capsys.readouterr().err


def test_quantiles_out_of_order_are_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, artifact = trained
    edited = tmp_path / "edited"
    shutil.copytree(artifact, edited)
    meta = json.loads((edited / "router.json").read_text())
    meta["trained_on"]["val_score_quantiles"].reverse()
    (edited / "router.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="not in increasing order"):
        _router(tmp_path, edited, "strong_share: 0.5")


def test_all_rows_fits_on_every_row_and_then_has_no_held_out_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, other = tmp_path / "labels.jsonl", tmp_path / "other.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(300, 4)))
    other.write_text("".join(json.dumps(r) + "\n" for r in _rows(200, 5)))
    out = tmp_path / "router"
    argv = ["train", "difficulty", "--data", str(data), "--router", "linear", "-o", str(out)]
    assert run([*argv, "--all-rows", "--folds", "1"]) == 2
    capsys.readouterr()
    assert run([*argv, "--all-rows"]) == 0
    assert "on 300 rows (every row)" in capsys.readouterr().out
    assert json.loads((out / "router.json").read_text())["trained_on"]["fitted_on"] == "all"

    assert run(["bench", "--router", str(out), "--data", str(data)]) == 2
    assert "fitted on every row of labels.jsonl" in capsys.readouterr().err
    assert run(["bench", "--router", str(out), "--data", str(other), "--json"]) == 0
    assert loads_strict(capsys.readouterr().out)["n"] == 200
    assert run(["bench", "--router", str(out), "--data", str(data), "--split", "all"]) == 0


def _passages(n: int = 400) -> list[dict[str, object]]:
    """Four passages of `n` / 4 questions each: a passage's questions stay on one side, so
    the split has train and validation rows and no test rows."""
    rng = random.Random(3)
    topics = ["number theory", "a seaside trip", "chemical equilibrium", "the year 1815"]
    rows = []
    for i in range(n):
        hard = i % 4 < 2
        passage = f"Read this passage about {topics[i % 4]} and answer below. " * 5
        weak = (rng.random() < 0.15) if hard else (rng.random() < 0.9)
        strong = (rng.random() < 0.85) if hard else (rng.random() < 0.92)
        prompt = f"{passage}\nquestion {i}: what is {rng.randint(1, 999)}?"
        rows.append({"prompt": prompt, "weak_correct": weak, "strong_correct": strong})
    return rows


def test_one_test_row_and_one_prompt_are_said_in_the_singular(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "1 test rows left out", "of 1 prompts": the counts agree with their nouns."""
    lone = {"prompt": "a lone question 1", "weak_correct": False, "strong_correct": True}
    data = tmp_path / "passages.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [*_passages(), lone]))
    argv = ["train", "difficulty", "--data", str(data), "--router", "linear"]
    capsys.readouterr()
    assert run([*argv, "-o", str(tmp_path / "router")]) == 0
    assert "; 1 test row left out; " in capsys.readouterr().out
    _, router = trained
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text(json.dumps({"prompt": "what is 2 + 2?"}) + "\n")
    argv = ["calibrate", "--router", str(router), "--data", str(traffic)]
    assert run([*argv, "--strong-share", "0.5"]) == 0
    assert "% of 1 prompt (" in capsys.readouterr().err


def test_a_training_file_with_no_test_rows_suggests_split_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four passages of 100 questions each: a passage's questions stay on one side, so
    the split has train and validation rows and no test rows. `bench` (the test split)
    and `calibrate` (the test split of a cross-validated router) on that file were a
    traceback (``ValueError: ... must be a non-empty 1-D array``); they now say so in
    a line and suggest ``--split all``, which works."""
    data = tmp_path / "passages.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _passages()))
    out = tmp_path / "router"
    argv = ["train", "difficulty", "--data", str(data), "--router", "linear", "-o", str(out)]
    assert run(argv) == 0
    assert "; 0 test rows left out" in capsys.readouterr().out
    bench = ["bench", "--router", str(out), "--data", str(data)]
    calibrate = ["calibrate", "--router", str(out), "--data", str(data), "--strong-share", "0.3"]
    for command in (bench, calibrate):
        assert run(command) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert err == (
            "error: the test split of passages.jsonl has no rows (the router's training "
            "left none there): give --split all to use every row, those it was trained on "
            "included, or other data"
        ), command
        assert run([*command, "--split", "all"]) == 0, command
        capsys.readouterr()


def test_the_defaults_chain_follows_the_model_the_difficulty_router_picked(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """The picked model (strong or weak) first, then `default.policy.fallback` without
    it: a weak pick may fail over to the strong model, a strong pick to a spare."""
    _, artifact = trained
    path = tmp_path / "registry.yaml"
    text = REGISTRY % {"router": artifact, "dial": "threshold: 0.0"}
    text = text.replace(
        "  large: {provider: local, model: l}\n",
        "  large: {provider: local, model: l}\n  spare: {provider: local, model: x}\n",
    )
    path.write_text(text + "  policy: {fallback: [large, spare]}\n")
    router = Router.from_yaml(path)
    body = {"messages": [{"role": "user", "content": "what is 12 plus 30?"}]}
    strong = plan_request(router, {**body, "model": "router-linear--1000"}, {})
    weak = plan_request(router, {**body, "model": "router-linear-1000"}, {})
    assert (strong.decision.model, strong.chain) == ("large", ("large", "spare"))
    assert (weak.decision.model, weak.chain) == ("small", ("small", "large", "spare"))
    assert strong.policy is weak.policy is router.loaded.registry.default.policy
    routed = plan_request(router, {**body, "model": "auto"}, {})
    assert routed.decision.layer == "difficulty" and routed.chain[0] == routed.decision.model
    assert routed.chain[1:] == tuple(m for m in ("large", "spare") if m != routed.decision.model)
