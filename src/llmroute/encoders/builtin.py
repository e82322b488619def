"""Resolve built-in encoder names to loaded encoders, sharing them within a process.

Loading MiniLM costs a session (~0.2 s, plus a one-off export); every caller that asks
for the same settings gets the same object.
"""

from __future__ import annotations

import numbers
import os
import threading
from pathlib import Path

from llmroute.encoders.base import Encoder
from llmroute.encoders.export import Precision, exported_graph
from llmroute.encoders.minilm import MiniLMEncoder
from llmroute.encoders.paths import default_cache_dir, minilm_model_dir
from llmroute.encoders.static import StaticEncoder
from llmroute.encoders.tokenize import Truncate, check_truncate
from llmroute.errors import ConfigError

__all__ = ["BUILTIN_NAMES", "load_builtin"]

BUILTIN_NAMES = ("minilm", "minilm-int8", "static")
_LOADED: dict[tuple[object, ...], Encoder] = {}
_LOCK = threading.Lock()


def _minilm(
    precision: Precision, max_tokens: int, truncate: Truncate, cache_dir: Path, threads: int | None
) -> Encoder:
    model_dir = minilm_model_dir()
    graph, digest = exported_graph(model_dir, cache_dir, precision)
    name = "minilm" if precision == "fp32" else "minilm-int8"
    identity = f"builtin:{name}@{digest[:12]};max_tokens={max_tokens};truncate={truncate}"
    return MiniLMEncoder(
        graph,
        model_dir / "tokenizer.json",
        identity,
        max_tokens=max_tokens,
        truncate=truncate,
        threads=threads,
        per_text=precision == "int8",  # its vectors would depend on the batch
    )


def load_builtin(
    name: str,
    *,
    max_tokens: int = 256,
    truncate: str = "head",
    cache_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
) -> Encoder:
    """Load ``minilm``, ``minilm-int8`` or ``static`` (a ``builtin:`` prefix is accepted).

    `max_tokens` counts MiniLM's [CLS]/[SEP]; `truncate` keeps the ``head``, the
    ``tail`` or both ends (``head_tail``) of long texts; `cache_dir` holds the ONNX
    export (default: `default_cache_dir()`); `threads` are onnxruntime intra-op threads.
    A setting of the wrong type (``max_tokens="256"``, read from an environment variable
    or a config file unconverted) is a `ConfigError` naming it, not a bare `TypeError`
    from deep inside the encoder, or a float quietly accepted by one encoder only.
    """
    if not isinstance(name, str):
        raise ConfigError(f"the built-in encoder's name must be a string, not {name!r}")
    short = name.removeprefix("builtin:")
    if short not in BUILTIN_NAMES:
        raise ConfigError(f"unknown built-in encoder {name!r}; choose one of {BUILTIN_NAMES}")
    max_tokens = _whole("max_tokens", max_tokens)
    if threads is not None:
        threads = _whole("threads", threads)
    mode = check_truncate(truncate)
    if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
        raise ConfigError(f"cache_dir must be a path, not {cache_dir!r}")
    directory = (Path(cache_dir) if cache_dir else default_cache_dir()).expanduser().resolve()
    key = (short, max_tokens, mode, directory if short != "static" else None, threads)
    with _LOCK:
        found = _LOADED.get(key)
        if found is None:
            if short == "static":
                found = StaticEncoder(max_tokens=max_tokens, truncate=mode)
            else:
                precision: Precision = "fp32" if short == "minilm" else "int8"
                found = _minilm(precision, max_tokens, mode, directory, threads)
            _LOADED[key] = found
        return found


def _whole(setting: str, value: object) -> int:
    """`value` as an int: an integer of any kind (numpy's too), not a bool (``True``
    would read as 1), a float or a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{setting} must be an integer, not {value!r}")
    return int(value)
