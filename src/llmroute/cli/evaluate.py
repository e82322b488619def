"""`llmroute eval` and `llmroute registry from-examples` (registered here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from llmroute.cli._app import (
    RegistryOption,
    app,
    check_plot_path,
    err_console,
    fail,
    registry_app,
    resolve_registry,
)
from llmroute.json_values import json_safe

if TYPE_CHECKING:  # imported where used: `llmroute --help` builds every command
    from llmroute.decide import Router
    from llmroute.evaluate.data import LabelledRow
    from llmroute.evaluate.intent_metrics import IntentReport
    from llmroute.evaluate.run import Comparison

_PROGRESS_AFTER = 500
_FULL_MATRIX_UP_TO = 10  # labels (default included); beyond: the most frequent confusions
_ALL_ROUTES_UP_TO = 30  # per-route rows; beyond: the weakest routes


class Method(StrEnum):
    linear = "linear"
    centroid = "centroid"
    knn = "knn"


OosOption = Annotated[
    str | None,
    typer.Option(
        "--oos-label",
        help="Label of out-of-scope rows (they should go to the default route).",
        show_default=False,
    ),
]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    show = total >= _PROGRESS_AFTER and err_console.is_terminal
    with Progress(console=err_console, transient=True, disable=not show) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.advance(task, done)


@app.command("eval")
def eval_command(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="Labelled JSONL: {'text': ..., 'intent': ...}; '-': standard input.",
        ),
    ],
    registry: RegistryOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    compare: Annotated[
        Path | None,
        typer.Option("--compare", help="Baseline registry; exit 1 if accuracy drops too far."),
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option("--max-drop", min=0.0, help="Allowed accuracy drop vs --compare, points."),
    ] = 0.5,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write a confusion heatmap here: .png, .svg or .pdf."),
    ] = None,
    oos_label: OosOption = None,
) -> None:
    """Route accuracy of a registry on labelled data (confusion, per-route P/R/F1)."""
    from llmroute.decide import Router
    from llmroute.evaluate.data import read_labelled
    from llmroute.jsonl import is_stdin, shown

    check_plot_path(plot, (".png", ".svg", ".pdf"))
    rows = read_labelled(data)
    _warn_of_unused_oos_label(oos_label, rows, data)
    path = resolve_registry(registry)
    comparison = None
    if compare is None:
        with Router.from_yaml(path) as router:
            _check_oos_label(oos_label, router)
            report = _evaluate(router, rows, oos_label, "evaluating")
    else:
        report, comparison = compared(
            path, compare, rows, oos_label, ("evaluating", "evaluating baseline"), max_drop
        )
    if plot is not None:
        from llmroute.evaluate.plot import plot_confusion

        where = shown(data) if is_stdin(data) else data.name
        plot_confusion(report.confusion, plot, title=f"{path.name} on {where}")
    if as_json:
        payload = report.to_dict()
        payload.update(registry=str(path), data=shown(data))
        if comparison is not None:
            payload["compare"] = {"baseline": str(compare), **comparison.to_dict()}
        print(json.dumps(json_safe(payload), ensure_ascii=False, allow_nan=False))
    else:
        console = Console(highlight=False, soft_wrap=True, emoji=False)
        _print_report(console, report, path, data)
        if comparison is not None and compare is not None:
            _print_comparison(console, comparison, compare)
        if plot is not None:
            console.print(f"confusion heatmap written to {escape(str(plot))}")
    if comparison is not None and not comparison.passed:
        raise typer.Exit(1)


def compared(
    candidate: Path,
    baseline: Path,
    rows: Sequence[LabelledRow],
    oos_label: str | None,
    labels: tuple[str, str],
    max_drop: float = 0.5,
) -> tuple[IntentReport, Comparison]:
    """The candidate registry's report on `rows`, and how it compares with the
    baseline's. Both are scored against the routes of either: a candidate that drops a
    route is not excused the rows labelled with it (to it they were out of scope, so a
    registry cut from ten routes to one lost 3 points and passed the gate)."""
    from llmroute.decide import Router
    from llmroute.evaluate.run import compare_reports

    with Router.from_yaml(candidate) as new, Router.from_yaml(baseline) as old:
        _check_oos_label(oos_label, new, old)
        both = (*new.loaded.registry.routes, *old.loaded.registry.routes)
        known = list(dict.fromkeys(r.name for r in both))
        report = _evaluate(new, rows, oos_label, labels[0], known)
        before = _evaluate(old, rows, oos_label, labels[1], known)
    return report, compare_reports(report, before, max_drop_points=max_drop)


def _warn_of_unused_oos_label(
    oos_label: str | None, rows: Sequence[LabelledRow], data: Path
) -> None:
    """Warn (stderr) of an --oos-label no row has: a mistyped one (`OOS` for `oos`)
    leaves every row in scope, silently."""
    labels = {r.intent for r in rows}
    if oos_label is None or oos_label in labels:
        return
    from llmroute.jsonl import shown
    from llmroute.registry._paths import did_you_mean

    cased = sorted(label for label in labels if label.lower() == oos_label.lower())
    hint = f" (did you mean {cased[0]!r}?)" if cased else did_you_mean(oos_label, labels)
    err_console.print(
        f"[bold yellow]warning:[/] --oos-label {escape(repr(oos_label))}: no row of "
        f"{escape(shown(data))} has that label, so none is out of scope{escape(hint)}",
        soft_wrap=True,
    )


def _check_oos_label(oos_label: str | None, *routers: Router) -> None:
    """Refuse an --oos-label that names a route (of any registry evaluated): its rows
    were scored as the route's, silently, and none as out of scope."""
    for router in routers:
        if oos_label is not None and any(
            r.name == oos_label for r in router.loaded.registry.routes
        ):
            fail(
                f"--oos-label {oos_label!r} names a route of {router.loaded.source}: rows "
                "labelled so are that route's, so none would be out of scope; give the "
                "label of the rows that should go to the default, or leave --oos-label out"
            )


