"""A data file named ``-`` is standard input, read as JSONL, so that ``llmroute export |
llmroute registry record - -o cases.yaml`` works: as real processes joined by a real
pipe. The commands whose artifacts record the data file's digest refuse ``-`` at once."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from telemetry_records import build_record

from llmroute.telemetry.store import open_store

BIN = Path(sys.executable).parent
LLMROUTE = str(BIN / "llmroute")
REGISTRY = """
encoder: builtin:static
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  small: {provider: local, model: s}
  big: {provider: local, model: b}
routes:
  - {name: billing, target: big, examples: [refund my invoice, my bill is wrong]}
  - {name: chat, target: small, examples: [hello there, how are you]}
default: {target: small}
"""


def _llmroute(args: list[str], stdin: bytes | int, cwd: Path) -> subprocess.CompletedProcess[str]:
    given = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin}
    done = subprocess.run(
        [LLMROUTE, *args], capture_output=True, timeout=120, cwd=cwd, check=False, **given
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def test_export_piped_into_registry_record(tmp_path: Path) -> None:
    """`-` was read as a plain-text file named "-": "-: cannot read prompts: No such file
    or directory"."""
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    url = f"sqlite:///{tmp_path / 'log.db'}"
    store = open_store(url)
    try:
        store.migrate()
        now = time.time()
        records = [build_record(i, ts=now - 60 - i, prompt_mode="full") for i in range(3)]
        store.write_decisions(records)
    finally:
        store.close()
    env = {**os.environ, "LLMROUTE_TELEMETRY_URL": url}
    export = subprocess.Popen(
        [LLMROUTE, "export", "--with-text"], stdout=subprocess.PIPE, cwd=tmp_path, env=env
    )
    assert export.stdout is not None
    record = subprocess.run(
        [LLMROUTE, "registry", "record", "-", "-o", "cases.yaml"],
        stdin=export.stdout,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    export.stdout.close()
    assert export.wait(timeout=60) == 0
    assert record.returncode == 0, record.stderr
    cases = yaml.safe_load((tmp_path / "cases.yaml").read_text())
    prompts = sorted(case["prompt"] for case in cases["cases"])
    assert prompts == sorted(r.prompt for r in records)


def test_an_exported_row_without_its_prompt_says_to_export_with_text(tmp_path: Path) -> None:
    """It said "needs a non-empty 'prompt' (or 'text') string", of a row that export wrote
    itself, with no word of why the prompt was null or how to leave such rows out."""
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    row = {"id": "d1", "route": "chat", "prompt_hash": "ab12", "prompt": None}
    done = _llmroute(
        ["registry", "record", "-", "-o", "cases.yaml"], json.dumps(row).encode(), tmp_path
    )
    assert done.returncode == 2
    said = " ".join(done.stderr.split())
    assert said.startswith("error: <stdin>:1: its prompt was not kept by the decision log")
    assert "export with --with-text" in said


def test_eval_reads_labelled_rows_from_stdin(tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    rows = [{"text": "refund my invoice please", "intent": "billing"}]
    rows += [{"text": "hello there friend", "intent": "chat"}]
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    done = _llmroute(["eval", "--data", "-", "--json"], data, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["n"] == 2
    assert report["data"] == "<stdin>"  # it said "-", where the text and errors say <stdin>
    # the report's heading and the plot's title named it "-"
    done = _llmroute(["eval", "--data", "-", "--plot", "confusion.svg"], data, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "registry.yaml on <stdin>", done.stdout
    assert "registry.yaml on &lt;stdin&gt;" in (tmp_path / "confusion.svg").read_text()


def test_registry_diff_names_stdin_and_counts_one_request(tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    argv = ["registry", "diff", "registry.yaml", "registry.yaml", "-d", "-"]
    done = _llmroute(
        argv, b'{"prompt": "hello there", "tokens_in": 5, "tokens_out": 2}\n', tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "\n1 request from <stdin>\n" in done.stdout, done.stdout
    assert "cost of the 1 request with token counts: " in done.stdout, done.stdout


def test_a_bad_line_on_stdin_is_named_as_stdin(tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    data = b'{"text": "hello there", "intent": "chat"}\nnot json\n'
    done = _llmroute(["eval", "-d", "-"], data, tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: <stdin>:2: invalid JSON"), done.stderr


@pytest.mark.parametrize(
    ("argv", "data"),
    [
        (  # a whole-file error: every label has one example
            ["registry", "from-examples", "-", "-o", "built.yaml"],
            b'{"text": "a", "intent": "x"}\n{"text": "b", "intent": "y"}\n',
        ),
        (  # a whole-file error: no row can be replayed
            ["registry", "diff", "registry.yaml", "registry.yaml", "--data", "-"],
            b'{"prompt": "hello", "layer": "pinned"}\n',
        ),
        (  # a whole-file error: no row the detector is measured on
            ["eval-safety", "--data", "-"],
            b'{"text": "hello", "label": "other"}\n',
        ),
    ],
)
def test_a_whole_file_error_on_stdin_names_it_as_stdin(
    argv: list[str], data: bytes, tmp_path: Path
) -> None:
    """They said "error: -: ...", as if of a file named "-"."""
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    done = _llmroute(argv, data, tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: <stdin>"), done.stderr


def test_a_terminal_as_stdin_is_refused_not_waited_on(tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    leader, follower = pty.openpty()
    try:
        done = _llmroute(["registry", "record", "-", "-o", "cases.yaml"], follower, tmp_path)
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode == 2
    assert "'-' reads prompts from standard input, which is a terminal here" in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "difficulty", "-o", "out"],
        ["train", "gate", "-o", "out"],
        ["train", "reasoning", "-o", "out"],
        ["calibrate", "--router", "out", "--strong-share", "0.5"],
        ["bench", "--router", "out"],
    ],
)
def test_commands_that_record_the_data_files_digest_refuse_stdin(
    argv: list[str], tmp_path: Path
) -> None:
    """They read the rows from the pipe, then failed on the file's digest ("-: No such
    file or directory"): after the training, for `train`."""
    done = _llmroute([*argv, "--data", "-"], b'{"prompt": "x"}\n', tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --data -: this command reads its data from a file")
    assert not (tmp_path / "out").exists()


def test_bench_cascade_names_stdin_in_its_plot(tmp_path: Path) -> None:
    """Its curves' title said "cascade (oracle gate) on -"."""
    rows = [
        {"prompt": f"question {i}", "weak_response": "a", "weak_correct": i % 2 == 0,
         "strong_correct": i % 5 != 0}
        for i in range(20)
    ]  # fmt: skip
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    argv = ["bench-cascade", "-d", "-", "--gate", "oracle", "--router", "none", "--split", "all"]
    done = _llmroute([*argv, "--plot", "curves.html"], data, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "cascade (oracle gate) on &lt;stdin&gt;," in (tmp_path / "curves.html").read_text()
