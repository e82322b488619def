"""`llmroute train difficulty`, `llmroute calibrate` and `llmroute bench`: win-rate
routers that choose between a strong and a weak model (docs/difficulty.md)."""

from __future__ import annotations

import json
import math
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmroute.cli._app import (
    app,
    check_artifact_output,
    check_plot_path,
    counted,
    data_file,
    err_console,
    fail,
)
from llmroute.json_values import json_safe
from llmroute.money import dollars

if TYPE_CHECKING:  # imported where used: `llmroute --help` builds every command
    from llmroute.difficulty.calibration import Split
    from llmroute.encoders.base import Encoder

__all__ = [
    "CompareRouter",
    "RouterKind",
    "SplitChoice",
    "bench",
    "calibrate",
    "check_prices",
    "train_difficulty",
]

train_app = typer.Typer(
    help="Train the learned parts: the difficulty router, a cascade gate, the reasoning "
    "scorer, the safety detector.",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")

DataOption = Annotated[
    Path,
    typer.Option("--data", "-d", help="JSONL with prompt, weak_correct, strong_correct."),
]
RouterOption = Annotated[
    Path, typer.Option("--router", help="A router directory from `llmroute train difficulty`.")
]


class SplitChoice(StrEnum):
    """--split of calibrate and bench (`llmroute.difficulty.calibration.Split`)."""

    auto = "auto"
    val = "val"
    test = "test"
    all = "all"


class RouterKind(StrEnum):
    """--router of `train difficulty`: `llmroute.difficulty.routers.ROUTER_KINDS`'s
    names (a test holds them equal; that module needs numpy, the CLI starts without)."""

    random = "random"
    linear = "linear"
    knn = "knn"
    mf = "mf"
    mlp = "mlp"


class CompareRouter(StrEnum):
    """--router of `bench-cascade`: a `RouterKind`, or none."""

    random = "random"
    linear = "linear"
    knn = "knn"
    mf = "mf"
    mlp = "mlp"
    none = "none"


SplitOption = Annotated[
    SplitChoice,
    typer.Option(
        help="Rows to use: auto (the held-out split when DATA is the training file, else all), "
        "val, test or all."
    ),
]
_ENCODER_DEFAULT = "builtin:static"


def builtin_name(spec: str) -> str:
    """The built-in encoder an `--encoder` names (`static` for `builtin:static`), checked
    before any data is read; a usage failure otherwise."""
    from llmroute.encoders import BUILTIN_NAMES

    kind, _, name = spec.partition(":")
    if kind != "builtin" or not name:
        fail(f"--encoder must be builtin:NAME (minilm, minilm-int8 or static), not {spec!r}")
    short = name.removeprefix("builtin:")  # load_builtin takes a second prefix too
    if short not in BUILTIN_NAMES:
        fail(f"unknown built-in encoder {name!r}; choose one of {BUILTIN_NAMES}")
    return short


def _encoder(spec: str) -> Encoder:
    from llmroute.encoders import CachedEncoder, default_cache_dir, load_builtin

    return CachedEncoder(load_builtin(builtin_name(spec)), default_cache_dir() / "embeddings")


def check_prices(weak: float, strong: float, option: str) -> tuple[float, float]:
    """Prices for cost figures: finite, the weak one >= 0 and the strong one > 0 (a cost
    is a share of it). A usage error naming `option` otherwise."""
    if not (math.isfinite(weak) and math.isfinite(strong) and weak >= 0 and strong > 0):
        raise typer.BadParameter(
            "prices must be finite numbers, >= 0 (weak) and > 0 (strong), got weak "
            f"{dollars(weak, exact=True)} and strong {dollars(strong, exact=True)}",
            param_hint=option,
        )
    return weak, strong


@train_app.command("difficulty")
def train_difficulty(
    data: DataOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")],
    router: Annotated[
        RouterKind | None,
        typer.Option(
            "--router",
            help="random, linear, knn, mf or mlp (default: mlp).",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
    encoder: Annotated[
        str, typer.Option(help="The encoder; it must match the registry's at serve time.")
    ] = _ENCODER_DEFAULT,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test split.")] = 0,
    folds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Cross-validation folds over train + validation; the chosen router is then "
            "fitted on all those rows. 1: fit on train, choose on validation.",
        ),
    ] = 10,
    all_rows: Annotated[
        bool,
        typer.Option(
            "--all-rows",
            help="Cross-validate and fit on every row, the test split too: for the router "
            "you ship once its numbers are measured (bench it on other data then).",
        ),
    ] = False,
) -> None:
    """Train a win-rate router: hyper-parameters are chosen by cross-validation over the
    train and validation splits, the test split is left alone for `llmroute bench`."""
    import numpy as np
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from llmroute.difficulty import DEFAULT_ROUTER, read_labels, save_router, split, train_router
    from llmroute.difficulty.artifact import META_FILE
    from llmroute.difficulty.calibration import file_digest, quantiles_of, seen_prompts
    from llmroute.difficulty.train import MIN_VAL_ROWS, embed

    kind = DEFAULT_ROUTER if router is None else router.value
    data_file(data)
    check_artifact_output(output, META_FILE)
    if all_rows and folds < 2:
        raise typer.BadParameter("--all-rows needs cross-validation (2 folds or more)")
    labelled = read_labels(data)
    train_idx, val_idx, test_idx = split(labelled, seed=seed)
    if all_rows:  # the test rows join the training side; none are left out
        train_idx, test_idx = np.sort(np.concatenate([train_idx, test_idx])), test_idx[:0]
    enc = _encoder(encoder)
    started = time.perf_counter()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    # Off unless stderr is a terminal: elsewhere rich ends it with an empty line, ahead
    # of an error's.
    off = not err_console.is_terminal
    with Progress(*columns, console=err_console, transient=True, disable=off) as progress:
        task = progress.add_task(f"training {kind}", total=None)
        trained, metrics = train_router(
            kind,
            labelled,
            enc,
            train_idx=train_idx,
            val_idx=val_idx,
            folds=folds,
            seed=seed,
            progress=lambda message: progress.update(task, description=f"{kind}: {message}"),
        )
    cross = "folds" in metrics
    # Quantiles for `strong_share`: a cross-fitted router has seen every non-test row, so
    # they come from its own (in-sample) scores there; otherwise from validation.
    scored = labelled.subset(np.concatenate([train_idx, val_idx]) if cross else val_idx)
    scores = trained.score(embed(enc, scored.prompts), scored.prompts)
    trained_on = {
        "file": data.name,
        "sha256": file_digest(data),
        "rows": {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)},
        "split": {"seed": seed, "fractions": [0.6, 0.2, 0.2]},
        "fitted_on": ("all" if all_rows else "train+val") if cross else "train",
        "encoder_spec": encoder,
        "val_score_quantiles": quantiles_of(scores),
        # every prompt it saw (all but the test split): another file holding them has
        # those rows left out of bench and calibrate
        "seen_prompts": seen_prompts(labelled.subset(np.concatenate([train_idx, val_idx])).prompts),
    }
    save_router(
        trained, output, encoder_identity=enc.identity, trained_on=trained_on, metrics=metrics
    )
    seconds = time.perf_counter() - started
    if cross:
        capped = (
            f" (--folds {folds} capped: each fold needs {MIN_VAL_ROWS} rows)"
            if metrics["folds"] < folds
            else ""
        )
        chosen = f"{metrics['folds']}-fold{capped} cross-validated APGR {metrics['apgr']:.3f}"
        rows = len(train_idx) + len(val_idx)
        which = "every row" if all_rows else "train + validation"
        left = "no test rows" if all_rows else counted(len(test_idx), "test row")
        typer.echo(
            f"trained {kind} on {counted(rows, 'row')} ({which}) in {seconds:.1f}s; {chosen}; "
            f"{left} left out; written to {output}"
        )
    else:
        typer.echo(
            f"trained {kind} on {counted(len(train_idx), 'row')} in {seconds:.1f}s; validation "
            f"APGR {metrics['apgr']:.3f} ({counted(len(val_idx), 'row')}); written to {output}"
        )


