"""Quality vs strong-call share plots for difficulty routers: a PNG (matplotlib, the optional
`llmroute[plot]` extra, imported only when asked for) or a self-contained HTML page (inline
SVG plus a few lines of vanilla JS for hover values; no network, so it opens offline and can
be attached to a report as one file)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmroute.difficulty.metrics import Curve
from llmroute.evaluate.plot import _pyplot

__all__ = ["plot_curves"]

SUFFIXES = (".png", ".html")
BASELINES = frozenset({"random", "oracle"})  # drawn dashed: reference lines, not routers
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
MAX_POINTS = 1500  # per curve in the HTML page; more is invisible at this size
WIDTH, HEIGHT, PAD = 760, 460, 56


def plot_curves(
    path: Path,
    curves: Sequence[Curve],
    weak_acc: float,
    strong_acc: float,
    *,
    title: str = "",
) -> None:
    """Write quality vs strong-call share for each curve, with the weak and strong accuracy as
    horizontal lines; the format follows the suffix (.png or .html)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"plot path must end in one of {', '.join(SUFFIXES)}, got {path}")
    if not curves:
        raise ValueError("nothing to plot: no curves")
    if suffix == ".png":
        _png(Path(path), curves, weak_acc, strong_acc, title)
    else:
        page = _html_page(curves, weak_acc, strong_acc, title)
        Path(path).write_text(page, encoding="utf-8")


def _png(path: Path, curves: Sequence[Curve], weak: float, strong: float, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    try:
        for i, curve in enumerate(curves):
            style = "--" if curve.name in BASELINES else "-"
            color = COLORS[i % len(COLORS)]
            ax.plot(curve.shares, curve.quality, style, color=color, label=curve.name)
        ax.axhline(weak, color="grey", linewidth=0.8, linestyle=":", label=f"weak {weak:.3f}")
        ax.axhline(
            strong, color="black", linewidth=0.8, linestyle=":", label=f"strong {strong:.3f}"
        )
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("share of strong calls")
        ax.set_ylabel("quality (accuracy of the mix)")
        # a file name is text, not mathtext: "$" in it was a ParseSyntaxException
        ax.set_title(title or "quality vs strong-call share", parse_math=False)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def _y_range(curves: Sequence[Curve], weak: float, strong: float) -> tuple[float, float]:
    values = np.concatenate([c.quality for c in curves] + [np.array([weak, strong])])
    low, high = float(values.min()), float(values.max())
    pad = max(0.02, 0.05 * (high - low))
    return max(0.0, low - pad), min(max(1.0, high), high + pad)


def _thin(curve: Curve) -> tuple[list[float], list[float]]:
    """At most MAX_POINTS points, ends kept, so big data sets still give a small page."""
    index = np.arange(len(curve.shares))
    if index.size > MAX_POINTS:
        index = np.unique(np.linspace(0, index.size - 1, MAX_POINTS).round().astype(np.int64))
    shares = [round(float(x), 5) for x in curve.shares[index]]
    return shares, [round(float(y), 5) for y in curve.quality[index]]


def _svg_body(
    curves: Sequence[Curve], weak: float, strong: float, span: tuple[float, float]
) -> str:
    low, high = span
    w, h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def xy(s: float, q: float) -> str:
        return f"{PAD + s * w:.1f},{PAD + (high - q) / (high - low) * h:.1f}"

    parts = [_axes(span)]
    for label, acc in (("weak", weak), ("strong", strong)):
        y = xy(0.0, acc).split(",")[1]
        parts.append(
            f'<line x1="{PAD}" x2="{PAD + w}" y1="{y}" y2="{y}" stroke="#888" '
            f'stroke-dasharray="2,3"/><text x="{PAD + w - 4}" y="{float(y) - 4:.1f}" '
            f'text-anchor="end" class="small">{label} {acc:.3f}</text>'
        )
    for i, curve in enumerate(curves):
        shares, quality = _thin(curve)
        points = " ".join(xy(s, q) for s, q in zip(shares, quality, strict=True))
        dash = ' stroke-dasharray="6,4"' if curve.name in BASELINES else ""
        color = COLORS[i % len(COLORS)]
        name = html.escape(curve.name)
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{points}"/>'
            f'<text x="{PAD + 8}" y="{PAD + 16 + 16 * i}" fill="{color}" class="small">'
            f"{name}</text>"
        )
    return "\n".join(parts)


