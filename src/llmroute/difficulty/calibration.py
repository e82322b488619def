"""Thresholds from a share of strong calls, and which rows of a file a router may be
calibrated or measured on.

A router's artifact records the file it was trained on (its SHA-256) and the split
recipe; run on that same file, benchmarks use the test rows and calibration the
validation rows, or the test rows too when the router was fitted on train + validation
(cross-validated, the default): calibration picks a threshold, it does not change the
curve a benchmark reports. So nothing is tuned or reported on rows the router was fitted
to. Any other file is unseen data, and all of it is used: asking for its `val` or `test`
split is an error, not silently ignored. Which prompts the router saw (every row of its
file but the test split) is recorded too, as 64-bit hashes (`seen_prompts`): another
file holding some of them (an edited copy, a file merged from several) has those rows
left out, so an edit cannot pass training rows off as unseen.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from llmroute.difficulty.data import LabelledPrompts, split
from llmroute.encoders.paths import file_digest
from llmroute.errors import ConfigError

__all__ = [
    "QUANTILES",
    "Split",
    "file_digest",
    "held_out",
    "quantiles_of",
    "seen_mask",
    "seen_prompts",
    "threshold_from",
]

QUANTILES = 101  # score quantiles stored with a router, for `strong_share` at load time
Split = Literal["auto", "val", "test", "all"]


def quantiles_of(scores: npt.ArrayLike) -> list[float]:
    values = np.quantile(np.asarray(scores, dtype=np.float64), np.linspace(0, 1, QUANTILES))
    return [float(v) for v in values]


def threshold_from(meta: Mapping[str, Any], strong_share: float) -> float:
    """The threshold that sent `strong_share` of the router's held-out (or, cross-fitted,
    its own train + validation) prompts to the strong model, interpolated between the
    stored quantiles."""
    quantiles = meta.get("trained_on", {}).get("val_score_quantiles")
    if not isinstance(quantiles, list) or len(quantiles) != QUANTILES:
        raise ConfigError("the router artifact has no validation score quantiles; retrain it")
    # An edited router.json: a NaN made the threshold NaN (every request weak, the
    # decision's confidence NaN) and a string raised a TypeError from numpy.
    if not all(isinstance(q, int | float) and not isinstance(q, bool) for q in quantiles):
        raise ConfigError(
            "the router artifact's validation score quantiles are corrupt (not all numbers); "
            "retrain it"
        )
    try:
        values = np.asarray(quantiles, dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        values = np.full(QUANTILES, np.inf)
    if not np.isfinite(values).all() or (np.diff(values) < 0).any():
        raise ConfigError(
            "the router artifact's validation score quantiles are corrupt (not finite, or "
            "not in increasing order); retrain it"
        )
    if not 0.0 < strong_share < 1.0:
        raise ConfigError(f"strong_share must be between 0 and 1, got {strong_share}")
    return float(np.interp(1.0 - strong_share, np.linspace(0, 1, QUANTILES), values))


def _hashes(prompts: Sequence[str]) -> npt.NDArray[np.uint64]:
    digests = b"".join(
        hashlib.blake2b(p.encode("utf-8", "surrogatepass"), digest_size=8).digest() for p in prompts
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def seen_prompts(prompts: Sequence[str]) -> dict[str, str]:
    """The record of the prompts a router saw (for `trained_on`): their sorted 64-bit
    BLAKE2b hashes, base64 (8 bytes a prompt: 80 KB for MMLU's 9,864)."""
    packed = np.unique(_hashes(prompts)).astype("<u8").tobytes()
    return {"hash": "blake2b-64", "b64": base64.b64encode(packed).decode("ascii")}


def seen_mask(
    record: object, prompts: Sequence[str], *, what: str, meta_file: str | None
) -> npt.NDArray[np.bool_] | None:
    """Which of `prompts` the artifact's `seen_prompts` record holds; None when it holds
    no record (an artifact from before they were recorded). `what` ("router artifact")
    and `meta_file` name the artifact in the error about a corrupt record."""
    if not isinstance(record, Mapping) or not isinstance(record.get("b64"), str):
        return None
    try:  # validated: "!!!" decoded to no hashes, every seen row then counted as unseen
        packed = base64.b64decode(record["b64"], validate=True)
        seen = np.frombuffer(packed, dtype="<u8").astype(np.uint64)
    except ValueError as exc:  # binascii.Error too
        raise ConfigError(
            f"corrupt {what}: trained_on.seen_prompts.b64 is not base64 of 8-byte "
            f"hashes ({exc}); retrain it",
            file=meta_file,
        ) from None
    return np.isin(_hashes(prompts), seen)


def _unseen(
    trained: Mapping[str, Any], data: LabelledPrompts, path: Path, meta_file: str | None
) -> tuple[npt.NDArray[np.intp], str]:
    """Every row of another file but those whose prompt the router saw in training."""
    everything = np.arange(len(data))
    known = seen_mask(
        trained.get("seen_prompts"), data.prompts, what="router artifact", meta_file=meta_file
    )
    if known is None or not known.any():
        return everything, "all rows (a file it was not trained on)"
    kept = everything[~known]
    if kept.size == 0:
        raise ConfigError(
            f"every prompt of {path.name} is one the router was trained on (or chosen "
            "with): there is nothing unseen to measure it on",
            file=str(path),
        )
    seen = int(known.sum())
    return kept, (
        f"{kept.size} of {len(data)} rows: the {seen} whose prompt{'s' * (seen != 1)} it saw "
        f"in training {'are' if seen != 1 else 'is'} left out"
    )


def held_out(
    meta: Mapping[str, Any],
    data: LabelledPrompts,
    path: Path,
    which: Split,
    default: Split,
    *,
    meta_file: str | None = None,
) -> tuple[npt.NDArray[np.intp], str]:
    """The rows of `data` to use, and a phrase saying which ones (for the output).
    `meta_file` (the artifact's router.json) is named by errors about what it records."""
    trained = meta.get("trained_on", {})
    same_file = trained.get("sha256") == file_digest(path)
    fitted_on_val = trained.get("fitted_on") == "train+val"
    if not same_file and which in ("val", "test"):
        name = str(trained.get("file") or "not recorded")
        other = path.name + (" (its SHA-256 differs)" if name == path.name else "")
        raise ConfigError(
            f"--split {which} applies to the file the router was trained on ({name}); "
            f"{other} is another: all its rows are used (drop --split, or give --split all)"
        )
    choice = default if which == "auto" else which
    if which == "auto" and choice == "val" and fitted_on_val:
        choice = "test"
    if same_file and trained.get("fitted_on") == "all" and choice != "all":
        raise ConfigError(
            f"this router was fitted on every row of {path.name} (--all-rows): it has no "
            "held-out rows there; use other data, or --split all to score it on its own rows"
        )
    if not same_file or choice == "all":
        if same_file:
            return np.arange(len(data)), "all rows, including those it was trained on"
        return _unseen(trained, data, path, meta_file)
    recipe = trained.get("split", {})
    try:  # an edited router.json: a one-line error, not a traceback
        parts = split(
            data,
            seed=int(recipe.get("seed", 0)),
            fractions=tuple(recipe.get("fractions", (0.6, 0.2, 0.2))),
        )
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:  # seed Infinity
        raise ConfigError(
            f"corrupt router artifact: trained_on.split ({exc}); retrain it", file=meta_file
        ) from None
    index = {"val": 1, "test": 2}[choice]
    names = {"val": "validation", "test": "test"}
    if not len(parts[index]):  # a passage's questions share a side: few passages, few sides
        raise ConfigError(
            f"the {names[choice]} split of {path.name} has no rows (the router's training "
            "left none there): give --split all to use every row, those it was trained on "
            "included, or other data"
        )
    seen = " (rows it was fitted on)" if choice == "val" and fitted_on_val else ""
    return parts[index], f"the {names[choice]} split of its training file{seen}"