def _evaluate(
    router: Router,
    rows: Sequence[LabelledRow],
    oos_label: str | None,
    label: str,
    routes: Sequence[str] | None = None,
) -> IntentReport:
    from llmroute.evaluate.run import evaluate_router

    with _progress(len(rows), label) as advance:
        return evaluate_router(router, rows, oos_label=oos_label, progress=advance, routes=routes)


def _print_report(console: Console, report: IntentReport, registry: Path, data: Path) -> None:
    from llmroute import jsonl

    console.print(f"[bold]{escape(registry.name)}[/] on {escape(jsonl.shown(data))}")
    summary = Table("metric", "value", box=None, pad_edge=False)
    summary.add_row("accuracy", _pct(report.accuracy))
    summary.add_row("in-scope accuracy", _pct(report.in_scope_accuracy))
    summary.add_row("oos recall", _pct(report.oos_recall))
    summary.add_row("oos precision", _pct(report.oos_precision))
    summary.add_row("n", f"{report.n} ({report.n_in_scope} in scope, {report.n_out_of_scope} out)")
    console.print(summary)
    if report.unknown_labels:
        shown = ", ".join(report.unknown_labels[:10])
        more = (
            f" and {len(report.unknown_labels) - 10} more"
            if len(report.unknown_labels) > 10
            else ""
        )
        console.print(
            f"note: labels with no route in this registry count as out of scope: "
            f"{escape(shown)}{more}"
        )
    _print_per_route(console, report)
    _print_confusion(console, report)


def _print_per_route(console: Console, report: IntentReport) -> None:
    items = list(report.per_route.items())
    note = ""
    if len(items) > _ALL_ROUTES_UP_TO:
        items.sort(key=lambda item: (item[1].f1 if item[1].f1 is not None else -1.0, item[0]))
        note = f"the {_ALL_ROUTES_UP_TO} weakest of {len(items)} routes by F1 (--json for all)"
        items = items[:_ALL_ROUTES_UP_TO]
    table = Table("route", "precision", "recall", "F1", "support", box=None, pad_edge=False)
    for name, m in items:
        table.add_row(escape(name), _pct(m.precision), _pct(m.recall), _pct(m.f1), str(m.support))
    console.print()
    console.print(table)
    if note:
        console.print(note)


def _print_confusion(console: Console, report: IntentReport) -> None:
    from llmroute.evaluate.intent_metrics import DEFAULT, top_confusions

    confusion = report.confusion
    labels = sorted({g for g in confusion} | {p for row in confusion.values() for p in row})
    console.print()
    if len(labels) <= _FULL_MATRIX_UP_TO:
        table = Table("gold \\ routed", *map(escape, labels), box=None, pad_edge=False)
        for gold in labels:
            row = confusion.get(gold, {})
            table.add_row(escape(gold), *(str(row.get(p, 0)) for p in labels))
        console.print(table)
        console.print(f"('{DEFAULT}' = out of scope / routed to the registry default)")
        return
    errors = top_confusions(confusion)
    if not errors:
        console.print("no confusions")
        return
    table = Table("gold", "routed to", "count", box=None, pad_edge=False)
    for gold, pred, count in errors:
        table.add_row(escape(gold), escape(pred), str(count))
    console.print(f"most frequent confusions ('{DEFAULT}' = out of scope / the default):")
    console.print(table)


