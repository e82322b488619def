"""`llmroute train gate` and `llmroute bench-cascade`: the learned cascade gate and the
offline evaluation of a cascade (weak model first, strong one when the gate rejects)."""

from __future__ import annotations

import json
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
from llmroute.cli.difficulty import (
    CompareRouter,
    _encoder,
    builtin_name,
    check_prices,
    train_app,
)
from llmroute.json_values import json_safe
from llmroute.money import dollars

if TYPE_CHECKING:  # imported where used: `llmroute --help` builds every command
    import numpy as np

    from llmroute.encoders.base import Encoder

__all__ = ["bench_cascade", "train_gate"]

GateDataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        "-d",
        help="JSONL with prompt, weak_response, weak_correct (and strong_correct to bench).",
    ),
]
_ENCODER_DEFAULT = "builtin:static"


class GateKind(StrEnum):
    learned = "learned"
    random = "random"
    oracle = "oracle"
    heuristic = "heuristic"


class CascadeSplit(StrEnum):
    test = "test"
    all = "all"


def _progress_columns() -> tuple[Any, ...]:
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    return (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())


@train_app.command("gate")
def train_gate(
    data: GateDataOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")],
    encoder: Annotated[
        str, typer.Option(help="The encoder; the gate only loads with the same one.")
    ] = _ENCODER_DEFAULT,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test split.")] = 0,
    refit: Annotated[
        bool,
        typer.Option(
            help="Refit the validation-chosen settings on train + validation (the threshold "
            "chosen on validation is kept)."
        ),
    ] = True,
) -> None:
    """Train a learned cascade gate: P(the weak answer is acceptable). Settings and the
    threshold are chosen on the validation split; the test split is left alone for
    `llmroute bench-cascade`."""
    import numpy as np
    from rich.progress import Progress

    from llmroute.difficulty.calibration import file_digest, seen_prompts
    from llmroute.gates.gate_train import gate_split, read_gate_data
    from llmroute.gates.gate_train import train_gate as fit
    from llmroute.gates.learned import META_FILE

    data_file(data)
    check_artifact_output(output, META_FILE)
    rows = read_gate_data(data)
    chosen_on = gate_split(rows, seed=seed)[:2]  # what bench-cascade must leave out
    enc = _encoder(encoder)
    started = time.perf_counter()
    off = not err_console.is_terminal  # off one, rich ends it with an empty line
    with Progress(
        *_progress_columns(), console=err_console, transient=True, disable=off
    ) as progress:
        task = progress.add_task("training the gate", total=None)
        model, metrics = fit(
            rows,
            enc,
            seed=seed,
            refit=refit,
            progress=lambda message: progress.update(task, description=f"gate: {message}"),
        )
    model.meta["trained_on"] = {
        "file": data.name,
        "sha256": file_digest(data),
        "encoder_spec": encoder,
        **{k: metrics[k] for k in ("rows", "split", "fitted_on")},
        "seen_prompts": seen_prompts([rows.prompts[i] for i in np.concatenate(chosen_on)]),
    }
    model.save(output)
    seconds = time.perf_counter() - started
    typer.echo(
        f"trained a gate ({'+'.join(model.parts)}, c={metrics['c']:g}) on "
        f"{metrics['fitted_on']} in {seconds:.1f}s; validation AUC {metrics['val_auc']:.3f}, "
        f"threshold {model.threshold:.3f}; written to {output}"
    )


def _prices(
    price_weak: float | None,
    price_strong: float | None,
    registry: Path | None,
    weak: str | None,
    strong: str | None,
) -> tuple[float, float] | None:
    if (price_weak is None) != (price_strong is None):
        fail("give both --price-weak and --price-strong, or neither")
    if price_weak is not None and price_strong is not None:
        if registry is not None:
            fail("give prices either as --price-weak/--price-strong or from --registry, not both")
        return check_prices(price_weak, price_strong, "--price-weak/--price-strong")
    if registry is None:
        if weak is not None or strong is not None:
            fail("--weak and --strong name models of a --registry")
        return None
    if weak is None or strong is None:
        fail("with --registry, name the models with --weak and --strong")
    from llmroute.registry.loader import load_registry

    models = load_registry(registry).registry.models
    found = []
    for name in (weak, strong):
        if name not in models:
            fail(f"model {name!r} is not in {registry}; models: {', '.join(sorted(models))}")
        price = models[name].price
        found.append(price.input + price.output)  # per 1M input + 1M output tokens
    if found[1] <= 0:
        fail(f"the strong model {strong!r} has no price in {registry}")
    return found[0], found[1]


