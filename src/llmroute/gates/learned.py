"""The learned cascade gate: P(the cheap model's answer is acceptable) from the prompt, the
answer and cheap checks of the answer, and its artifact (``gate.json`` + ``weights.npz``).

The model is a logistic head ``p = σ(w·x + b)`` over a design vector ``x`` built from parts
chosen on validation (`gate_train.py`):

- ``checks``: standardised answer features (`CHECK_NAMES`): length, a final ``#### N`` or
  "the answer is", signs of truncation, the arithmetic of ``<<a*b=c>>`` annotations and of
  plain ``a x b = c`` steps re-computed, the final number's agreement with the last result,
  hedging words;
- ``answer`` / ``prompt``: the encoder's unit embeddings of each, times `emb_scale`;
- ``product`` / ``diff``: their element-wise product and difference, times `emb_scale`.

The JSON records the encoder identity it was trained with, the parts, the hyper-parameters,
the threshold chosen on validation and the numbers; the npz holds the arrays, read with
``allow_pickle=False``. Scores only mean something for the encoder the head was trained
with, so loading with another encoder's weights is refused (``max_tokens``/``truncate``
after ``;`` in the identity only change how much of a long text is read).
"""

from __future__ import annotations

import ast
import json
import math
import operator
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmroute import __version__
from llmroute.artifact_files import check_folder, missing_meta, write_artifact
from llmroute.encoders.base import Encoder, weights_identity, without_credentials
from llmroute.errors import ConfigError

