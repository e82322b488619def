from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from llmroute.difficulty import oracle_curve, quality_curve, random_curve
from llmroute.difficulty.plot import plot_curves
from llmroute.evaluate.plot import PlotUnavailable

WEAK = np.array([0, 1, 0, 1, 0, 1, 1, 0], dtype=bool)
STRONG = np.array([1, 1, 1, 0, 0, 1, 1, 1], dtype=bool)
SCORES = np.array([0.9, 0.2, 0.7, 0.1, 0.5, 0.3, 0.4, 0.8])
CURVES = [
    quality_curve("</script><b>router</b>", SCORES, WEAK, STRONG),
    random_curve(WEAK, STRONG),
    oracle_curve(WEAK, STRONG),
]


def test_png_has_the_png_magic_bytes(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    plot_curves(path, CURVES, WEAK.mean(), STRONG.mean(), title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_matplotlib_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotUnavailable, match=r"pip install 'llmroute\[plot\]'"):
        plot_curves(tmp_path / "c.png", CURVES, 0.5, 0.75)


def test_html_is_self_contained_svg(tmp_path: Path) -> None:
    path = tmp_path / "curves.html"
    plot_curves(path, CURVES, WEAK.mean(), STRONG.mean(), title="<difficulty>")
    page = path.read_text(encoding="utf-8")
    assert "<svg" in page and "<polyline" in page
    assert "src=" not in page and "http" not in page  # nothing fetched: works offline
    assert "&lt;difficulty&gt;" in page
    assert page.count("</script>") == 2  # the curve name cannot close the data block
    assert 'stroke-dasharray="6,4"' in page  # random and oracle drawn dashed


def test_bad_suffix_names_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png, \.html"):
        plot_curves(tmp_path / "c.svg", CURVES, 0.5, 0.75)
