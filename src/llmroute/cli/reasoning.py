"""`llmroute train reasoning`: the reasoning gate's learned scorer (docs/reasoning.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from llmroute.cli._app import check_artifact_output, counted, data_file, err_console
from llmroute.cli.difficulty import _encoder, train_app

__all__ = ["train_reasoning"]


@train_app.command("reasoning")
def train_reasoning(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help='JSONL with text and label ("reasoning" or "direct", in any case).',
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")],
    encoder: Annotated[
        str, typer.Option(help="The encoder; it must match the registry's at serve time.")
    ] = "builtin:static",
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test split.")] = 0,
    max_fpr: Annotated[
        float,
        typer.Option(help="The threshold keeps the validation false-positive rate at most this."),
    ] = 0.05,
) -> None:
    """Train a logistic scorer over the encoder's embeddings: C and the threshold are
    chosen on the validation split; the test split is left alone. Use the directory as
    `reasoning.scorer` in the registry."""
    from llmroute.difficulty.calibration import file_digest, seen_prompts
    from llmroute.reasoning import read_reasoning, save_scorer
    from llmroute.reasoning.artifact import META_FILE
    from llmroute.reasoning.train import fit_on_data

    if not 0.0 < max_fpr < 1.0:
        raise typer.BadParameter(f"must be between 0 and 1, got {max_fpr}", param_hint="--max-fpr")
    data_file(data)
    check_artifact_output(output, META_FILE)
    labelled = read_reasoning(data)
    enc = _encoder(encoder)
    started = time.perf_counter()
    with err_console.status("embedding and training"):
        fitted = fit_on_data(labelled, enc, seed=seed, max_fpr=max_fpr)
    trained = fitted.trained
    trained_on = {
        "file": data.name,
        "sha256": file_digest(data),
        "rows": {"train": len(fitted.train), "val": len(fitted.val), "test": len(fitted.test)},
        "split": {"seed": seed, "fractions": [0.6, 0.2, 0.2], "by": "group"},
        "encoder_spec": encoder,
        # C and the threshold were chosen on validation: those rows are not held out either
        "seen_prompts": seen_prompts([labelled.texts[i] for i in (*fitted.train, *fitted.val)]),
    }
    metrics = {"validation": trained.validation, "c_sweep": trained.sweep}
    save_scorer(trained.scorer, output, hyper=trained.hyper, trained_on=trained_on, metrics=metrics)
    val = trained.validation
    typer.echo(
        f"trained on {counted(len(fitted.train), 'row')} in {time.perf_counter() - started:.1f}s "
        f"(C={trained.hyper['c']:g}); validation ({counted(int(val['rows']), 'row')}): AUC "
        f"{val['auc']:.3f}, TPR {val['tpr']:.3f}, FPR {val['fpr']:.3f} at threshold "
        f"{trained.scorer.threshold:.4f}; written to {output}"
    )