__all__ = [
    "ARRAYS_FILE",
    "BUILTIN_DIR",
    "CHECK_NAMES",
    "FORMAT",
    "META_FILE",
    "PARTS",
    "LearnedGateModel",
    "answer_checks",
    "builtin_gate_dir",
    "checks_matrix",
    "design_matrix",
    "expected_width",
    "read_gate_meta",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

META_FILE = "gate.json"
ARRAYS_FILE = "weights.npz"
FORMAT = 1
BUILTIN_DIR = Path(__file__).parent / "data"
_BUILTIN = {"static": "static", "minilm-int8": "minilm-int8", "minilm": "minilm-int8"}
"""Built-in encoder → shipped artifact (``minilm`` fp32 uses the int8 head, as the
reasoning scorer does)."""

PARTS = ("checks", "answer", "prompt", "product", "diff")

CHECK_NAMES = (
    "log_chars",
    "log_lines",
    "has_final_marker",
    "has_answer_is",
    "no_final_answer",
    "truncated",
    "unclosed_annotation",
    "log_annotations",
    "bad_annotations",
    "bad_annotation_share",
    "bad_carried_result",
    "bad_plain_steps",
    "final_not_integer",
    "final_matches_last_result",
    "final_in_prompt",
    "hedges",
    "log_prompt_numbers",
    "empty",
)

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
_ANSWER_IS = re.compile(r"the (?:final )?answer is:?\s*\$?\s*(-?[\d,]*\.?\d+)?", re.IGNORECASE)
_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>\s*\$?(-?[\d,]*\.?\d+)?")
_PLAIN = re.compile(
    r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)\s*([+\-x*×/])\s*\$?(\d[\d,]*(?:\.\d+)?)\s*=\s*\$?"
    r"(-?\d[\d,]*(?:\.\d+)?)"
)
_NUMBERS = re.compile(_NUMBER)
_HEDGES = re.compile(
    r"\b(?:approximately|roughly|assum\w*|not sure|unclear|cannot|can't|impossible|"
    r"however|estimate\w*|might|perhaps|probably|i think|not possible|ambiguous)\b|\?",
    re.IGNORECASE,
)
_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.FloorDiv: operator.floordiv,
}
_PLAIN_OPS: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "x": operator.mul,
    "*": operator.mul,
    "×": operator.mul,
    "/": operator.truediv,
}


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _evaluate(node: ast.AST) -> float:
    """Arithmetic only (numbers, + - * / % //, ** with a small exponent, unary minus);
    anything else raises ValueError, so an annotation never runs code."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > 12 or abs(left) > 1e6:
                raise ValueError("exponent too large")
            return float(left**right)
        op = _BINOPS.get(type(node.op))
        if op is not None:
            return op(left, right)
    raise ValueError("not arithmetic")


def _arith(expression: str) -> float | None:
    text = expression.replace(",", "").replace("$", "").replace("x", "*").replace("×", "*")
    text = text.replace("%", "/100").strip()
    if not text or len(text) > 200:
        return None
    try:
        value = _evaluate(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None
    return value if math.isfinite(value) else None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= max(0.011, 1e-4 * abs(b))


def _annotations(answer: str) -> tuple[int, int, int, float | None]:
    """(annotations, wrong ones, carried results that differ, the last stated result)."""
    total = wrong = carried = 0
    last: float | None = None
    for match in _ANNOTATION.finditer(answer):
        total += 1
        stated = _number(match.group(2))
        computed = _arith(match.group(1))
        if stated is not None and computed is not None and not _close(computed, stated):
            wrong += 1
        after = _number(match.group(3))
        if stated is not None and after is not None and not _close(after, stated):
            carried += 1
        last = stated if stated is not None else last
    return total, wrong, carried, last


def _bad_plain_steps(answer: str) -> int:
    bad = 0
    for match in _PLAIN.finditer(answer):
        a, b, c = (_number(match.group(i)) for i in (1, 3, 4))
        if a is None or b is None or c is None:
            continue
        try:
            value = _PLAIN_OPS[match.group(2)](a, b)
        except ZeroDivisionError:
            continue
        if not _close(value, c):
            bad += 1
    return bad


def _final(answer: str) -> tuple[float | None, bool, bool]:
    """(the final number, a ``####`` marker seen, "the answer is" seen)."""
    marker = _FINAL.findall(answer)
    said = _ANSWER_IS.findall(answer)
    value = _number(marker[-1]) if marker else None
    if value is None and said:
        value = _number(said[-1] or None)
    return value, bool(marker), bool(said)


def answer_checks(prompt: str, answer: str) -> F64:
    """The raw (unscaled) `CHECK_NAMES` features of one answer."""
    text = answer.strip()
    total, wrong, carried, last = _annotations(text)
    final, marker, said = _final(text)
    prompt_numbers = {_number(n) for n in _NUMBERS.findall(prompt)} - {None}
    truncated = not marker and not said and bool(text) and text[-1] not in ".!)]"
    values = [
        math.log1p(len(text)),
        math.log1p(text.count("\n")),
        float(marker),
        float(said),
        float(final is None),
        float(truncated),
        float(text.count("<<") > text.count(">>")),
        math.log1p(total),
        float(wrong > 0),
        wrong / total if total else 0.0,
        float(carried > 0),
        float(_bad_plain_steps(text) > 0),
        float(final is not None and not _close(final, round(final))),
        float(final is not None and last is not None and _close(final, last)),
        float(final is not None and final in prompt_numbers),
        math.log1p(len(_HEDGES.findall(text))),
        math.log1p(len(prompt_numbers)),
        float(not text),
    ]
    return np.asarray(values, dtype=np.float64)


def checks_matrix(prompts: Sequence[str], answers: Sequence[str]) -> F64:
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        return np.zeros((0, len(CHECK_NAMES)), dtype=np.float64)
    return np.stack([answer_checks(p, a) for p, a in zip(prompts, answers, strict=True)])


def design_matrix(
    parts: Sequence[str],
    checks: F64,
    answer_emb: F32,
    prompt_emb: F32,
    *,
    mean: F64,
    scale: F64,
    emb_scale: float,
) -> F64:
    """The model input: the chosen parts side by side (checks standardised by mean/scale,
    embedding parts multiplied by `emb_scale`)."""
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise ValueError(f"gate parts must be a non-empty subset of {PARTS}, got {list(parts)}")
    a = np.asarray(answer_emb, dtype=np.float64)
    p = np.asarray(prompt_emb, dtype=np.float64)
    blocks = {
        "checks": lambda: (checks - mean) / scale,
        "answer": lambda: a * emb_scale,
        "prompt": lambda: p * emb_scale,
        "product": lambda: a * p * emb_scale * math.sqrt(a.shape[1]),
        "diff": lambda: (a - p) * emb_scale,
    }
    return np.hstack([blocks[name]() for name in PARTS if name in parts])


def _sigmoid(z: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def builtin_gate_dir(encoder_identity: str) -> Path:
    """The shipped gate for a built-in encoder; ConfigError for any other encoder."""
    kind, _, rest = weights_identity(encoder_identity).partition(":")
    folder = _BUILTIN.get(rest.partition("@")[0]) if kind == "builtin" else None
    if folder is None:
        raise ConfigError(
            "the 'builtin' learned gate ships for builtin:static, builtin:minilm-int8 and "
            f"builtin:minilm only, and the encoder in use is {encoder_identity!r}: train one "
            "with `llmroute train gate --data FILE --encoder ... -o DIR` and load DIR"
        )
    return BUILTIN_DIR / folder


@dataclass(frozen=True, eq=False)
class LearnedGateModel:
    """``P(acceptable) = σ(weights · design(prompt, answer) + bias)``; accept the cheap
    answer when the probability is at least `threshold` (chosen on validation)."""

    encoder: Encoder
    parts: tuple[str, ...]
    weights: F64
    bias: float
    mean: F64
    scale: F64
    emb_scale: float
    threshold: float
    meta: dict[str, Any]

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> F64:
        """The probability that each answer is acceptable, shape (n,)."""
        checks = checks_matrix(prompts, answers)
        n = len(prompts)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        dim = self.encoder.dim
        uses = set(self.parts) - {"checks"}
        answer_emb = (
            self.encoder.encode(list(answers))
            if uses & {"answer", "product", "diff"}
            else np.zeros((n, dim), np.float32)
        )
        prompt_emb = (
            self.encoder.encode(list(prompts))
            if uses & {"prompt", "product", "diff"}
            else np.zeros((n, dim), np.float32)
        )
        return self.score_embedded(checks, answer_emb, prompt_emb)

    def score_embedded(self, checks: F64, answer_emb: F32, prompt_emb: F32) -> F64:
        """`score` from precomputed raw checks and embeddings (for offline evaluation)."""
        x = design_matrix(
            self.parts,
            checks,
            answer_emb,
            prompt_emb,
            mean=self.mean,
            scale=self.scale,
            emb_scale=self.emb_scale,
        )
        return _sigmoid(x @ self.weights + self.bias)

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder) -> LearnedGateModel:
        """Load a gate directory, or ``"builtin"`` for the one shipped for `encoder`.

        ConfigError (naming both encoders) when it was trained with other encoder weights,
        or (naming the file) when it is missing or malformed."""
        folder = builtin_gate_dir(encoder.identity) if str(path) == "builtin" else Path(path)
        meta = read_gate_meta(folder)
        meta_path = str(folder / META_FILE)
        trained = without_credentials(str(meta["encoder"]))
        if weights_identity(trained) != weights_identity(encoder.identity):
            raise ConfigError(
                f"learned gate was trained with encoder {trained!r}, but the encoder in use "
                f"is {encoder.identity!r}; train one for this encoder with `llmroute train "
                "gate --encoder ...` or use the same encoder",
                file=meta_path,
            )
        return _from_files(folder, meta, encoder)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``gate.json`` + ``weights.npz`` into `directory` (created if needed)."""
        folder = Path(directory)
        meta = {
            **self.meta,
            "format": FORMAT,
            "kind": "logistic",
            "encoder": self.encoder.identity,
            "parts": list(self.parts),
            "checks": list(CHECK_NAMES),
            "emb_scale": self.emb_scale,
            "threshold": self.threshold,
            "llmroute_version": __version__,
        }
        arrays = {
            "weights": self.weights.astype(np.float32),
            "bias": np.array([self.bias], dtype=np.float64),
            "check_mean": self.mean.astype(np.float64),
            "check_scale": self.scale.astype(np.float64),
        }
        return write_artifact(folder, ARRAYS_FILE, arrays, META_FILE, meta, what="learned gate")


def read_gate_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The artifact's ``gate.json``; ConfigError naming the path if missing or malformed."""
    check_folder(directory, what="learned gate", command="llmroute train gate")
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise missing_meta(path, what="learned gate", command="llmroute train gate") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"malformed learned gate: {exc}", file=str(path)) from exc
    needed = {"encoder", "threshold", "parts", "checks", "emb_scale", "format"}
    if not isinstance(meta, dict) or not needed <= meta.keys():
        raise ConfigError(
            f"malformed learned gate: needs {', '.join(sorted(needed))}", file=str(path)
        )
    if meta["format"] != FORMAT:
        raise ConfigError(
            f"learned gate format {meta['format']!r} is not {FORMAT}; retrain it", file=str(path)
        )
    if tuple(meta["checks"]) != CHECK_NAMES:
        raise ConfigError(
            "learned gate was trained with other answer checks than this version's; retrain it",
            file=str(path),
        )
    return meta