def _print_comparison(console: Console, comparison: Comparison, baseline: Path) -> None:
    console.print()
    changed = [
        (name, diff) for name, diff in comparison.per_route.items() if diff.f1 != diff.baseline_f1
    ]
    changed.sort(key=lambda item: -abs(item[1].delta_f1 or 0.0))
    note = ""
    if len(changed) > _ALL_ROUTES_UP_TO:
        note = f"the {_ALL_ROUTES_UP_TO} largest of {len(changed)} changes (--json for all)"
        changed = changed[:_ALL_ROUTES_UP_TO]
    changed.sort(key=lambda item: item[1].delta_f1 or 0.0)
    if changed:
        table = Table("route", "baseline F1", "F1", "change", box=None, pad_edge=False)
        for name, diff in changed:
            delta = "" if diff.delta_f1 is None else f"{diff.delta_f1 * 100:+.1f}"
            table.add_row(escape(name), _pct(diff.baseline_f1), _pct(diff.f1), delta)
        console.print(f"per-route change against {escape(str(baseline))}:")
        console.print(table)
        if note:
            console.print(note)
    else:
        console.print(f"no per-route change against {escape(str(baseline))}")
    verdict = "[green]passed[/]" if comparison.passed else "[bold red]FAILED[/]"
    console.print(
        f"accuracy {_pct(comparison.accuracy)} vs baseline {_pct(comparison.baseline_accuracy)}:"
        f" {comparison.delta_points:+.2f} points (max drop {comparison.max_drop_points:g}) "
        f"{verdict}"
    )


@registry_app.command("from-examples")
def from_examples(
    data: Annotated[
        Path,
        typer.Argument(help="Labelled JSONL: {'text': ..., 'intent': ...}; '-': standard input."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Registry YAML to write.")],
    oos_label: OosOption = None,
    per_route: Annotated[
        int | None,
        typer.Option(
            "--per-route", min=1, help="Examples per route (default: all).", show_default=False
        ),
    ] = None,
    folds: Annotated[
        int,
        typer.Option("--folds", min=2, max=20, help="Cross-validation folds for the threshold."),
    ] = 5,
    method: Annotated[Method, typer.Option("--method", help="Intent head.")] = Method.linear,
    encoder: Annotated[
        str | None,
        typer.Option(
            "--encoder",
            help="Encoder spec (default: the --base registry's, else builtin:minilm).",
            show_default=False,
        ),
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option("--base", help="Take providers, models and default from this registry."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the splits.")] = 0,
    oos_recall: Annotated[
        float, typer.Option("--oos-recall", help="Out-of-scope recall to reach, out of fold.")
    ] = 0.9,
    in_scope_pass: Annotated[
        float,
        typer.Option(
            "--in-scope-pass",
            help="Without oos rows: the share of in-scope rows kept in scope, out of fold.",
        ),
    ] = 0.98,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT.")] = False,
) -> None:
    """Build a registry from labelled examples, its threshold calibrated by k-fold
    cross-validation (each example scored by a head that never saw it)."""
    from llmroute.evaluate.data import read_labelled
    from llmroute.evaluate.from_examples import FromExamplesConfig, registry_from_examples
    from llmroute.jsonl import shown
    from llmroute.registry import load_registry

    for flag, share in (("--oos-recall", oos_recall), ("--in-scope-pass", in_scope_pass)):
        if not 0.0 < share <= 1.0:  # said by its flag, not the config field's name
            fail(f"{flag} must be in (0, 1], got {share:g}")
    # before the examples are encoded (minutes for a large file): a hand-edited registry
    # is not replaced unasked, and a path that cannot be written is said at once
    if str(output) == "-":  # else a file named "-", once the examples were encoded
        fail("-o -: the registry is written to a file (its paths are relative to it); name one")
    if output.is_dir():
        fail(f"-o {output} is a directory; it names the registry YAML to write")
    if output.exists() and not force:
        fail(f"{output} exists; pass --force to overwrite it")
    if not output.parent.is_dir():
        fail(f"-o {output}: the folder {output.parent} does not exist")

    config = FromExamplesConfig(
        oos_label=oos_label,
        per_route=per_route,
        folds=folds,
        method=method.value,
        encoder=encoder,
        seed=seed,
        oos_recall=oos_recall,
        in_scope_pass=in_scope_pass,
    )
    rows = read_labelled(data)
    # a mistyped label built the out-of-scope rows into a route of their own
    _warn_of_unused_oos_label(oos_label, rows, data)
    loaded_base = load_registry(base) if base is not None else None
    result = registry_from_examples(
        rows, config, base=loaded_base, source=shown(data), out_dir=output.parent
    )
    output.write_text(result.yaml_text, encoding="utf-8")
    for line in result.summary():
        print(line)
    print(f"wrote {output}")
    from llmroute.cli.registry import located
    from llmroute.registry.lint import lint

    written = load_registry(output)
    for warning in lint(written.registry):  # noisy labels: said, not hidden
        said = located(written, warning)
        err_console.print(f"[bold yellow]warning:[/] {escape(said)}", soft_wrap=True)
