"""`llmroute eval` and `llmroute registry from-examples`, run as a user runs them.

Registries use `builtin:static` (ships with the package, microseconds per text), so these
subprocess tests need no MiniLM weights.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from strict_json import loads_strict

LLMROUTE = Path(sys.executable).parent / "llmroute"
COMMAND = (
    [str(LLMROUTE)]
    if LLMROUTE.exists()
    else [sys.executable, "-c", "from llmroute.cli import main; main()"]
)
TOPICS = {
    "weather": ["weather", "rain", "forecast", "sunny", "temperature", "snow"],
    "music": ["song", "playlist", "album", "music", "guitar", "concert"],
    "banking": ["balance", "account", "transfer", "bank", "deposit", "savings"],
    "travel": ["flight", "hotel", "booking", "airport", "luggage", "passport"],
}
OFF_TOPIC = ["philosophy", "volcano", "poetry", "chess", "dinosaur", "galaxy", "origami"]


def llmroute(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


def labelled(path: Path, seed: int, per_topic: int = 15, n_oos: int = 15) -> Path:
    rng = random.Random(seed)
    lines = []
    for topic, words in TOPICS.items():
        for _ in range(per_topic):
            text = "what about " + " ".join(rng.sample(words, 3))
            lines.append(json.dumps({"text": text, "intent": topic}))
    for _ in range(n_oos):
        lines.append(json.dumps({"text": " ".join(rng.sample(OFF_TOPIC, 3)), "intent": "oos"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry built from one labelled file, and a second file to evaluate it on."""
    root = tmp_path_factory.mktemp("eval")
    labelled(root / "train.jsonl", seed=1)
    labelled(root / "test.jsonl", seed=2, per_topic=8, n_oos=8)
    done = llmroute(
        "registry", "from-examples", root / "train.jsonl", "-o", root / "good.yaml",
        "--oos-label", "oos", "--encoder", "builtin:static", "--oos-recall", "0.8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "threshold" in done.stdout and "wrote" in done.stdout
    # A worse registry: two routes' examples swapped, so their traffic goes to each other.
    document = yaml.safe_load((root / "good.yaml").read_text())
    routes = {r["name"]: r for r in document["routes"]}
    routes["weather"]["examples"], routes["music"]["examples"] = (
        routes["music"]["examples"],
        routes["weather"]["examples"],
    )
    (root / "worse.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return root


def test_from_examples_output_passes_registry_check(workdir: Path) -> None:
    done = llmroute("registry", "check", workdir / "good.yaml")
    assert done.returncode == 0, done.stderr


def test_from_examples_warns_about_a_text_labelled_twice(tmp_path: Path) -> None:
    data = labelled(tmp_path / "noisy.jsonl", seed=3)
    first = json.loads(data.read_text().splitlines()[0])
    other = next(t for t in TOPICS if t != first["intent"])
    with data.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"text": first["text"].upper() + "?", "intent": other}) + "\n")
    done = llmroute(
        "registry", "from-examples", data, "-o", tmp_path / "noisy.yaml",
        "--oos-label", "oos", "--encoder", "builtin:static", "--oos-recall", "0.8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning: " in done.stderr and f"is also an example of route {first['intent']!r}" in (
        done.stderr
    )
    # at the written file's line, as `registry check` says it (it named the field alone)
    checked = llmroute("registry", "check", tmp_path / "noisy.yaml")
    said = [line for line in checked.stderr.splitlines() if "is also an example" in line]
    assert said and said[0] in done.stderr.splitlines(), (said, done.stderr)
    assert said[0].startswith(f"warning: {tmp_path / 'noisy.yaml'}:"), said


def test_eval_json_has_the_headline_keys(workdir: Path) -> None:
    done = llmroute(
        "eval", "--registry", workdir / "good.yaml", "--data", workdir / "test.jsonl",
        "--json", "--oos-label", "oos",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = loads_strict(done.stdout)
    for key in ("accuracy", "in_scope_accuracy", "oos_recall", "oos_precision"):
        assert 0.0 <= payload[key] <= 1.0
    assert payload["n"] == 4 * 8 + 8
    assert payload["accuracy"] > 0.8
    assert set(payload["per_route"]) == set(TOPICS)
    assert payload["unknown_labels"] == []
    assert sum(sum(row.values()) for row in payload["confusion"].values()) == payload["n"]
    assert "compare" not in payload


def test_eval_table_and_plot(workdir: Path) -> None:
    png = workdir / "confusion.png"
    done = llmroute(
        "eval", "-r", workdir / "good.yaml", "-d", workdir / "test.jsonl", "--plot", png
    )
    assert done.returncode == 0, done.stderr
    for text in ("accuracy", "oos recall", "precision", "gold \\ routed", "weather"):
        assert text in done.stdout
    # Without --oos-label, the oos rows' label is reported as having no route.
    assert "note: labels with no route" in done.stdout and "oos" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_gate(workdir: Path) -> None:
    args = ("eval", "-d", workdir / "test.jsonl", "--json")
    worse = llmroute(*args, "-r", workdir / "worse.yaml", "--compare", workdir / "good.yaml")
    assert worse.returncode == 1, worse.stderr
    gate = loads_strict(worse.stdout)["compare"]
    assert gate["passed"] is False
    assert gate["delta_points"] < -0.5
    assert gate["baseline_accuracy"] > loads_strict(worse.stdout)["accuracy"]
    assert gate["per_route"]["weather"]["delta_f1"] < 0

    same = llmroute(*args, "-r", workdir / "good.yaml", "--compare", workdir / "good.yaml")
    assert same.returncode == 0, same.stderr
    gate = loads_strict(same.stdout)["compare"]
    assert (gate["passed"], gate["delta_points"]) == (True, 0.0)

    better = llmroute("eval", "-d", workdir / "test.jsonl", "-r", workdir / "good.yaml",
                      "--compare", workdir / "worse.yaml")  # fmt: skip
    assert better.returncode == 0, better.stderr
    assert "passed" in better.stdout and "per-route change" in better.stdout


def test_a_candidate_that_drops_routes_is_not_excused_their_rows(
    workdir: Path, tmp_path: Path
) -> None:
    """Rows labelled with a route the candidate no longer has counted as out of scope to
    it: a registry cut to one route lost a few points and passed the gate."""
    document = yaml.safe_load((workdir / "good.yaml").read_text())
    document["routes"] = document["routes"][:1]
    cut = tmp_path / "cut.yaml"
    cut.write_text(yaml.safe_dump(document, sort_keys=False))
    args = ("eval", "-d", workdir / "test.jsonl", "--json", "--max-drop", "5")
    done = llmroute(*args, "-r", cut, "--compare", workdir / "good.yaml")
    assert done.returncode == 1, done.stdout
    gate = loads_strict(done.stdout)["compare"]
    assert gate["passed"] is False and gate["delta_points"] < -20
    dropped = [r["name"] for r in yaml.safe_load((workdir / "good.yaml").read_text())["routes"]]
    for name in dropped[1:]:  # routed to no more: F1 0, its fall a change (was n/a, none)
        diff = gate["per_route"][name]
        assert diff["f1"] == 0.0 and diff["delta_f1"] == -diff["baseline_f1"] < 0, name


@pytest.mark.parametrize("compare", [False, True])
def test_an_oos_label_that_names_a_route_is_refused(workdir: Path, compare: bool) -> None:
    """`--oos-label weather` scored the weather rows as the weather route's and none as
    out of scope, silently: the metrics of another question than the one asked. With
    --compare, a route of either registry counts."""
    args = ["eval", "-d", workdir / "test.jsonl", "--oos-label", "weather", "--json"]
    if compare:
        document = yaml.safe_load((workdir / "good.yaml").read_text())
        document["routes"] = [r for r in document["routes"] if r["name"] != "weather"]
        without = workdir / "without-weather.yaml"
        without.write_text(yaml.safe_dump(document, sort_keys=False))
        args += ["-r", without, "--compare", workdir / "good.yaml"]
    else:
        args += ["-r", workdir / "good.yaml"]
    done = llmroute(*args)
    assert done.returncode == 2 and not done.stdout
    said = " ".join(done.stderr.split())
    assert f"error: --oos-label 'weather' names a route of {workdir / 'good.yaml'}: " in said
    assert "none would be out of scope" in said


def test_bad_data_line_exits_2_naming_file_and_line(workdir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "rain tomorrow", "intent": "weather"}\n{"text": 5}\n')
    done = llmroute("eval", "-r", workdir / "good.yaml", "-d", bad)
    assert done.returncode == 2
    assert f"error: {bad}:2: " in done.stderr.replace("\n", "")
    assert "Traceback" not in done.stderr
    built = llmroute("registry", "from-examples", bad, "-o", tmp_path / "r.yaml")
    assert built.returncode == 2 and f"{bad}:2" in built.stderr.replace("\n", "")


def test_an_oos_label_no_row_has_is_warned_of(workdir: Path) -> None:
    """`from-examples` warned of it; `eval` scored every row in scope, silently (a
    mistyped `OOS` for `oos`, or a file labelled otherwise)."""
    args = ("eval", "-d", workdir / "test.jsonl", "-r", workdir / "good.yaml")
    done = llmroute(*args, "--oos-label", "nothing-labelled-so", "--json")
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert "warning: --oos-label 'nothing-labelled-so': no row of" in said
    assert "has that label, so none is out of scope" in said
    loads_strict(done.stdout)  # the report is still printed, as JSON
    piped = subprocess.run(
        [*COMMAND, "eval", "-d", "-", "-r", str(workdir / "good.yaml"), "--oos-label", "nope"],
        input=(workdir / "test.jsonl").read_text(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "no row of <stdin> has that label" in " ".join(piped.stderr.split())
