"""`llmroute route` and `llmroute registry check`, run as a user runs them."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from llmroute.cli._app import run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "registry.yaml"
LLMROUTE = str(Path(sys.executable).parent / "llmroute")


def llmroute(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [LLMROUTE, *args],
        input=stdin,
        capture_output=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


@pytest.fixture(scope="module")
def static_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example registry on the static encoder: same routes, microsecond encoding."""
    text = EXAMPLE.read_text().replace("encoder: builtin:minilm-int8", "encoder: builtin:static", 1)
    assert "builtin:static" in text
    path = tmp_path_factory.mktemp("reg") / "registry.yaml"
    path.write_text(text)
    return path


def test_route_json(static_registry: Path) -> None:
    result = llmroute("route", "-r", str(static_registry), "--json", "translate hello to german")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["route"] == "translate"
    assert decision["layer"] == "intent"
    assert {"id", "model", "confidence", "margin", "candidates", "layers"} <= set(decision)


def test_route_explain_shows_layers_top3_and_margin(static_registry: Path) -> None:
    result = llmroute("route", "-r", str(static_registry), "--explain", "solve 3x + 5 = 20")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("math -> ")
    for word in ("rules", "intent", "threshold", "margin", "registry"):
        assert word in out


def test_route_explain_says_the_encoder_does_not_read_the_text(static_registry: Path) -> None:
    """A prompt in Chinese on the built-in (English) encoder is not scored: the default
    serves it, and --explain says why, in the reason and in the intent layer's row."""
    result = llmroute("route", "-r", str(static_registry), "--explain", "下周三的会议改到几点了？")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("default -> ")
    said = "text mostly in a script the encoder does not read (Han 100% of the letters)"
    assert lines[1].startswith(f"reason: default: {said}")
    (row,) = [line for line in lines if line.startswith("intent ")]
    assert "passed" in row and "text mostly in a script the encoder does not read" in row


def test_route_explain_says_the_safety_classifier_did_not_score_unread_text(
    static_registry: Path,
) -> None:
    """Benign Russian prose the static detector scored 0.54 (threshold 0.354) and blocked:
    not scored now, allowed, and --explain says why in the safety layer's row."""
    prose = (
        "Напиши короткое поздравление с днём рождения для моей бабушки. Ей исполняется "
        "восемьдесят лет, она любит сад, книги и долгие прогулки."
    )
    result = llmroute("route", "-r", str(static_registry), "--json", prose)
    assert result.returncode == 0, result.stderr
    safety = json.loads(result.stdout)["safety"]
    assert (safety["action"], safety["fired"]) == ("allow", ["unread_scripts"])
    assert "injection_score" not in safety
    assert safety["windows"] == safety["unread_windows"] == 1  # its one window, not scored
    explained = llmroute("route", "-r", str(static_registry), "--explain", prose)
    (row,) = [line for line in explained.stdout.splitlines() if line.startswith("safety ")]
    assert "allow (unread_scripts): injection not scored: text" in row


def test_stdin_prompts_give_json_lines(static_registry: Path) -> None:
    prompts = "hello there!\nwrite a sql query that joins two tables\n\nsummarise this article\n"
    result = llmroute("route", "-r", str(static_registry), stdin=prompts.encode())
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4
    assert lines[2]["route"] == "default" and "empty prompt" in lines[2]["reason"]


def test_stdin_prompts_are_split_at_newlines_alone(static_registry: Path) -> None:
    """Lines in and out line up as `wc -l` counts them: a prompt holding U+2028, a form
    feed or \\x1c was split by `str.splitlines` into two prompts (two lines out, every
    later one shifted); a CRLF line loses only its \\r."""
    prompts = "hello\u2028there\nwrite code\x0cplease\nsep\x1carated\r\nthird\n"
    result = llmroute("route", "-r", str(static_registry), stdin=prompts.encode())
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 4


