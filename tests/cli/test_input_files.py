"""The files and folders the commands are given, when they are not what the command
reads: one line naming the path and what is wrong, exit status 2, the same words
whichever command it is (never click's usage box, a traceback or the error of a later
step). Each fails before any encoder or training is loaded."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest
from gateway_proc import serve_refused

from llmroute.cli._app import run

REGISTRY = """
encoder: builtin:static
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  small: {provider: local, model: s}
routes:
  - {name: chat, target: small, examples: [hello there]}
default: {target: small}
"""


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# The --data files: until these commands read them, a missing one was click's usage box
# ("Usage: ... Try 'llmroute train gate --help' ... Error: Invalid value for '--data'
# / '-d': path '...' does not exist.") where the other commands say one line.
DATA_COMMANDS = {
    "train difficulty": (["train", "difficulty", "-o", "{out}"], "labelled data"),
    "train gate": (["train", "gate", "-o", "{out}"], "gate data"),
    "train safety": (["train", "safety", "-o", "{out}"], "safety data"),
    "train reasoning": (["train", "reasoning", "-o", "{out}"], "labelled data"),
    "calibrate": (["calibrate", "--router", "{out}", "--strong-share", "0.5"], "labelled data"),
    "bench": (["bench", "--router", "{out}"], "labelled data"),
    "bench-cascade": (["bench-cascade", "--router", "none"], "gate data"),
    "eval-safety": (["eval-safety"], "safety data"),
}


@pytest.mark.parametrize("command", sorted(DATA_COMMANDS))
def test_a_missing_data_file_is_one_line_naming_it(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, what = DATA_COMMANDS[command]
    missing = tmp_path / "nope.jsonl"
    out = str(tmp_path / "out")
    assert run([a.replace("{out}", out) for a in argv] + ["--data", str(missing)]) == 2
    said = _one_line(capsys)
    assert said == f"error: {missing}: cannot read {what}: No such file or directory"
    assert not (tmp_path / "out").exists()  # nothing trained or written


@pytest.mark.parametrize(
    ("make", "reason"),
    [(lambda p: None, "No such file or directory"), (Path.mkdir, "Is a directory")],
    ids=["missing", "directory"],
)
def test_serve_names_a_cases_file_it_cannot_read_in_one_line(
    make: object, reason: str, tmp_path: Path
) -> None:
    cases = tmp_path / "cases.yaml"
    make(cases)  # type: ignore[operator]
    done = serve_refused(REGISTRY, tmp_path, ["--cases", str(cases)])
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {cases}: cannot read the cases file: {reason}"


# Windows tools (Windows PowerShell's `>`, Notepad's "Unicode") write UTF-16 with a
# byte-order mark; split into lines, such a JSONL file was read as UTF-16 on line 1 and
# failed on a stray NUL byte at line 2 ("invalid JSON: Expecting value"), or on a
# missing field.
MARKS = {
    "UTF-16": ("utf-16-le", codecs.BOM_UTF16_LE),
    "UTF-16 BE": ("utf-16-be", codecs.BOM_UTF16_BE),
    "UTF-32": ("utf-32-le", codecs.BOM_UTF32_LE),
}


def _marked(path: Path, text: str, mark: str) -> Path:
    encoding, bom = MARKS[mark]
    path.write_bytes(bom + text.encode(encoding))
    return path


@pytest.mark.parametrize("mark", sorted(MARKS))
@pytest.mark.parametrize(
    ("name", "text", "argv"),
    [
        (
            "labels.jsonl",
            '{"text": "why", "label": "direct"}\n',
            ["train", "reasoning", "-o", "{out}", "-d"],
        ),
        ("traffic.jsonl", '{"prompt": "hello"}\n', ["eval", "-r", "{registry}", "-d"]),
        ("prompts.txt", "hello\nhow are you\n", ["registry", "record", "-o", "{out}"]),
        ("registry.yaml", REGISTRY, ["registry", "check"]),
        ("registry.yaml", REGISTRY, ["route", "hello", "-r"]),
    ],
    ids=["jsonl", "eval-data", "lines", "registry", "route"],
)
def test_a_utf16_or_utf32_file_is_said_to_be_one(
    name: str,
    text: str,
    argv: list[str],
    mark: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = tmp_path / "good.yaml"
    registry.write_text(REGISTRY, encoding="utf-8")
    path = _marked(tmp_path / name, text, mark)
    out = tmp_path / "out"
    given = [a.replace("{registry}", str(registry)).replace("{out}", str(out)) for a in argv]
    if argv[:2] == ["registry", "record"]:
        given += ["-r", str(registry)]
    assert run([*given, str(path)]) == 2
    said = _one_line(capsys)
    encoding = mark.split()[0]
    # a registry's errors name a line (file:line: field: ...), its byte-order mark's
    where = f"{path}:1" if name.endswith(".yaml") else str(path)
    assert said == (
        f"error: {where}: the file is {encoding} (it starts with a {encoding} byte-order "
        "mark); save it as UTF-8"
    )


def _gate_rows(path: Path) -> Path:
    rows = [
        {
            "prompt": f"question {i}",
            "weak_response": "an answer",
            "weak_correct": i % 3 == 0,
            "strong_correct": i % 2 == 0,
        }
        for i in range(100)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# A file given where a trained artifact's folder goes was "corrupt router artifact:
# [Errno 20] Not a directory: 'FILE/router.json'"; a folder that is not there, for the
# safety detector and the learned gate, "FOLDER/detector.json: no safety detector here
# (detector.json is missing)".
ARTIFACTS = {
    "calibrate --router": (
        ["calibrate", "--strong-share", "0.5", "-d", "{prompts}", "--router"],
        "router artifact",
        "llmroute train difficulty",
    ),
    "bench-cascade --artifact": (
        ["bench-cascade", "--router", "none", "-d", "{gates}", "--artifact"],
        "learned gate",
        "llmroute train gate",
    ),
    "eval-safety --artifact": (
        ["eval-safety", "-d", "{safety}", "--artifact"],
        "safety detector",
        "llmroute train safety",
    ),
}


# (a router artifact that is not there was said so already: tests/difficulty/test_artifact.py)
@pytest.mark.parametrize(
    ("command", "given"),
    [(command, "a file") for command in sorted(ARTIFACTS)]
    + [(command, "nothing") for command in sorted(ARTIFACTS) if "--router" not in command],
)
def test_an_artifact_folder_that_is_a_file_or_not_there_is_said_as_such(
    command: str, given: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, what, trainer = ARTIFACTS[command]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "q {i}"}}\n' for i in range(20)), encoding="utf-8")
    safety = tmp_path / "safety.jsonl"
    safety.write_text('{"text": "hello", "label": "benign"}\n', encoding="utf-8")
    files = {"{prompts}": prompts, "{gates}": _gate_rows(tmp_path / "g.jsonl"), "{safety}": safety}
    artifact = tmp_path / "artifact"
    if given == "a file":
        artifact.write_text("{}", encoding="utf-8")
    assert run([str(files.get(a, a)) for a in argv] + [str(artifact)]) == 2
    said = _one_line(capsys)
    start = f"a file, not a {what}" if given == "a file" else f"no such {what}"
    assert said == f"error: {artifact}: {start} (a folder written by `{trainer}`)"


@pytest.mark.parametrize(
    "argv",
    [["registry", "from-examples", "data.jsonl"], ["refresh", "--url", "sqlite:///log.db"]],
)
def test_a_registry_is_not_written_to_a_file_named_dash(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`-o -` wrote a registry into a file named "-" (from-examples once every example
    was encoded): a registry's paths are relative to its file, so it is refused at once."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    assert run([*argv, "-o", "-"]) == 2
    said = _one_line(capsys)
    assert said.startswith("error: -o -: the ") and said.endswith("name one")
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("trainer", ["difficulty", "gate", "safety", "reasoning"])
def test_an_artifact_is_not_written_to_a_folder_named_dash(
    trainer: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`train ... -o -` trained, then wrote the artifact into a folder named "-" (and
    said "written to -"), as if "-" were standard output."""
    monkeypatch.chdir(tmp_path)
    assert run(["train", trainer, "--data", "data.jsonl", "-o", "-"]) == 2
    said = _one_line(capsys)
    assert said == "error: -o -: the artifact is a directory of files; name the directory to write"
    assert not (tmp_path / "-").exists()
