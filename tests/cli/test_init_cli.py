"""`llmroute init`: the example registry, its cases and labelled prompts written where a
user starts (from a wheel, which has no examples/ folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmroute.cli._app import run
from llmroute.registry import load_registry
from llmroute.registry.cases import load_cases

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ("registry.yaml", "cases.yaml", "eval.jsonl")


def test_init_writes_the_examples_naming_where_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["init"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert f"wrote {name}" in out
    assert "llmroute registry test cases.yaml -r registry.yaml" in out
    # the repository's examples, but for the paths their comments show
    for name in NAMES:
        written = (tmp_path / name).read_text(encoding="utf-8")
        assert "examples/" not in written
        expected = (EXAMPLES / name).read_text(encoding="utf-8")
        for other in NAMES:
            expected = expected.replace(f"examples/{other}", other)
        assert written == expected
    assert "`llmroute registry test cases.yaml -r registry.yaml`" in (
        tmp_path / "cases.yaml"
    ).read_text(encoding="utf-8")
    loaded = load_registry(tmp_path / "registry.yaml")
    assert load_cases(tmp_path / "cases.yaml", loaded.registry).cases
    lines = (tmp_path / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines and all({"text", "intent"} <= json.loads(line).keys() for line in lines)


def test_init_into_a_new_folder_and_over_existing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "team" / "router"
    assert run(["init", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"llmroute registry check {target / 'registry.yaml'}" in out
    assert f"# Validate it with `llmroute registry check {target}/registry.yaml`" in (
        target / "registry.yaml"
    ).read_text(encoding="utf-8")

    # an edited registry is not replaced unasked, and nothing is written
    (target / "registry.yaml").write_text("# mine\n", encoding="utf-8")
    (target / "eval.jsonl").unlink()
    assert run(["init", str(target)]) == 2
    err = capsys.readouterr().err
    assert "registry.yaml" in err and "cases.yaml" in err and "--force" in err
    assert (target / "registry.yaml").read_text(encoding="utf-8") == "# mine\n"
    assert not (target / "eval.jsonl").exists()
    assert run(["init", str(target), "--force"]) == 0
    assert (target / "registry.yaml").read_text(encoding="utf-8") != "# mine\n"
    assert (target / "eval.jsonl").exists()

    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    assert run(["init", str(a_file)]) == 2
    assert "is not a folder" in capsys.readouterr().err
