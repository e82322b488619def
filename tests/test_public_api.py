from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from gateway_proc import serve

import llmroute

ROOT = Path(__file__).resolve().parents[1]
LLMROUTE = str(Path(sys.executable).parent / "llmroute")
# never imported by the router tier, not even tried (an `import torch` in a `try`)
ML_STACK = ("torch", "transformers", "sentence_transformers", "sklearn", "scipy", "pandas")
# what a command that only prints does not need (each costs tens of ms at every start)
HEAVY = ("numpy", "pydantic", "yaml", "httpx", "aiohttp", "onnxruntime", "tokenizers")
SERVER = ("starlette", "uvicorn", "anyio", "aiohttp", "httpx", "llmroute.server.app")

# Loaded first by the interpreter (`site`): appends every module name an import looks
# for, so that an import that failed or was caught is seen too.
RECORDER = """
import sys

class _Recorder:
    def __init__(self, path):
        self.out = open(path, "a", encoding="utf-8", buffering=1)

    def find_spec(self, name, path=None, target=None):
        self.out.write(name + "\\n")
        return None

sys.meta_path.insert(0, _Recorder({path!r}))
"""


def test_all_is_sorted_and_exported() -> None:
    assert llmroute.__all__ == sorted(llmroute.__all__)
    for name in llmroute.__all__:
        assert hasattr(llmroute, name), name
    assert set(llmroute.__all__) <= set(dir(llmroute))


def test_the_sdk_s_errors_are_importable_where_the_others_are() -> None:
    """Each exception docs/sdk.md's "Errors" table names is one of `llmroute.errors`, where
    users import the others: `CallTimeout` (a call's own `timeout` ran out) was only in
    the SDK's private decision-log module."""
    import llmroute.errors

    page = (ROOT / "docs" / "sdk.md").read_text(encoding="utf-8")
    table = page.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)
    assert "CallTimeout" in named and "RouterClosed" in named, named
    errors = llmroute.errors
    assert errors.__all__ == sorted(errors.__all__)
    for name in named:
        assert name in errors.__all__, name
        assert issubclass(getattr(errors, name), errors.LlmrouteError), name


def test_dir_lists_the_public_names_not_the_helpers_of_the_lazy_import() -> None:
    names = set(dir(llmroute))
    assert set(llmroute.__all__) <= names
    assert not {"annotations", "importlib", "TYPE_CHECKING", "Any"} & names


def test_a_submodule_is_an_attribute_of_the_package() -> None:
    """``import llmroute`` then ``llmroute.errors.ConfigError`` (the dotted names the docs
    use): the package imported those submodules when it imported its public names, so
    the attribute was there; loaded on first use, it raised AttributeError."""
    code = (
        "import llmroute; print(llmroute.errors.ConfigError.__name__, "
        "llmroute.registry.ConfigErrors.__name__, hasattr(llmroute, 'no_such_module'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ConfigError", "ConfigErrors", "False"]


def test_the_dispatch_package_names_its_submodules_and_lists_its_names() -> None:
    """`llmroute.dispatch` loads its names on first use too (``llmroute route`` must not
    import the dispatcher): in a fresh process ``import llmroute.dispatch`` then
    ``llmroute.dispatch.dispatcher.Dispatcher`` (which its eager imports used to make
    work) raised AttributeError, and `dir` listed only the lazy import's helpers."""
    code = (
        "import llmroute.dispatch as d; print(d.dispatcher.Dispatcher.__name__, "
        "d.cascade.TierStep.__name__, d.plan.Plan.__name__, hasattr(d, 'no_such_module')); "
        "names = set(dir(d)); print(set(d.__all__) <= names, "
        "bool({'annotations', 'importlib', 'TYPE_CHECKING', 'Any'} & names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Dispatcher", "TierStep", "Plan", "False", "True", "False"]


def test_import_does_not_pull_heavy_or_network_modules() -> None:
    code = (
        "import sys, llmroute, llmroute.cli, llmroute.assemble; "
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers', 'onnxruntime',"
        " 'onnx', 'starlette', 'uvicorn') if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    code = "import sys, llmroute; print(','.join(m for m in sys.modules if m.startswith('llm')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "llmroute"  # its public names load on first use


def _recording(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose interpreters record each module they look for, and the file."""
    site, names = tmp_path / "site", tmp_path / "imports.txt"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(RECORDER.format(path=str(names))))
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths), "LLMROUTE_TELEMETRY_URL": "off"}, names


def _tried(names: Path, packages: tuple[str, ...]) -> list[str]:
    seen = set(names.read_text().split())
    return [p for p in packages if p in seen or any(s.startswith(p + ".") for s in seen)]


@pytest.mark.parametrize(
    ("args", "absent"),
    [
        (["--help"], (*ML_STACK, *HEAVY, "starlette", "uvicorn", "llmroute.decide")),
        # (typer itself may import pydantic to read a command's arguments)
        (["route", "--help"], (*ML_STACK, "numpy", "httpx", "onnxruntime", "llmroute.registry")),
        (
            ["route", "-r", str(ROOT / "examples" / "echo.yaml"), "write a python function"],
            # its plan (the fallbacks --explain shows), not the dispatcher that runs it
            (
                *ML_STACK,
                *SERVER,
                "llmroute.state",
                "llmroute.dispatch.dispatcher",
                "llmroute.providers",
            ),
        ),
    ],
    ids=["help", "route-help", "route"],
)
def test_a_command_imports_only_what_it_runs(
    args: list[str], absent: tuple[str, ...], tmp_path: Path
) -> None:
    """`llmroute --help` answers without the routing stack, `route` with a built-in
    encoder without an HTTP client or the gateway: each is paid at every start."""
    env, names = _recording(tmp_path)
    done = subprocess.run(
        [LLMROUTE, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert _tried(names, absent) == []


def test_serving_never_imports_the_ml_stack(tmp_path: Path) -> None:
    """The gateway, from start through a routed chat request, never even tries to import
    torch, transformers or the scientific stack (installed or not)."""
    env, names = _recording(tmp_path)
    with serve(ROOT / "examples" / "echo.yaml", tmp_path / "serve.log", env=env) as served:
        body = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
        httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=30).raise_for_status()
    assert "starlette" in _tried(names, SERVER)  # the recorder saw the server's imports
    assert _tried(names, ML_STACK) == []