def test_prompts_typed_at_a_terminal_are_awaited_with_a_hint(static_registry: Path) -> None:
    """`llmroute route -r FILE` with no prompt, at a terminal, waited for stdin saying
    nothing: a hint on stderr says it reads lines until Ctrl-D; stdout is as before."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [LLMROUTE, "route", "-r", str(static_registry)],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"},
        )
        os.close(terminal)
        os.write(controller, b"hello there!\n\x04")  # a line, then Ctrl-D: end of input
        out, err = proc.communicate(timeout=180)
    finally:
        os.close(controller)
    assert proc.returncode == 0, err
    assert err.decode().splitlines() == [
        "reading prompts from the terminal, one a line; end with Ctrl-D "
        '(or give one prompt: llmroute route "...")'
    ]
    assert [json.loads(line)["route"] for line in out.decode().splitlines()] == ["chitchat"]


def test_output_piped_into_a_reader_that_stops_early_is_not_an_error(
    static_registry: Path,
) -> None:
    """`llmroute ... | head -1`: the reader closes the pipe; the command stops quietly
    with status 0 (click said status 1, past run()'s own handler for it)."""
    lines = "".join(f"prompt number {i}: write a sql query\n" for i in range(2000))
    for argv, stdin in (
        (["route", "-r", str(static_registry)], lines.encode()),
        (["registry", "check", str(static_registry)], None),
    ):
        proc = subprocess.Popen(
            [LLMROUTE, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        proc.stdout.close()  # before it writes a line: it takes a second to start
        _, err = proc.communicate(stdin, timeout=180)
        assert (proc.returncode, err.decode()) == (0, ""), argv


def test_non_utf8_stdin_is_a_clear_error(static_registry: Path) -> None:
    result = llmroute("route", "-r", str(static_registry), stdin=b"hello\n\xff\xfe bad\n")
    assert result.returncode == 2
    # named as files and the other readers of standard input name a line: FILE:N
    assert result.stderr.startswith("error: <stdin>:2: not valid UTF-8 (byte offset 6)")
    assert "Traceback" not in result.stderr


def test_stdin_lines_ended_by_a_lone_carriage_return_are_a_clear_error(
    static_registry: Path,
) -> None:
    """Prompts separated by \r alone (classic Mac OS) were routed as one prompt; files of
    prompts and JSONL already said so."""
    result = llmroute("route", "-r", str(static_registry), stdin=b"hello\nfirst\rsecond\n")
    assert result.returncode == 2 and not result.stdout
    said = " ".join(result.stderr.split())
    assert said.startswith("error: <stdin>:2: holds a carriage return") and "tr '\\r'" in said
    assert "Traceback" not in said and "< stdin" not in said


def test_undecodable_prompt_argument_is_a_clear_error(static_registry: Path) -> None:
    # "\udcff" is how Python holds the argv byte 0xff; subprocess sends the byte back.
    result = llmroute("route", "-r", str(static_registry), "bad \udcff byte")
    assert result.returncode == 2
    assert "the prompt is not valid UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_huge_prompt_is_truncated_not_fatal(static_registry: Path) -> None:
    huge = ("please summarise this long report about quarterly sales. " * 20_000).encode()
    assert len(huge) > 1_000_000
    result = llmroute("route", "-r", str(static_registry), "--json", stdin=huge)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["route"] in {"summarize", "default"}


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  - name: x\n    examples: [a, b\n")
    for command in (["route", "-r", str(bad), "hi"], ["registry", "check", str(bad)]):
        result = llmroute(*command)
        assert result.returncode == 2
        assert f"{bad}:" in result.stderr
        assert "Traceback" not in result.stderr


def test_registry_check_summarises() -> None:
    result = llmroute("registry", "check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "code" in result.stdout and "version" in result.stdout.lower()
    assert result.stdout.strip().endswith("ok")


def test_registry_check_loads_the_artifacts_serve_would(tmp_path: Path) -> None:
    """A registry that parses but points at a router that is not there fails the check
    as it would fail `serve`: a CI check does not pass a registry that cannot deploy."""
    echo = (ROOT / "examples" / "echo.yaml").read_text()
    missing = tmp_path / "no-router"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        echo.replace(
            "default: {target: small}",
            "default: {target: small, difficulty: "
            f"{{router: {missing}, strong: large, weak: small, threshold: 0.5}}}}",
        )
    )
    result = llmroute("registry", "check", str(bad))
    assert result.returncode == 2, result.stdout
    assert "no such router artifact" in result.stderr and "Traceback" not in result.stderr
    line = 1 + next(i for i, t in enumerate(bad.read_text().splitlines()) if "difficulty" in t)
    assert f"{bad}:{line}: default.difficulty.router: " in result.stderr  # where it is named
    for section, field in (
        ("safety:\n  injection: {artifact: no-such-dir}\n", "safety.injection.artifact"),
        ("reasoning: {scorer: no-such-dir}\n", "reasoning.scorer"),
    ):
        bad.write_text(echo + section)
        line = len(echo.splitlines()) + section.count("\n")
        result = llmroute("registry", "check", str(bad))
        assert result.returncode == 2 and f"{bad}:{line}: {field}: " in result.stderr


def test_llmroute_debug_shows_the_traceback_before_the_line(tmp_path: Path) -> None:
    plain = llmroute("registry", "check", str(tmp_path / "nope.yaml"))
    assert "Traceback" not in plain.stderr
    debugging = subprocess.run(
        [LLMROUTE, "registry", "check", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LLMROUTE_DEBUG": "1"},
    )
    assert debugging.returncode == 2
    assert debugging.stderr.startswith("Traceback (most recent call last):")
    assert debugging.stderr.rstrip().splitlines()[-1] == plain.stderr.rstrip().splitlines()[-1]


def test_missing_registry_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [LLMROUTE, "route", "hi"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "LLMROUTE_REGISTRY"},
    )
    assert result.returncode == 2
    assert "no registry given" in result.stderr
    # a wheel holds no examples/ folder: the way to a first registry is `llmroute init`
    assert "`llmroute init` writes one to start from" in result.stderr
    missing = llmroute("registry", "check", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "nope.yaml" in missing.stderr


def test_a_registry_variable_naming_no_file_is_said_as_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`$LLMROUTE_REGISTRY` set to a file that is not there: it was 'nope.yaml: cannot
    read the registry', naming neither the variable nor where the path came from."""
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("LLMROUTE_REGISTRY", str(missing))
    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL", raising=False)
    for argv in (["route", "hi"], ["db", "status"], ["report", "--url", "sqlite:///x.db"]):
        assert run(argv) == 2
        said = " ".join(capsys.readouterr().err.split())
        assert said == f"error: $LLMROUTE_REGISTRY names {missing}, which does not exist"


def test_explain_says_when_safety_overrode_the_reasoning_tier(tmp_path: Path) -> None:
    """Safety rerouted a PII request to a guarded model; explain said "served by" the
    reasoning tier the request never reached."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "encoder: builtin:static\n"
        "providers:\n  p: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
        "models:\n  small: {provider: p, model: s}\n"
        "  thinker: {provider: p, model: t, reasoning: {effort: high}}\n"
        "  guarded: {provider: p, model: g}\n"
        "routes:\n  - name: code\n    examples: [debug this SQL query]\n"
        "    target: small\n    reasoning_target: thinker\n"
        "default: {target: small}\n"
        "reasoning: {scorer: null}\n"
        "safety:\n  injection: {enabled: false}\n"
        "  profiles: {standard: {pii: {route: guarded}}}\n"
    )
    prompt = "debug this SQL query step by step for bob@example.com"
    result = llmroute("route", "-r", str(registry), "--explain", prompt)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("code -> guarded")
    assert "tier thinker overridden by safety" in result.stdout
    assert "served by thinker" not in result.stdout


def test_registry_check_loads_a_cascades_learned_gates_as_serve_does(tmp_path: Path) -> None:
    """The built-in learned gate is trained for minilm-int8 (and static): on minilm,
    check said ok and serve then refused to start."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "encoder: builtin:minilm\n"
        "providers:\n  p: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
        "models:\n  small: {provider: p, model: s}\n  large: {provider: p, model: l}\n"
        "routes:\n  - name: code\n    examples: [debug this SQL query, write a function]\n"
        "    target: small\n"
        "    cascade: {tiers: [small, large], gates: [{kind: learned}]}\n"
        "default: {target: small}\n"
    )
    checked = llmroute("registry", "check", str(registry))
    assert checked.returncode == 2, checked.stdout
    assert "learned gate was trained with encoder" in checked.stderr
    # no summary before the error, which read as a check that had passed
    assert "code ->" not in checked.stdout


def test_explain_says_why_the_llm_router_was_not_asked(tmp_path: Path) -> None:
    """A blocked request (or one safety sent to a guarded model) is never offered to the
    LLM router; explain said 'not asked (margin 0.001 >= 0.99)', a false comparison. An
    empty prompt was 'not asked (no route near its threshold, or out of scope)'."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "encoder: builtin:static\n"
        "providers:\n  p: {kind: echo, reply: code}\n"
        "models:\n  small: {provider: p, model: s}\n  guarded: {provider: p, model: g}\n"
        "routes:\n  - name: code\n    examples: [debug this SQL query]\n    target: small\n"
        "  - name: chat\n    examples: [hi there, how are you]\n    target: small\n"
        "default: {target: small}\n"
        "reasoning: {scorer: null}\n"
        "llm_fallback: {model: small, margin: 1.0}\n"
        "safety:\n  injection: {enabled: false}\n"
        "  profiles: {standard: {pii: {EMAIL: block, '*': {route: guarded}}}}\n"
    )
    blocked = llmroute("route", "-r", str(registry), "--explain", "mail bob@example.com")
    assert blocked.returncode == 0, blocked.stderr
    assert "llm router (small): not asked (blocked by safety)" in blocked.stdout
    # the one line says so too: it read as routed to small, which the gateway never calls
    plain = llmroute("route", "-r", str(registry), "--no-llm", "mail bob@example.com")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip().endswith("BLOCKED by safety (profile standard: pii:EMAIL)")
    assert "BLOCKED" not in llmroute("route", "-r", str(registry), "--no-llm", "hi").stdout
    sent = llmroute("route", "-r", str(registry), "--explain", "call me at +1 415 555 0100")
    assert sent.returncode == 0, sent.stderr
    assert "llm router (small): not asked (sent by safety to guarded)" in sent.stdout
    empty = llmroute("route", "-r", str(registry), "--explain", "")
    assert empty.returncode == 0, empty.stderr
    assert "llm router (small): not asked (empty prompt)" in empty.stdout
