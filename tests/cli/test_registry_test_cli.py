"""`llmroute registry test`, run as a user runs it: the example cases pass against the
example registry, a failing case exits 1 saying what was decided, a bad file exits 2 with
one line per problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmroute.cli._app import run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "registry.yaml"
CASES = ROOT / "examples" / "cases.yaml"
LLMROUTE = str(Path(sys.executable).parent / "llmroute")


def llmroute(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLMROUTE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_the_example_cases_pass() -> None:
    result = llmroute("registry", "test", CASES, "-r", EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "13 of 13 cases passed"
    assert all(line.startswith("PASS  ") for line in lines[:-1])


def test_one_case_is_counted_in_the_singular(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n  - prompt: hi! how are you doing today?\n    expect: {route: chitchat}\n"
    )
    result = llmroute("registry", "test", cases, "-r", EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("\n1 of 1 case passed"), result.stdout


def test_a_failing_case_exits_1_and_says_what_was_decided(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n"
        "  - name: code must go to the small model\n"
        "    prompt: write a Python function that merges two sorted lists\n"
        "    expect: {model: small, chain: [small]}\n"
        "  - prompt: hi! how are you doing today?\n"
        "    expect: {route: chitchat}\n"
    )
    result = llmroute("registry", "test", cases, "-r", EXAMPLE)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "FAIL  code must go to the small model (" in out
    assert "model small expected, got medium" in out
    assert "chain small expected, got medium -> large" in out
    assert "decided: code -> medium by intent" in out
    assert f"PASS  {cases}:5" in out and out.rstrip().endswith("1 of 2 cases passed")
    as_json = llmroute("registry", "test", cases, "-r", EXAMPLE, "--json")
    assert as_json.returncode == 1
    payload = json.loads(as_json.stdout)
    assert (payload["passed"], payload["failed"]) == (1, 1)
    assert payload["cases"][0]["decision"]["model"] == "medium"


def test_record_then_test_works_when_a_rule_picks_the_model(tmp_path: Path) -> None:
    """A rule with a `target` decides route `rule:NAME`; `record` wrote that and `test`
    then refused the file as naming an unknown route."""
    registry = tmp_path / "registry.yaml"
    text = EXAMPLE.read_text()
    rule = "  - name: vip\n    when: {keywords: [vip-support]}\n    target: large\n"
    registry.write_text(text.replace("rules:\n", "rules:\n" + rule, 1))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("vip-support: my invoice is wrong\n")
    cases = tmp_path / "cases.yaml"
    done = llmroute("registry", "record", prompts, "-o", cases, "-r", registry)
    assert done.returncode == 0, done.stderr
    assert "rule:vip" in cases.read_text()
    checked = llmroute("registry", "test", cases, "-r", registry)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_case_writes_a_header_as_the_rule_does(tmp_path: Path) -> None:
    """Both sides keep an unquoted 0123 as written (the rule did, the case read 83)."""
    registry = tmp_path / "registry.yaml"
    text = EXAMPLE.read_text().replace(
        "when: {header: {x-tenant: acme}}", "when: {header: {x-tenant: 0123}}"
    )
    registry.write_text(text)
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n  - {prompt: hi there, headers: {x-tenant: 0123}, expect: {rule: pinned-tenant}}\n"
    )
    checked = llmroute("registry", "test", cases, "-r", registry)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_error_on_line_100_says_100_not_an_emoji(tmp_path: Path) -> None:
    """rich read ":100:" in "registry.yaml:100: ..." as an emoji code."""
    registry = tmp_path / "registry.yaml"
    registry.write_text("#\n" * 98 + "routes: [a\n")  # the error is at the end: 100
    result = llmroute("registry", "check", registry)
    assert result.returncode == 2
    assert f"{registry}:100: invalid YAML" in result.stderr


def test_a_bad_cases_file_exits_2_naming_each_problem(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n"
        "  - {prompt: hi, expect: {route: chitchatt}}\n"
        "  - {prompt: hi, expect: {model: gigantic}}\n"
    )
    result = llmroute("registry", "test", cases, "-r", EXAMPLE)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{cases}:2: cases[0].expect.route: unknown route 'chitchatt'" in result.stderr
    assert f"{cases}:3: cases[1].expect.model: unknown model 'gigantic'" in result.stderr


def test_record_pins_todays_decisions_and_they_pass(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "write a python function to sort a list\n\nhi!\n"
        'charge my card 4111 1111 1111 1111\nwhat "quotes" and \\backslashes\\ do\n'
    )
    cases = tmp_path / "cases.yaml"
    done = llmroute("registry", "record", prompts, "-o", cases, "-r", EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("recorded 4 cases in")
    text = cases.read_text()
    assert '{route: "code", model: "medium"}' in text
    assert 'safety: "redact"' in text and '\\"quotes\\"' in text
    checked = llmroute("registry", "test", cases, "-r", EXAMPLE)
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.rstrip().endswith("4 of 4 cases passed")
    again = llmroute("registry", "record", prompts, "-o", cases, "-r", EXAMPLE)
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "hi!"}\n{"text": "translate hello into French"}\n{"x": 1}\n')
    bad = llmroute("registry", "record", jsonl, "-o", tmp_path / "c2.yaml", "-r", EXAMPLE)
    assert bad.returncode == 2 and "prompts.jsonl:3: needs a non-empty 'prompt'" in bad.stderr


@pytest.mark.parametrize("command", ["record", "diff"])
def test_an_unreadable_prompt_file_is_said_as_the_jsonl_readers_say_it(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain-text prompts file (record) or requests file (diff) that is missing or not
    UTF-8: the reason once and the line (it was Python's '[Errno 2] No such file or
    directory: ...' after the path, and the codec's byte position)."""
    what = {"record": "prompts", "diff": "the requests"}[command]
    argv = {
        "record": ["registry", "record", "{}", "-o", str(tmp_path / "c.yaml"), "-r", str(EXAMPLE)],
        "diff": ["registry", "diff", str(EXAMPLE), str(EXAMPLE), "-d", "{}"],
    }[command]
    broken = tmp_path / "prompts.txt"
    broken.write_bytes(b"hello\n\xff\xfe not utf-8\n")
    missing = tmp_path / "missing.txt"
    for path, said in (
        (missing, f"error: {missing}: cannot read {what}: No such file or directory"),
        (broken, f"error: {broken}:2: not valid UTF-8"),
    ):
        assert run([a.replace("{}", str(path)) for a in argv]) == 2
        assert " ".join(capsys.readouterr().err.split()) == said


