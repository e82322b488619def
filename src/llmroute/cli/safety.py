"""`llmroute train safety` and `llmroute eval-safety`: the jailbreak / prompt-injection
detector (docs/safety.md)."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmroute.cli._app import app, check_artifact_output, counted, err_console, fail
from llmroute.cli.difficulty import train_app
from llmroute.json_values import json_safe

if TYPE_CHECKING:  # imported where used: `llmroute --help` builds every command
    from llmroute.encoders.base import Encoder
    from llmroute.safety.injection import SafetyData, TrainReport

__all__ = ["eval_safety", "train_safety"]

DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        "-d",
        help="JSONL with text and label (jailbreak, injection or benign, in any case; others "
        "are reported apart) and an optional weight (a positive number, 1 by default: the "
        "row's weight in training's fit); '-': standard input.",
    ),
]
EncoderOption = Annotated[
    str,
    typer.Option(help="The encoder; it must match the registry's at serve time."),
]
_ENCODER_DEFAULT = "builtin:static"


def _encoder(spec: str) -> Encoder:
    from llmroute.encoders import CachedEncoder, default_cache_dir, load_builtin

    kind, _, name = spec.partition(":")
    if kind != "builtin" or not name:
        fail(f"--encoder must be builtin:NAME (minilm, minilm-int8 or static), not {spec!r}")
    return CachedEncoder(load_builtin(name), default_cache_dir() / "embeddings")


def _read(data: Path) -> SafetyData:
    """The labelled rows (a detector label in any case is that label: `read_safety_data`)."""
    from llmroute.safety.injection import read_safety_data

    return read_safety_data(data)


@train_app.command("safety")
def train_safety(
    data: DataOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")],
    encoder: EncoderOption = _ENCODER_DEFAULT,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test split.")] = 0,
    token_bag: Annotated[
        bool | None,
        typer.Option(
            "--token-bag/--no-token-bag",
            help="Also use MiniLM's averaged input token vectors (docs/safety.md); needs the "
            "MiniLM weights package. Default: on with a builtin:minilm encoder, off otherwise.",
        ),
    ] = None,
    neighbours: Annotated[
        bool,
        typer.Option(
            "--neighbours/--no-neighbours",
            help="Let cross-validation also try the nearest-known-text columns (similarity "
            "to the closest training attack and benign text; docs/safety.md): better on "
            "variants of the attacks you train on, possibly worse on new ones.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the whole training report as one JSON object (every candidate's "
            "cross-validated numbers, the validation table) instead of a summary line.",
        ),
    ] = False,
) -> None:
    """Train a jailbreak / prompt-injection detector: settings and threshold chosen by
    5-fold group cross-validation over the train and validation sides of a group split,
    then fitted on both; the test side is never read (`llmroute eval-safety --split test`)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from llmroute.safety.injection import META_FILE, save_detector, train_detector
    from llmroute.safety.token_bag import load_token_bag

    check_artifact_output(output, META_FILE)
    rows = _read(data)
    enc = _encoder(encoder)
    if token_bag is None:
        token_bag = encoder.startswith("builtin:minilm")
    bag = load_token_bag() if token_bag else None
    started = time.perf_counter()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    off = not err_console.is_terminal  # off one, rich ends it with an empty line
    with Progress(*columns, console=err_console, transient=True, disable=off) as progress:
        task = progress.add_task("training the safety detector", total=None)
        detector, report = train_detector(
            rows,
            enc,
            token_bag=bag,
            seed=seed,
            neighbours=neighbours,
            progress=lambda message: progress.update(task, description=message),
        )
    save_detector(detector, output)
    seconds = time.perf_counter() - started
    if as_json:
        err_console.print(f"wrote {output} in {seconds:.1f} s")
        print(json.dumps(json_safe(report.to_dict()), ensure_ascii=False, allow_nan=False))
        return
    typer.echo(_trained(report, encoder, bag is not None, seconds, output))