def _load(router: Path) -> tuple[Any, dict[str, Any], Encoder]:
    from llmroute.difficulty.artifact import ARRAYS_FILE, META_FILE, load_router, read_meta
    from llmroute.difficulty.routers import check_input_dim
    from llmroute.encoders import BUILTIN_NAMES
    from llmroute.errors import ConfigError

    meta = read_meta(router)
    spec = meta.get("trained_on", {}).get("encoder_spec", _ENCODER_DEFAULT)
    # `train difficulty` writes the --encoder it was given: a bad one is an edit, said as
    # the artifact's fault (these commands have no --encoder to blame); as `_encoder`
    # and `load_builtin`, a second "builtin:" is taken (train took it and wrote it)
    kind, _, name = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if kind != "builtin" or name.removeprefix("builtin:") not in BUILTIN_NAMES:
        raise ConfigError(
            f"corrupt router artifact: trained_on.encoder_spec is {spec!r}, not "
            f"builtin:NAME ({', '.join(BUILTIN_NAMES)}); retrain it",
            file=str(router / META_FILE),
        )
    enc = _encoder(spec)
    trained = load_router(router, encoder_identity=enc.identity)
    check_input_dim(trained, enc.dim, file=str(router / ARRAYS_FILE))
    return trained, meta, enc


def _scores(
    router: Path, data: Path, which: Split, default: Split, *, prompts_only: bool = False
) -> tuple[Any, ...]:
    from llmroute.difficulty import read_labels
    from llmroute.difficulty.artifact import META_FILE
    from llmroute.difficulty.calibration import held_out
    from llmroute.difficulty.train import embed

    data_file(data)  # its digest tells the rows the router was not trained on
    labelled = read_labels(data, prompts_only=prompts_only)  # before the router's encoder loads
    trained, meta, enc = _load(router)
    meta_file = str(router / META_FILE)
    rows, described = held_out(meta, labelled, data, which, default, meta_file=meta_file)
    subset = labelled.subset(rows)
    scores = trained.score(embed(enc, subset.prompts), subset.prompts)
    return trained, subset, scores, described


