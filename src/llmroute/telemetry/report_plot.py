"""Charts for `llmroute report --plot`: route mix, p50/p99 latency and cost against the
strongest model, per route. A self-contained HTML page (inline SVG, no network) or a PNG
(matplotlib, the optional ``llmroute[plot]`` extra, imported only when asked for)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from llmroute.evaluate.plot import _pyplot
from llmroute.money import usd
from llmroute.telemetry.report import GroupStats, Report

__all__ = ["plot_report"]

SUFFIXES = (".png", ".html")
COLORS = ("#1f77b4", "#ff7f0e")
MAX_BARS = 20  # routes per chart; the rest are left out (the tables have them all)
WIDTH, ROW, PAD_LEFT, PAD = 760, 22, 170, 36


def plot_report(report: Report, path: Path, *, title: str = "") -> None:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"plot path must end in one of {', '.join(SUFFIXES)}, got {path}")
    charts = _charts(report)
    if suffix == ".png":
        _png(path, charts, title)
    else:
        path.write_text(_html_page(charts, title), encoding="utf-8")


Series = tuple[str, list[float]]
Chart = tuple[str, list[str], list[Series], str]  # title, labels, series, unit


def _charts(report: Report) -> list[Chart]:
    routes: Sequence[GroupStats] = report.routes[:MAX_BARS]
    names = [r.name for r in routes]
    charts: list[Chart] = [
        ("route mix", names, [("share of requests", [r.share * 100 for r in routes])], "%"),
        (
            "latency per route",
            names,
            [
                ("p50", [r.p50_ms or 0.0 for r in routes]),
                ("p99", [r.p99_ms or 0.0 for r in routes]),
            ],
            "ms",
        ),
    ]
    cost: list[Series] = [("routed", [r.cost_usd for r in routes])]
    if report.strongest is not None:
        cost.append((f"always {report.strongest}", [r.counterfactual_usd or 0.0 for r in routes]))
    charts.append(("cost per route", names, cost, "USD"))
    return charts


def _png(path: Path, charts: list[Chart], title: str) -> None:
    plt = _pyplot()
    rows = max((len(c[1]) for c in charts), default=1)
    fig, axes = plt.subplots(len(charts), 1, figsize=(8, 1.5 + len(charts) * (0.9 + 0.3 * rows)))
    try:
        for ax, (name, labels, series, unit) in zip(axes, charts, strict=True):
            height = 0.8 / len(series)
            for k, (label, values) in enumerate(series):
                positions = [i + k * height for i in range(len(labels))]
                ax.barh(positions, values, height=height, label=label, color=COLORS[k % 2])
            ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))], labels)
            ax.invert_yaxis()
            ax.set_title(name)
            ax.set_xlabel(unit)
            if len(series) > 1:
                ax.legend(fontsize=8)
        fig.suptitle(title or "llmroute report")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _fmt(value: float, unit: str) -> str:
    if unit == "USD":
        return usd(value)
    return f"{value:.1f}{'%' if unit == '%' else ' ' + unit}"


def _svg(chart: Chart) -> str:
    name, labels, series, unit = chart
    top = max((v for _, values in series for v in values), default=0.0) or 1.0
    width = WIDTH - PAD_LEFT - 90
    group = ROW * len(series) + 8
    height = PAD + group * max(1, len(labels)) + 12
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">',
        f'<text x="4" y="18" font-weight="bold">{html.escape(name)} ({html.escape(unit)})</text>',
    ]
    for k, (label, _) in enumerate(series):
        x = PAD_LEFT + 160 * k
        parts.append(
            f'<rect x="{x}" y="8" width="10" height="10" fill="{COLORS[k % 2]}"/>'
            f'<text x="{x + 14}" y="17" class="small">{html.escape(label)}</text>'
        )
    for i, label in enumerate(labels):
        y0 = PAD + i * group
        parts.append(
            f'<text x="{PAD_LEFT - 6}" y="{y0 + group / 2:.1f}" text-anchor="end" '
            f'dominant-baseline="middle">{html.escape(label)}</text>'
        )
        for k, (_, values) in enumerate(series):
            value = values[i]
            w = max(0.0, value / top * width)
            y = y0 + k * ROW
            parts.append(
                f'<rect x="{PAD_LEFT}" y="{y}" width="{w:.1f}" height="{ROW - 4}" '
                f'fill="{COLORS[k % 2]}"><title>{html.escape(_fmt(value, unit))}</title></rect>'
                f'<text x="{PAD_LEFT + w + 4:.1f}" y="{y + ROW / 2:.1f}" class="small" '
                f'dominant-baseline="middle">{html.escape(_fmt(value, unit))}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _html_page(charts: list[Chart], title: str) -> str:
    heading = html.escape(title or "llmroute report")
    body = "\n".join(f"<section>{_svg(c)}</section>" for c in charts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{heading}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
svg {{ font-size: 13px; max-width: 100%; height: auto; }}
.small {{ font-size: 11px; }}
section {{ margin-bottom: 1.5em; }}
</style></head><body>
<h2>{heading}</h2>
{body}
</body></html>
"""