def _accept(
    gate: str, artifact: str, enc: Encoder, prompts: tuple[str, ...], answers: tuple[str, ...]
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], float | None]:
    import numpy as np

    from llmroute.gates.cascade_bench import heuristic_accept, random_accept
    from llmroute.gates.learned import LearnedGateModel

    if gate == "learned":
        model = LearnedGateModel.load(artifact, enc)
        return model.score(prompts, answers), model.threshold
    if gate == "random":
        return random_accept(prompts), None
    if gate == "heuristic":
        return heuristic_accept(prompts, answers), 0.5
    return np.zeros(len(prompts)), None  # oracle: replaced by the labels by the caller


def _gate_folder(gate: GateKind, artifact: str, encoder: str) -> Path | None:
    """The learned gate's directory: `artifact`, or for builtin the one shipped for
    `encoder` (it records its training rows too); None for the other gates."""
    if gate != GateKind.learned:
        return None
    if artifact != "builtin":
        return Path(artifact)
    from llmroute.gates.learned import builtin_gate_dir

    return builtin_gate_dir(encoder)


def _trained_on(folder: Path | None) -> dict[str, Any]:
    """What `llmroute train gate` recorded of its data ({} for gates it did not train)."""
    if folder is None:
        return {}
    from llmroute.gates.learned import read_gate_meta

    trained_on = read_gate_meta(folder).get("trained_on", {})
    return trained_on if isinstance(trained_on, dict) else {}


def _split_seed(trained_on: dict[str, Any]) -> int:
    """The seed the gate's data was split with, so that the rows benched as `test` are
    the ones its training left out (`train gate --seed N`), not seed 0's."""
    seed = (trained_on.get("split") or {}).get("seed", 0)
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def _unseen(
    trained_on: dict[str, Any],
    folder: Path | None,
    prompts: tuple[str, ...],
    idx: np.ndarray[Any, np.dtype[np.intp]],
    data: Path,
    split: CascadeSplit,
) -> tuple[np.ndarray[Any, np.dtype[np.intp]], int]:
    """`idx` less the rows whose prompts the gate was trained on (or chose its settings
    with), and how many those were, as `bench` leaves them out: a reordered, edited or
    merged copy of the training file cannot pass them off as held out. `--split all` on
    the training file itself keeps them: asked for, and said so by the split's name."""
    from llmroute.difficulty.calibration import file_digest, seen_mask
    from llmroute.gates.learned import META_FILE
    from llmroute.jsonl import is_stdin, shown

    if not trained_on or folder is None:
        return idx, 0
    same_file = not is_stdin(data) and trained_on.get("sha256") == file_digest(data)
    if same_file and split == "all":
        return idx, 0
    meta_file = str(folder / META_FILE)
    known = seen_mask(
        trained_on.get("seen_prompts"),
        [prompts[i] for i in idx],
        what="learned gate",
        meta_file=meta_file,
    )
    if known is None:
        if not same_file:  # there, the recorded seed's test split is what it left out
            err_console.print(
                f"warning: {escape(meta_file)} records no hashes of its training prompts "
                "(trained by an older llmroute): rows of an edited copy of its training "
                "file count as held out; retrain the gate to have them left out",
                soft_wrap=True,
            )
        return idx, 0
    if known.all():
        fail(
            f"every {split} row of {shown(data)} has a prompt the gate was trained on (or "
            "chosen with): there is nothing unseen to measure it on"
        )
    return idx[~known], int(known.sum())