@app.command("calibrate")
def calibrate(
    router: RouterOption,
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="JSONL with prompt (weak_correct, strong_correct not needed).",
        ),
    ],
    strong_share: Annotated[
        float,
        typer.Option(
            help="Share of requests to send to the strong model, between 0 and 1 (exclusive)."
        ),
    ],
    split: SplitOption = SplitChoice.auto,
) -> None:
    """Print the threshold that sends STRONG_SHARE of DATA's prompts to the strong model,
    computed on rows the router was not trained on. DATA needs only `prompt`: a sample of
    your own traffic calibrates the share for that traffic."""
    import numpy as np

    from llmroute.difficulty.metrics import threshold_for_share, threshold_text

    if not 0.0 < strong_share < 1.0:
        raise typer.BadParameter(
            f"must be between 0 and 1 (exclusive), got {strong_share}", param_hint="--strong-share"
        )
    trained, subset, scores, described = _scores(
        router, data, split.value, "val", prompts_only=True
    )
    threshold = threshold_for_share(scores, strong_share)
    # Written so that pasted into a registry (score >= threshold → strong) it sends what
    # is reported here: the share is that of the written value, not of the unrounded one.
    text = threshold_text(scores, threshold)
    actual = float(np.mean(scores >= float(text)))
    typer.echo(text)
    err_console.print(
        f"{trained.name}: threshold {text} sends {actual:.1%} of {counted(len(subset), 'prompt')} "
        f"({described}) to the strong model; in a registry: "
        f"default.difficulty.threshold: {text}, or the model router-{trained.name}-{text}"
    )


@app.command("bench")
def bench(
    router: RouterOption,
    data: DataOption,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Write the curve: .png, or .html (interactive).")
    ] = None,
    prices: Annotated[
        str | None,
        typer.Option(help="WEAK,STRONG: the cost of one request to each, for cost figures."),
    ] = None,
    split: SplitOption = SplitChoice.auto,
) -> None:
    """The quality vs strong-call-share curve and RouteLLM's metrics (APGR, CPT(50%),
    CPT(80%)), beside the random and oracle routers."""
    from llmroute.difficulty import oracle_curve, quality_curve, random_curve, report
    from llmroute.difficulty.plot import SUFFIXES, plot_curves

    check_plot_path(plot, SUFFIXES)
    costs = _prices(prices)
    trained, subset, scores, described = _scores(router, data, split.value, "test")
    weak_share, strong_share = float(subset.weak.mean()), float(subset.strong.mean())
    if weak_share == strong_share:
        fail(
            f"{data}: weak and strong accuracy are equal on the rows benched ({described}: "
            f"both {weak_share:.3f}): there is no gap to recover, so APGR and CPT are undefined"
        )
    curve = quality_curve(trained.name, scores, subset.weak, subset.strong)
    result = report(curve, subset.weak, subset.strong, prices=costs)
    result["rows"] = described
    if plot is not None:
        curves = [
            curve,
            random_curve(subset.weak, subset.strong),
            oracle_curve(subset.weak, subset.strong),
        ]
        plot_curves(
            plot,
            curves,
            result["weak_accuracy"],
            result["strong_accuracy"],
            title=f"{trained.name} on {data.name} ({described})",
        )
    if as_json:
        typer.echo(json.dumps(json_safe(result), sort_keys=True, allow_nan=False))
        return
    console = Console(emoji=False)
    _print_bench(console, result)
    if plot is not None:
        console.print(f"curves written to {escape(str(plot))}", soft_wrap=True)


def _prices(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        weak, strong = (float(part) for part in value.split(","))
    except ValueError:
        raise typer.BadParameter("give two numbers: WEAK,STRONG", param_hint="--prices") from None
    return check_prices(weak, strong, "--prices")


def _print_bench(console: Console, result: dict[str, Any]) -> None:
    console.print(
        f"{result['name']}: n={result['n']} ({result['rows']}); weak accuracy "
        f"{result['weak_accuracy']:.1%}, strong {result['strong_accuracy']:.1%}"
    )
    table = Table("router", "APGR", "CPT(50%)", "CPT(80%)")
    for name, row in (
        (result["name"], result),
        ("random", result["random"]),
        ("oracle", result["oracle"]),
    ):
        table.add_row(name, f"{row['apgr']:.3f}", f"{row['cpt50']:.1%}", f"{row['cpt80']:.1%}")
    console.print(table)
    console.print(
        f"knee: {result['knee_share']:.1%} strong calls for {result['knee_quality']:.1%} quality"
    )
    for key, label in _COST_LINES:
        if key in result:  # the amount as report writes it; --json keeps the keys
            console.print(f"cost {label}: {dollars(result[key])} per request")


_COST_LINES = (
    ("cost_cpt50", "at CPT(50%)"),
    ("cost_cpt80", "at CPT(80%)"),
    ("cost_knee", "at the knee"),
    ("cost_all_strong", "with every call strong"),
)