def test_record_to_dash_writes_the_cases_to_stdout(tmp_path: Path) -> None:
    """`-o -` wrote a file named "-" in the working directory (and told the user to run
    `registry test -`); as `export -o -`, it is standard output: the YAML alone there."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("write a python function to sort a list\nhi!\n")
    done = subprocess.run(
        [LLMROUTE, "registry", "record", str(prompts), "-o", "-", "-r", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "-").exists()
    assert done.stderr.strip() == "recorded 2 cases"
    cases = tmp_path / "cases.yaml"
    cases.write_text(done.stdout)
    checked = llmroute("registry", "test", cases, "-r", EXAMPLE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.rstrip().endswith("2 of 2 cases passed")


def test_record_reads_an_ndjson_export_as_jsonl(tmp_path: Path) -> None:
    """A `.ndjson` (or `.json`) prompts file was read as plain text: each case's prompt was
    the export's whole JSON line."""
    prompts = tmp_path / "traffic.ndjson"
    prompts.write_text('{"prompt": "hi!", "route": "chitchat"}\n')
    cases = tmp_path / "cases.yaml"
    done = llmroute("registry", "record", prompts, "-o", cases, "-r", EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert 'prompt: "hi!"' in cases.read_text()


def test_record_pins_a_repeated_prompt_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real traffic repeats itself (`llmroute export --with-text | ... record -`): a
    prompt seen twice was two identical cases, so an export of a busy day pinned each
    popular request dozens of times over."""
    prompts = tmp_path / "traffic.jsonl"
    prompts.write_text('{"prompt": "hi!"}\n{"prompt": "solve x^2 = 9"}\n{"prompt": "hi!"}\n')
    cases = tmp_path / "cases.yaml"
    assert run(["registry", "record", str(prompts), "-o", str(cases), "-r", str(EXAMPLE)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(f"recorded 2 cases in {cases} (1 repeated prompt left out);"), out
    assert cases.read_text().count('prompt: "hi!"') == 1
