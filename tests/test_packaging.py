"""The wheel a user installs: built with the project's own backend (hatchling, offline,
in this process) from this tree, it holds every file of the package that the editable
install the other tests use reads from the tree (the encoder's data, trained artifacts,
the dashboard, migrations, the demo registry, py.typed), the licence, and no tests."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from hatchling.build import build_wheel

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "llmroute"

# Read at run time from inside the package; absent from the wheel, an installed llmroute
# fails where an editable one works. Named here too so that the check cannot pass on an
# empty listing.
MUST_SHIP = (
    "llmroute/__main__.py",
    "llmroute/py.typed",
    "llmroute/encoders/data/NOTICE",
    "llmroute/encoders/data/static_minilm.json",
    "llmroute/encoders/data/static_minilm.npy",
    "llmroute/encoders/data/tokenizer.json",
    "llmroute/safety/data/NOTICE.md",
    "llmroute/safety/data/injection-static/detector.json",
    "llmroute/safety/data/injection-minilm-int8/arrays.npz",
    "llmroute/reasoning/data/NOTICE",
    "llmroute/reasoning/data/minilm-int8/reasoning.json",
    "llmroute/gates/data/NOTICE.md",
    "llmroute/gates/data/static/weights.npz",
    "llmroute/server/static/dashboard.html",
    "llmroute/server/static/dashboard.js",
    "llmroute/server/static/dashboard.css",
    "llmroute/telemetry/migrations/sqlite/0001_initial.sql",
    "llmroute/telemetry/migrations/postgres/0001_initial.sql",
    "llmroute/demo/registry.yaml",
    "llmroute/examples/registry.yaml",  # `llmroute init` writes these three
    "llmroute/examples/cases.yaml",
    "llmroute/examples/eval.jsonl",
)


def _package_files() -> set[str]:
    """The package's files as the wheel should name them: git's list in a checkout (a
    tracked file that .gitignore matches is left out of the wheel by hatchling, so this
    is the list that catches it), else what is on disk."""
    git = shutil.which("git")
    if git is not None and (ROOT / ".git").exists():
        listed = subprocess.run(
            [git, "ls-files", "-z", "--", "src/llmroute"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        paths = [ROOT / name for name in listed.split("\0") if name]
        # Deleted in the work tree but not yet in git: not built, not expected.
        return {str(p.relative_to(ROOT / "src")) for p in paths if p.is_file()}
    return {
        str(p.relative_to(ROOT / "src"))
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_wheel_holds_the_package_its_data_and_licence_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # a PEP 517 backend builds the project in its working folder
    wheel = tmp_path / build_wheel(str(tmp_path))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()

    assert set(MUST_SHIP) <= names, sorted(set(MUST_SHIP) - names)
    missing = _package_files() - names
    assert not missing, f"in the package but not in the wheel: {sorted(missing)}"

    outside = {n for n in names if not n.startswith(("llmroute/", f"{dist_info}/"))}
    assert not outside, f"the wheel holds more than the package: {sorted(outside)[:10]}"
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]

    assert f"{dist_info}/licenses/LICENSE" in names
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
    assert "Requires-Python: >=3.11" in metadata
    assert "llmroute = llmroute.cli:main" in entry_points