def _from_files(folder: Path, meta: dict[str, Any], encoder: Encoder) -> LearnedGateModel:
    npz = folder / ARRAYS_FILE
    try:
        with np.load(npz, allow_pickle=False) as stored:
            weights = np.asarray(stored["weights"], dtype=np.float64).reshape(-1)
            bias = float(np.asarray(stored["bias"]).reshape(-1)[0])
            mean = np.asarray(stored["check_mean"], dtype=np.float64).reshape(-1)
            scale = np.asarray(stored["check_scale"], dtype=np.float64).reshape(-1)
        parts = tuple(str(p) for p in meta["parts"])
        threshold, emb_scale = float(meta["threshold"]), float(meta["emb_scale"])
    except FileNotFoundError:
        raise ConfigError("learned gate weights are missing", file=str(npz)) from None
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"malformed learned gate: {exc}", file=str(npz)) from exc
    expected = expected_width(parts, encoder.dim)
    if weights.size != expected or mean.size != len(CHECK_NAMES) or scale.size != mean.size:
        raise ConfigError(
            f"malformed learned gate: {weights.size} weights for parts {list(parts)} "
            f"(expected {expected} with a {encoder.dim}-d encoder)",
            file=str(npz),
        )
    if not (0.0 <= threshold <= 1.0 and np.isfinite(weights).all() and (scale > 0).all()):
        raise ConfigError("malformed learned gate: bad threshold or weights", file=str(npz))
    return LearnedGateModel(
        encoder, parts, weights, bias, mean, scale, emb_scale, threshold, dict(meta)
    )


def expected_width(parts: Sequence[str], dim: int) -> int:
    """The design vector's width for `parts` and a `dim`-d encoder."""
    return sum(len(CHECK_NAMES) if name == "checks" else dim for name in parts)