def _router_scores(
    kind: str, rows: Any, enc: Encoder, train_idx: Any, val_idx: Any, eval_idx: Any
) -> tuple[Any, str] | None:
    """Train a difficulty router on the same train and validation splits and score
    the evaluated rows; None (with a note) when there are too few rows."""
    from llmroute.difficulty.data import LabelledPrompts
    from llmroute.difficulty.train import embed, train_router
    from llmroute.errors import DataError

    labelled = LabelledPrompts(
        rows.prompts,
        rows.weak,
        rows.strong,
        tuple(str(i) for i in range(len(rows))),
        (None,) * len(rows),
    )
    try:
        router, _ = train_router(kind, labelled, enc, train_idx=train_idx, val_idx=val_idx)
    except DataError as exc:
        err_console.print(f"no router comparison: {exc}")
        return None
    subset = labelled.subset(eval_idx)
    return router.score(embed(enc, subset.prompts), subset.prompts), f"router:{kind}"


@app.command("bench-cascade")
def bench_cascade(
    data: GateDataOption,
    gate: Annotated[
        GateKind, typer.Option(help="learned, random, oracle or heuristic.")
    ] = GateKind.learned,
    artifact: Annotated[
        str, typer.Option(help="A gate directory from `llmroute train gate`, or builtin.")
    ] = "builtin",
    encoder: Annotated[
        str | None,
        typer.Option(
            help="Encoder of the builtin gate and of the router comparison (default "
            f"{_ENCODER_DEFAULT}; a trained gate's own, which another is refused for)."
        ),
    ] = None,
    split: Annotated[
        CascadeSplit, typer.Option(help="test (the held-out 20%) or all.")
    ] = CascadeSplit.test,
    price_weak: Annotated[float | None, typer.Option(help="Cost of one weak call.")] = None,
    price_strong: Annotated[float | None, typer.Option(help="Cost of one strong call.")] = None,
    registry: Annotated[
        Path | None, typer.Option(help="Take prices from this registry's --weak/--strong.")
    ] = None,
    weak: Annotated[str | None, typer.Option(help="The weak model's name in --registry.")] = None,
    strong: Annotated[
        str | None, typer.Option(help="The strong model's name in --registry.")
    ] = None,
    router: Annotated[
        CompareRouter,
        typer.Option(
            help="Difficulty router to compare with (trained on the train split): random, "
            "linear, knn, mf, mlp or none.",
            case_sensitive=False,
        ),
    ] = CompareRouter.mlp,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Write the curves: .png, or .html (interactive).")
    ] = None,
) -> None:
    """Escalation rate vs accuracy and cost of a cascade gated by GATE, beside random
    escalation, the oracle gate and a routing-only difficulty router; APGR, the escalation
    reaching 95% of the strong model's accuracy and the break-even escalation rate.
    Without prices the relative prices are 1 (weak) and 10 (strong)."""
    import numpy as np

    from llmroute.difficulty.plot import SUFFIXES
    from llmroute.gates.cascade_bench import evaluate_cascade, oracle_accept
    from llmroute.gates.gate_train import gate_split, read_gate_data
    from llmroute.jsonl import is_stdin, shown

    kind = router.value
    check_plot_path(plot, SUFFIXES)
    if encoder is not None:
        builtin_name(encoder)
    prices = _prices(price_weak, price_strong, registry, weak, strong)
    folder = _gate_folder(gate, artifact, encoder or _ENCODER_DEFAULT)
    trained_on = _trained_on(folder)
    # the shipped gate for builtin:minilm records builtin:minilm-int8: keep the one asked for
    spec = encoder or _ENCODER_DEFAULT
    if artifact != "builtin" and "encoder_spec" in trained_on:
        spec = str(trained_on["encoder_spec"])
        if encoder is not None and builtin_name(encoder) != spec.rpartition(":")[2]:
            fail(
                f"--encoder {encoder}: the gate in {artifact} was trained with {spec}, and "
                "its rows (the router comparison's too) are embedded with that encoder: "
                "leave --encoder out"
            )
    rows = read_gate_data(data, need_strong=True)
    assert rows.strong is not None
    train_idx, val_idx, test_idx = gate_split(rows, seed=_split_seed(trained_on))
    idx = test_idx if split == "test" else np.arange(len(rows))
    if idx.size == 0:
        fail(f"no {split} rows in {shown(data)} ({counted(len(rows), 'row')})")
    idx, left_out = _unseen(trained_on, folder, rows.prompts, idx, data, split)
    prompts = tuple(rows.prompts[i] for i in idx)
    answers = tuple(rows.answers[i] for i in idx)
    w, s = rows.weak[idx], rows.strong[idx]
    if w.mean() == s.mean():
        fail("weak and strong accuracy are equal on these rows: the gap is undefined")
    enc = _encoder(spec)
    accept, threshold = _accept(gate, artifact, enc, prompts, answers)
    if gate == "oracle":
        accept = oracle_accept(w)
    compared = None if kind == "none" else _router_scores(kind, rows, enc, train_idx, val_idx, idx)
    result = evaluate_cascade(
        gate.value,
        accept,
        w,
        s,
        prices=prices,
        router_scores=None if compared is None else compared[0],
        router_name="router" if compared is None else compared[1],
    )
    curves = result.pop("curves")
    seen = f"; the {left_out} whose prompts the gate saw in training left out" if left_out else ""
    result["rows"] = f"{split} split ({idx.size} of {len(rows)}{seen})"
    result["left_out_seen"] = left_out
    if threshold is not None:
        escalate = accept < threshold
        result["at_gate_threshold"] = {
            "threshold": threshold,
            "escalation": float(escalate.mean()),
            "accuracy": float(np.where(escalate, s, w).mean()),
        }
    if plot is not None:
        from llmroute.difficulty.plot import plot_curves

        where = shown(data) if is_stdin(data) else data.name
        title = f"cascade ({gate} gate) on {where}, {result['rows']}; x = strong-call share"
        plot_curves(plot, curves, result["weak_accuracy"], result["strong_accuracy"], title=title)
    if as_json:
        typer.echo(json.dumps(json_safe(result), sort_keys=True, allow_nan=False))
        return
    console = Console(emoji=False)
    _print(console, result)
    if plot is not None:
        console.print(f"curves written to {escape(str(plot))}", soft_wrap=True)


