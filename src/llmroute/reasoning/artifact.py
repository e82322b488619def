"""The learned reasoning scorer and its artifact: ``reasoning.json`` + ``weights.npz``.

The scorer is a logistic head over the request embedding: ``p = σ(w·x + b)``, one dot
product per request. The JSON records the encoder identity it was trained with, the
threshold chosen on the validation split, the hyper-parameters, the data summary and the
validation (and test) numbers; the npz holds ``weights`` and ``bias``, read with
``allow_pickle=False``. Scores only mean something for the encoder they were trained
with, so loading with another encoder is refused. The comparison uses the encoder's
weights (the identity before ``;``): ``max_tokens`` and ``truncate`` only change how
much of a long text is read, not what a vector means.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmroute import __version__
from llmroute.artifact_files import check_folder, missing_meta, write_artifact
from llmroute.encoders.base import weights_identity, without_credentials
from llmroute.errors import ConfigError

__all__ = [
    "ARRAYS_FILE",
    "BUILTIN_DIR",
    "FORMAT",
    "META_FILE",
    "ReasoningScorer",
    "builtin_scorer_dir",
    "load_scorer",
    "read_scorer_meta",
    "save_scorer",
    "weights_identity",
]

META_FILE = "reasoning.json"
ARRAYS_FILE = "weights.npz"
FORMAT = 1
BUILTIN_DIR = Path(__file__).parent / "data"
_BUILTIN = {"static": "static", "minilm-int8": "minilm-int8", "minilm": "minilm-int8"}
"""Built-in encoder → shipped artifact. ``minilm`` (fp32) uses the int8 scorer: the same
weights, quantised (docs/reasoning.md measures the difference)."""

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ReasoningScorer:
    """``P(reasoning) = σ(weights · embedding + bias)`` and the threshold it was tuned at."""

    weights: F32  # (dim,)
    bias: float
    threshold: float
    encoder: str

    def score(self, embedding: F32) -> float:
        """The probability for one unit-norm embedding (shape (dim,))."""
        z = float(self.weights @ embedding) + self.bias
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def scores(self, embeddings: F32) -> npt.NDArray[np.float64]:
        """Probabilities for an (n, dim) matrix."""
        z = embeddings.astype(np.float64) @ self.weights.astype(np.float64) + self.bias
        out: npt.NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * z))
        return out


def builtin_scorer_dir(encoder_identity: str) -> tuple[Path, str]:
    """The shipped artifact for a built-in encoder and the identity it must be checked
    against; ConfigError when the encoder is not one we ship a scorer for."""
    weights = weights_identity(encoder_identity)
    kind, _, rest = weights.partition(":")
    name, _, digest = rest.partition("@")
    folder = _BUILTIN.get(name) if kind == "builtin" else None
    if folder is None:
        raise ConfigError(
            f"reasoning.scorer 'builtin' ships for builtin:static, builtin:minilm-int8 and "
            f"builtin:minilm only, and this registry's encoder is {encoder_identity!r}: "
            "train one with `llmroute train reasoning --data FILE --encoder ... -o DIR` and "
            "set reasoning.scorer to DIR, or set reasoning.scorer to null (rules only)",
            field="reasoning.scorer",
        )
    expected = f"builtin:{folder}@{digest}" if digest else f"builtin:{folder}"
    return BUILTIN_DIR / folder, expected


def save_scorer(
    scorer: ReasoningScorer,
    directory: str | os.PathLike[str],
    *,
    hyper: dict[str, Any],
    trained_on: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Write the artifact into `directory` (created if needed); returns the directory."""
    folder = Path(directory)
    meta = {
        "format": FORMAT,
        "kind": "logistic",
        "encoder": scorer.encoder,
        "dim": int(scorer.weights.shape[0]),
        "threshold": scorer.threshold,
        "llmroute_version": __version__,
        "hyper": hyper,
        "trained_on": trained_on,
        "metrics": metrics,
    }
    arrays = {
        "weights": scorer.weights.astype(np.float32),
        "bias": np.array([scorer.bias], dtype=np.float64),
    }
    return write_artifact(folder, ARRAYS_FILE, arrays, META_FILE, meta, what="reasoning scorer")


def read_scorer_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The artifact's ``reasoning.json``; ConfigError naming the path if missing or
    corrupt."""
    check_folder(directory, what="reasoning scorer", command="llmroute train reasoning")
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise missing_meta(
            path, what="reasoning scorer", command="llmroute train reasoning"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"corrupt reasoning scorer: {exc}", file=str(path)) from exc
    if not isinstance(meta, dict) or not {"encoder", "threshold"} <= meta.keys():
        raise ConfigError(
            "corrupt reasoning scorer: needs 'encoder' and 'threshold'", file=str(path)
        )
    if meta.get("format") != FORMAT:
        raise ConfigError(
            f"reasoning scorer format {meta.get('format')!r} is not {FORMAT}; retrain it",
            file=str(path),
        )
    return meta


def load_scorer(
    directory: str | os.PathLike[str],
    *,
    encoder_identity: str | None = None,
    dim: int | None = None,
) -> ReasoningScorer:
    """Load a saved scorer. With `encoder_identity`, refuse (ConfigError) one trained
    with other encoder weights, and with `dim` (the encoder's) one of another width; a
    missing or corrupt artifact (non-finite numbers included: the gate would never fire)
    is a ConfigError too."""
    meta = read_scorer_meta(directory)
    meta_path = str(Path(directory) / META_FILE)
    trained = without_credentials(str(meta["encoder"]))
    if encoder_identity is not None and weights_identity(trained) != weights_identity(
        encoder_identity
    ):
        raise ConfigError(
            f"reasoning scorer was trained with encoder {trained!r}, but the encoder in use "
            f"is {encoder_identity!r}; train one for this encoder with `llmroute train "
            "reasoning --encoder ...` or use the same encoder",
            file=meta_path,
        )
    npz = Path(directory) / ARRAYS_FILE
    try:
        with np.load(npz, allow_pickle=False) as stored:
            weights = np.ascontiguousarray(stored["weights"], dtype=np.float32)
            bias = float(np.asarray(stored["bias"]).reshape(-1)[0])
        threshold = float(meta["threshold"])
    except FileNotFoundError:
        raise ConfigError("reasoning scorer weights are missing", file=str(npz)) from None
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"corrupt reasoning scorer: {exc}", file=str(npz)) from exc
    width = meta.get("dim", weights.shape[0]) if dim is None else dim
    if weights.ndim != 1 or weights.shape[0] != width:
        raise ConfigError(
            f"corrupt reasoning scorer: weights of shape {weights.shape}, the encoder's "
            f"vectors {width}-wide",
            file=str(npz),
        )
    if not (np.isfinite(weights).all() and math.isfinite(bias)):
        raise ConfigError("corrupt reasoning scorer: weights are not finite", file=str(npz))
    if not 0.0 <= threshold <= 1.0:  # NaN too
        raise ConfigError(
            f"corrupt reasoning scorer: threshold {threshold} is not in [0, 1]", file=meta_path
        )
    return ReasoningScorer(weights, bias, threshold, trained)