def _trained(report: TrainReport, encoder: str, bagged: bool, seconds: float, out: Path) -> str:
    """The one line `train safety` ends with, as the other `train` commands do: what was
    trained on how many rows, the settings chosen, the out-of-fold numbers at the chosen
    threshold, where it went (`--json` has the rest)."""
    from llmroute.safety.injection import FOLDS

    val, rows = report.validation, report.rows
    chosen = ", ".join(f"{name}={value:g}" for name, value in report.hyper.items())
    weighted = "" if report.weights is None else f"; rows weighted: {_sums(report.weights)}"
    return (
        f"trained a safety detector ({encoder}, token bag {'on' if bagged else 'off'}) on "
        f"{counted(rows['train+validation'], 'row')} (train + validation; "
        f"{counted(rows['test'], 'test row')} left out{weighted}) in {seconds:.1f}s "
        f"({chosen}); {FOLDS}-fold cross-validated on "
        f"{counted(val.n_attack, 'attack')} and {val.n_benign} benign: TPR {_share(val.tpr)}, FPR "
        f"{_share(val.fpr)}, ROC-AUC {_share(val.auc, 4)} at threshold {val.threshold:.4f}; "
        f"written to {out}"
    )


def _sums(weights: dict[str, Any]) -> str:
    """Each label's sum of its rows' weights: ``benign 24.5, jailbreak 1,036`` (as the
    artifact holds it: a hand-edited one may hold anything)."""

    def said(total: object) -> str:
        if isinstance(total, bool) or not isinstance(total, int | float):
            return repr(total)
        if abs(total) < 1:
            return f"{total:.3g}"
        return f"{total:,.3f}".rstrip("0").rstrip(".")

    return ", ".join(f"{label} {said(total)}" for label, total in weights.items())


class SafetySplit(StrEnum):
    all = "all"
    test = "test"


