from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llmroute.evaluate.plot import PlotUnavailable, plot_confusion


def test_big_confusions_plot_the_most_confused_labels(tmp_path: Path) -> None:
    confusion = {f"r{i:02d}": {f"r{i:02d}": 10} for i in range(50)}
    confusion["r00"]["r01"] = 5
    confusion["r07"]["default"] = 3
    path = tmp_path / "c.png"
    shown = plot_confusion(confusion, path, max_labels=12)
    assert len(shown) == 12
    assert {"r00", "r01", "r07", "default"} <= set(shown)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_missing_matplotlib_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotUnavailable, match=r"pip install 'llmroute\[plot\]'"):
        plot_confusion({"a": {"a": 1}}, tmp_path / "c.png")