def _print(console: Console, result: dict[str, Any]) -> None:
    """Costs and prices as `llmroute report` writes dollars (`llmroute.money.dollars`):
    fixed point, never an exponent (``0.000019``, not ``1.88e-05``)."""
    prices = result["prices"]
    note = " (default relative prices)" if prices["default"] else ""
    console.print(
        f"{result['gate']} gate: n={result['n']} ({result['rows']}); weak accuracy "
        f"{result['weak_accuracy']:.1%}, strong {result['strong_accuracy']:.1%}; prices weak "
        f"{dollars(prices['weak'])}, strong {dollars(prices['strong'])}{note}"
    )
    table = Table("threshold", "escalation", "accuracy", "cost", "random escalation accuracy")
    for row in result["table"]:
        table.add_row(
            f"{row['threshold']:.2f}",
            f"{row['escalation']:.1%}",
            f"{row['accuracy']:.1%}",
            dollars(row["cost"]),
            f"{row['random_accuracy']:.1%}",
        )
    console.print(table)
    ci = result.get("apgr_ci95")
    ci_text = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    console.print(
        f"APGR {result['apgr']:.3f}{ci_text}; random {result['random']['apgr']:.3f}, "
        f"oracle gate {result['oracle']['apgr']:.3f}"
    )
    console.print(
        f"escalation at 95% of strong accuracy: {result['escalation_at_95pct_quality']:.1%} "
        f"(cost {dollars(result['cost_at_95pct_quality'])}; random "
        f"{result['random']['escalation_at_95pct_quality']:.1%}); break-even escalation "
        f"{result['break_even_escalation']:.1%}"
    )
    if "router" in result:
        r = result["router"]
        console.print(
            f"{r['name']}: APGR {r['apgr']:.3f}; strong-call share at 95% of strong accuracy "
            f"{r['strong_share_at_95pct_quality']:.1%} (cost {dollars(r['cost_at_95pct_quality'])})"
        )