@app.command("eval-safety")
def eval_safety(
    data: DataOption,
    artifact: Annotated[
        str,
        typer.Option(help="A directory from `llmroute train safety`, or builtin."),
    ] = "builtin",
    encoder: EncoderOption = _ENCODER_DEFAULT,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Score threshold (default: the artifact's calibrated one).", min=0, max=1
        ),
    ] = None,
    split: Annotated[
        SafetySplit,
        typer.Option(
            help="all rows, or only the held-out test side of `llmroute train safety`'s "
            "group split (use it on the data the artifact was trained from)."
        ),
    ] = SafetySplit.all,
    seed: Annotated[int, typer.Option(help="Seed of that split.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """TPR, FPR, precision and ROC-AUC of the detector on labelled data: jailbreak and
    injection rows are positives, benign rows negatives, other labels reported apart.
    A row's score is its worst window's, of the artifact's own windows (16 of 1,000
    characters: ~12,000 of English); the rest of a longer row is not scored, while the
    router scores safety.injection.extra_windows more with the built-in static detector
    (and calls the rest unscanned). The report counts such rows (past_windows). The fast
    rules read each row whole."""
    import numpy as np

    from llmroute.jsonl import shown
    from llmroute.safety.injection import builtin_detector_dir, evaluate_detector, load_detector
    from llmroute.safety.windows import windows

    rows = _read(data)
    total = len(rows)
    if split == "test":
        from llmroute.safety.injection import split_sides

        rows = rows.subset(np.flatnonzero(split_sides(rows, seed=seed) == 2))
    enc = _encoder(encoder)
    directory = builtin_detector_dir(enc.identity) if artifact == "builtin" else Path(artifact)
    detector = load_detector(directory, encoder_identity=enc.identity, dim=enc.dim)
    rows, left_out = _unseen(detector.trained_on, directory, rows, data, split)
    if not rows.is_detector_row.any():
        counts = Counter(rows.labels).most_common()
        found = ", ".join(f"{label!r} ({n})" for label, n in counts[:5])
        more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
        where = f"the test split of {shown(data)}" if split == "test" else shown(data)
        fail(
            f"{where} has no jailbreak, injection or benign rows to measure the detector on "
            f"(labels: {found or 'none'}{more})"
        )
    report = evaluate_detector(detector, rows, enc, threshold=threshold)
    seen = f"; the {left_out} whose texts it saw in training left out" if left_out else ""
    measured = [text for text, row in zip(rows.texts, rows.is_detector_row, strict=True) if row]
    out = {
        "rows": f"{split} split ({len(rows)} of {total}{seen})",
        "left_out_seen": left_out,
        **report.to_dict(),
        "window": list(detector.window),
        "past_windows": sum(windows(text, *detector.window)[1] for text in measured),
        "trained_weights": detector.metrics.get("weights"),  # None: unweighted
    }
    if as_json:
        print(json.dumps(json_safe(out), ensure_ascii=False, allow_nan=False))
        return
    _print_report(out)


def _unseen(
    trained_on: dict[str, Any], folder: Path, rows: SafetyData, data: Path, split: SafetySplit
) -> tuple[SafetyData, int]:
    """`rows` less those whose text the detector was fitted on or chose its settings and
    threshold with, and how many those were, as `bench` leaves them out: the training
    file (whose default --split all held them), an edited or merged copy of it, or
    another file sharing texts with it cannot pass them off as held out."""
    import numpy as np

    from llmroute.difficulty.calibration import seen_mask
    from llmroute.jsonl import shown
    from llmroute.safety.injection import META_FILE

    meta_file = str(folder / META_FILE)
    known = seen_mask(
        trained_on.get("seen_prompts"), rows.texts, what="safety artifact", meta_file=meta_file
    )
    if known is None:  # honest on every run: what it saw may be among what is measured
        err_console.print(
            f"warning: {escape(meta_file)} records no hashes of its training texts (an older "
            "llmroute trained it), so rows it was trained on count as held out (but for "
            "--split test of its own training file); retrain it with `llmroute train "
            "safety` to record them and have those rows left out",
            soft_wrap=True,
        )
        return rows, 0
    measured = rows.is_detector_row
    if measured.any() and known[measured].all():
        fail(
            f"every jailbreak, injection and benign {split} row of {shown(data)} has a text "
            "the safety detector was trained on (or chose its settings with): there is "
            "nothing unseen to measure it on"
        )
    return rows.subset(np.flatnonzero(~known)), int(known.sum())


def _print_report(out: dict[str, Any]) -> None:
    console = Console(highlight=False, soft_wrap=True, emoji=False)
    console.print(f"rows: {out['rows']}")
    if isinstance(out["trained_weights"], dict):
        said = _sums(out["trained_weights"])
        console.print(f"trained with sample weights, each label's sum: {said}")
    console.print(
        f"n {out['n']} ({counted(out['n_attack'], 'attack')}, {out['n_benign']} benign) · "
        f"TPR {_share(out['tpr'])} · FPR {_share(out['fpr'])} · precision "
        f"{_share(out['precision'])} · ROC-AUC {_share(out['auc'], 4)} · threshold "
        f"{out['threshold']:.4f}"
    )
    if out["past_windows"]:
        n, (size, _, most) = out["past_windows"], out["window"]
        console.print(
            f"{n} row{' ran' if n == 1 else 's ran'} past the {most} windows scored "
            f"({size} characters each): the rest of {'it' if n == 1 else 'them'} was not "
            "scored (the router's extra_windows read further: docs/safety.md)"
        )
    if out["hard_negative_n"]:
        console.print(
            f"hard negatives (benign look-alikes): {counted(out['hard_negative_n'], 'row')}, "
            f"FPR {out['hard_negative_fpr']:.3f}"
        )
    for label, stats in out["other_labels"].items():
        console.print(
            f"other label {label!r}: {counted(int(stats['n']), 'row')}, "
            f"{stats['flagged']:.1%} flagged (not counted in TPR/FPR)"
        )
    table = Table("threshold", "TPR", "FPR", "precision", box=None, pad_edge=False)
    for row in out["table"]:
        table.add_row(
            f"{row['threshold']:.4f}",
            _share(row["tpr"]),
            _share(row["fpr"]),
            _share(row["precision"]),
        )
    console.print(table)
    if out["per_source"]:
        sources = Table("source", "attacks", "TPR", box=None, pad_edge=False)
        for source, stats in sorted(out["per_source"].items()):
            # rows without a `source` share the empty name; a name is text, not markup
            name = escape(source) if source else "(no source)"
            sources.add_row(name, str(int(stats["n"])), f"{stats['tpr']:.3f}")
        console.print(sources)
    if out["rule_hits"]:
        hits = ", ".join(f"{name} {count}" for name, count in sorted(out["rule_hits"].items()))
        console.print(f"rule hits: {hits}")
    both = out.get("with_rules") or {}
    if both:
        console.print(
            f"model or rule (what the safety layer flags): TPR {_share(both['tpr'])} · "
            f"FPR {_share(both['fpr'])} · hard-negative FPR {_share(both['hard_negative_fpr'])}"
        )


def _share(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"
