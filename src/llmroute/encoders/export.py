"""Export the MiniLM ONNX graph once per weights file into the cache dir.

The file name carries the sha256 of the safetensors and the builder version, so new
weights or a changed builder produce a new file; writes go to a temporary file that is
renamed into place, so concurrent processes never see half a model.

We do not save onnxruntime's optimised graph: measured, the session loads from the plain
graph in ~0.15 s with ORT_ENABLE_ALL, and the saved optimised graph was no faster to load
or run (and is tied to the machine it was made on).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from llmroute.encoders.paths import file_digest
from llmroute.errors import EncoderError

__all__ = ["BUILDER_VERSION", "QUANT_VERSION", "Precision", "export_path", "exported_graph"]

Precision = Literal["fp32", "int8"]
QUANT_VERSION = 1
"""Bump when the quantisation recipe changes."""


BUILDER_VERSION = 1
"""Version of `bert_graph`'s output: bump it when the graph changes so cached exports are
rebuilt. It lives here, not in `bert_graph`, so that loading a cached export does not
import onnx (only building one does)."""


def export_path(cache_dir: Path, digest: str, precision: Precision) -> Path:
    suffix = f"-q{QUANT_VERSION}" if precision == "int8" else ""
    return cache_dir / f"minilm-{precision}-{digest[:16]}-b{BUILDER_VERSION}{suffix}.onnx"


def _atomic_target(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=final.name + ".", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(tmp)


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime.quantization logs a pre-processing hint through the root logger,
    which would also install a root handler in the host application; swallow both."""
    root = logging.getLogger()
    handler, hint = logging.NullHandler(), _DropPreprocessHint()
    added = not root.handlers
    if added:
        root.addHandler(handler)
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)
        if added:
            root.removeHandler(handler)


def _write_fp32(model_dir: Path, target: Path) -> None:
    import onnx

    tmp = _atomic_target(target)
    try:
        from llmroute.encoders.bert_graph import build_bert_graph

        onnx.save(build_bert_graph(model_dir), str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_int8(source: Path, target: Path) -> None:
    """Dynamic int8, per-channel weights on every MatMul (per-tensor measured mean
    cosine 0.94 to fp32; per-channel 0.99)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _atomic_target(target)
    try:
        with _quiet_quantizer():
            quantize_dynamic(
                str(source),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def exported_graph(model_dir: Path, cache_dir: Path, precision: Precision) -> tuple[Path, str]:
    """Path of the cached graph (exporting it if needed) and the weights digest."""
    digest = file_digest(model_dir / "model.safetensors")
    fp32 = export_path(cache_dir, digest, "fp32")
    try:
        if not fp32.is_file():
            _write_fp32(model_dir, fp32)
        if precision == "fp32":
            return fp32, digest
        int8 = export_path(cache_dir, digest, "int8")
        if not int8.is_file():
            _write_int8(fp32, int8)
        return int8, digest
    except OSError as exc:
        raise EncoderError(f"cannot write the ONNX export to {cache_dir}: {exc}") from exc