def _axes(span: tuple[float, float]) -> str:
    low, high = span
    w, h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    parts = [f'<rect x="{PAD}" y="{PAD}" width="{w}" height="{h}" fill="none" stroke="#333"/>']
    for t in np.linspace(0.0, 1.0, 6):
        x = PAD + t * w
        parts.append(
            f'<text x="{x:.1f}" y="{PAD + h + 16}" text-anchor="middle" class="small">{t:.1f}'
            "</text>"
        )
    for t in np.linspace(low, high, 6):
        y = PAD + (high - t) / (high - low) * h
        parts.append(
            f'<text x="{PAD - 6}" y="{y + 4:.1f}" text-anchor="end" class="small">{t:.2f}</text>'
        )
    parts.append(
        f'<text x="{PAD + w / 2}" y="{HEIGHT - 12}" text-anchor="middle">share of strong calls'
        f'</text><text transform="translate(16,{PAD + h / 2}) rotate(-90)" '
        'text-anchor="middle">quality</text>'
    )
    return "\n".join(parts)


_SCRIPT = """
const data = JSON.parse(document.getElementById("data").textContent);
const svg = document.querySelector("svg"), tip = document.getElementById("tip");
const cursor = document.getElementById("cursor");
function at(s, xs, ys) {
  let i = 1; while (i < xs.length - 1 && xs[i] < s) i++;
  const t = xs[i] === xs[i - 1] ? 1 : (s - xs[i - 1]) / (xs[i] - xs[i - 1]);
  return ys[i - 1] + Math.min(1, Math.max(0, t)) * (ys[i] - ys[i - 1]);
}
svg.addEventListener("mousemove", (e) => {
  const p = new DOMPoint(e.clientX, e.clientY).matrixTransform(svg.getScreenCTM().inverse());
  const s = (p.x - data.pad) / data.width;
  if (s < 0 || s > 1) { tip.style.display = "none"; return; }
  cursor.setAttribute("x1", p.x); cursor.setAttribute("x2", p.x);
  tip.textContent = "share " + s.toFixed(3) + data.curves.map(
    (c) => "\\n" + c.name + ": " + at(s, c.s, c.q).toFixed(4)).join("");
  tip.style.display = "block";
  tip.style.left = (e.pageX + 14) + "px"; tip.style.top = (e.pageY + 14) + "px";
});
svg.addEventListener("mouseleave", () => { tip.style.display = "none"; });
"""


def _html_page(curves: Sequence[Curve], weak: float, strong: float, title: str) -> str:
    span = _y_range(curves, weak, strong)
    payload = {
        "pad": PAD,
        "width": WIDTH - 2 * PAD,
        "curves": [dict(zip(("s", "q"), _thin(c), strict=True), name=c.name) for c in curves],
    }
    data = json.dumps(payload).replace("</", "<\\/")
    heading = html.escape(title or "quality vs strong-call share")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{heading}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
svg {{ font-size: 13px; max-width: 100%; height: auto; }}
.small {{ font-size: 11px; }}
#tip {{ position: absolute; display: none; white-space: pre; background: #fffffff0;
  border: 1px solid #999; padding: 4px 6px; font: 12px monospace; pointer-events: none; }}
</style></head><body>
<h2>{heading}</h2>
<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}"
 height="{HEIGHT}">
{_svg_body(curves, weak, strong, span)}
<line id="cursor" x1="-10" x2="-10" y1="{PAD}" y2="{HEIGHT - PAD}" stroke="#bbb"/>
</svg>
<div id="tip"></div>
<script type="application/json" id="data">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
