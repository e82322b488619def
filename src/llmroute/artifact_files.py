"""Writing a trained artifact's files (an ``.npz`` of arrays and a JSON description) so
that a reader never sees half of one: each goes to a temporary name beside it and is then
renamed over the old file. Shared by the difficulty router, reasoning scorer, learned gate
and safety detector artifacts."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from llmroute.errors import ConfigError

__all__ = [
    "check_folder",
    "held_artifact",
    "missing_meta",
    "replaced_artifact",
    "write_artifact",
    "write_atomic",
]


def check_folder(directory: str | os.PathLike[str], *, what: str, command: str) -> None:
    """A ConfigError naming `directory` when it is not there or is a file: `what` (a
    router artifact) is the folder that `command` writes. Reading its files would say
    ``NotADirectoryError`` of a path inside a file, or that a file is missing from a
    folder that is not there."""
    folder = Path(directory)
    try:
        if folder.is_dir():
            return
        said = f"a file, not a {what}" if folder.exists() else f"no such {what}"
    except OSError as exc:  # a name past the file system's 255 bytes, a folder not ours
        said = f"cannot read the {what}: {exc.strerror or type(exc).__name__}"
    raise ConfigError(f"{said} (a folder written by `{command}`)", file=str(directory))


# each trained artifact's description file: what it is, and the command that writes it
_DESCRIBED = {
    "router.json": ("a difficulty router", "llmroute train difficulty"),
    "reasoning.json": ("a reasoning scorer", "llmroute train reasoning"),
    "gate.json": ("a learned gate", "llmroute train gate"),
    "detector.json": ("a safety detector", "llmroute train safety"),
}


def missing_meta(path: Path, *, what: str, command: str) -> ConfigError:
    """The error for an artifact folder without its description `path` (a `what`,
    written by `command`). A folder another ``llmroute train`` command wrote, given to
    the wrong setting or flag, is named for what it holds: "router.json is missing"
    alone left the reader to find that out."""
    said = f"no {what} here ({path.name} is missing"
    for name, (other, writer) in _DESCRIBED.items():
        if name != path.name and (path.parent / name).is_file():
            return ConfigError(
                f"{said}: the folder holds {other}, from `{writer}`; give a folder "
                f"written by `{command}`)",
                file=str(path),
            )
    return ConfigError(f"{said}; train one with `{command}`)", file=str(path))


def held_artifact(folder: Path, writes: str) -> str | None:
    """What `folder` holds when another ``llmroute train`` command wrote it than the one
    that writes `writes` (``"a difficulty router, from `llmroute train difficulty`"``),
    else None. Kinds share array file names (``arrays.npz``, ``weights.npz``): training
    into such a folder mixed the new arrays with the old description, and lost both."""
    for name, (other, writer) in _DESCRIBED.items():
        if name != writes and (folder / name).is_file():
            return f"{other}, from `{writer}`"
    return None


def replaced_artifact(folder: Path, writes: str) -> str | None:
    """What `folder` holds that the command writing `writes` replaces (``"the
    difficulty router"``), else None: the folder's other files are not touched."""
    if not (folder / writes).is_file():
        return None
    return "the " + _DESCRIBED[writes][0].removeprefix("a ")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename; readable by all (an artifact is meant to
    be shared with the service that loads it, and mkstemp would leave it private)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_artifact(
    directory: str | os.PathLike[str],
    arrays_file: str,
    arrays: Mapping[str, Any],
    meta_file: str,
    meta: Mapping[str, Any],
    *,
    what: str,
    compressed: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> Path:
    """Write `arrays` (npz, no pickles) and then `meta` (sorted, indented JSON; `default`
    as in `json.dumps`) into `directory`, created if needed; a ConfigError naming `what`
    and the folder when it cannot be written. Returns the folder."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        # The stubs reject ** of arrays (a key could be allow_pickle).
        savez: Any = np.savez_compressed if compressed else np.savez
        savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
        write_atomic(folder / arrays_file, buffer.getvalue())
        text = json.dumps(dict(meta), indent=2, sort_keys=True, default=default) + "\n"
        write_atomic(folder / meta_file, text.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot write {what}: {exc}", file=str(folder)) from exc
    return folder
