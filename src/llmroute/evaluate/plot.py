"""Confusion-matrix heatmap (PNG) for `llmroute eval --plot`.

matplotlib is an optional extra (`llmroute[plot]`): it is imported only here, when a
plot is asked for, so the router itself never pays for it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from llmroute.errors import LlmrouteError

__all__ = ["PlotUnavailable", "plot_confusion"]

MAX_LABELS = 40


class PlotUnavailable(LlmrouteError):
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never needs a display
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable("plotting needs matplotlib: pip install 'llmroute[plot]'") from exc
    return plt


def _labels(confusion: dict[str, dict[str, int]], limit: int) -> list[str]:
    """All labels, or for big registries the `limit` labels involved in the most errors."""
    names = sorted({g for g in confusion} | {p for row in confusion.values() for p in row})
    if len(names) <= limit:
        return names
    errors: dict[str, int] = dict.fromkeys(names, 0)
    for gold, row in confusion.items():
        for pred, count in row.items():
            if gold != pred:
                errors[gold] += count
                errors[pred] += count
    return sorted(sorted(names, key=lambda name: -errors[name])[:limit])


def plot_confusion(
    confusion: dict[str, dict[str, int]],
    path: str | os.PathLike[str],
    *,
    title: str = "route confusion",
    max_labels: int = MAX_LABELS,
) -> list[str]:
    """Write a row-normalised heatmap (gold rows, predicted columns); returns the labels
    shown (a subset when there are more than `max_labels`)."""
    plt = _pyplot()
    names = _labels(confusion, max_labels)
    total = len({g for g in confusion} | {p for row in confusion.values() for p in row})
    index = {name: i for i, name in enumerate(names)}
    counts = np.zeros((len(names), len(names)), dtype=np.float64)
    for gold, row in confusion.items():
        for pred, count in row.items():
            if gold in index and pred in index:
                counts[index[gold], index[pred]] = count
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(4.0, 0.28 * len(names) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    try:
        image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("routed to")
        ax.set_ylabel("gold")
        subset = "" if len(names) == total else f" ({len(names)} most confused of {total})"
        ax.set_title(f"{title}{subset}")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of gold row")
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=120)
    finally:
        plt.close(fig)
    return names
