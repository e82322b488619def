"""Save and load trained difficulty routers: ``router.json`` + ``arrays.npz``.

The JSON says what the router is and how it was trained (kind, encoder identity,
hyper-parameters, features, data summary, version, selection metrics); the npz holds
its arrays, read with ``allow_pickle=False`` so loading an artifact never runs code.
A router's scores only mean something for the encoder it was trained with, so loading
with another encoder identity is refused.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from llmroute import __version__
from llmroute.artifact_files import check_folder, missing_meta, write_artifact
from llmroute.difficulty.routers import ArrayError, DifficultyRouter, router_class
from llmroute.encoders.base import weights_identity, without_credentials
from llmroute.errors import ConfigError

__all__ = ["ARRAYS_FILE", "FORMAT", "META_FILE", "load_router", "read_meta", "save_router"]

META_FILE = "router.json"
ARRAYS_FILE = "arrays.npz"
FORMAT = 1


def save_router(
    router: DifficultyRouter,
    directory: str | os.PathLike[str],
    *,
    encoder_identity: str,
    trained_on: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact into `directory` (created if needed); returns the directory."""
    folder = Path(directory)
    arrays, state = router.to_state()
    meta = {
        "format": FORMAT,
        "kind": router.name,
        "encoder": encoder_identity,
        "llmroute_version": __version__,
        "state": state,
        "trained_on": trained_on,
        "metrics": metrics or {},
    }
    return write_artifact(
        folder, ARRAYS_FILE, arrays, META_FILE, meta, what="router artifact", default=_jsonable
    )


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The artifact's ``router.json``; ConfigError naming the path if missing or corrupt."""
    check_folder(directory, what="router artifact", command="llmroute train difficulty")
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise missing_meta(
            path, what="router artifact", command="llmroute train difficulty"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"corrupt router artifact: {exc}", file=str(path)) from exc
    if not isinstance(meta, dict) or not {"kind", "encoder", "state"} <= meta.keys():
        raise ConfigError(
            "corrupt router artifact: needs 'kind', 'encoder' and 'state'", file=str(path)
        )
    for key in ("state", "trained_on"):  # read with .get(): a list was a traceback
        if key in meta and not isinstance(meta[key], dict):
            raise ConfigError(f"corrupt router artifact: {key!r} must be an object", file=str(path))
    return meta


def load_router(
    directory: str | os.PathLike[str], *, encoder_identity: str | None = None
) -> DifficultyRouter:
    """Load a saved router. With `encoder_identity`, refuse (ConfigError) an artifact
    trained with another encoder; a missing or corrupt artifact is a ConfigError too."""
    meta = read_meta(directory)
    meta_path = str(Path(directory) / META_FILE)
    trained = without_credentials(str(meta["encoder"]))
    if encoder_identity is not None and weights_identity(trained) != (
        weights_identity(encoder_identity)
    ):
        raise ConfigError(
            f"router was trained with encoder {trained!r}, but the encoder in use "
            f"is {encoder_identity!r}; retrain it or use the same encoder",
            file=meta_path,
        )
    try:
        cls = router_class(str(meta["kind"]))
    except ValueError as exc:
        raise ConfigError(str(exc), file=meta_path) from exc
    npz = Path(directory) / ARRAYS_FILE
    try:
        with np.load(npz, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except FileNotFoundError:
        raise ConfigError("router arrays are missing", file=str(npz)) from None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"corrupt router artifact: {exc}", file=str(npz)) from exc
    try:
        return cls.from_state(arrays, meta["state"])
    except ArrayError as exc:
        raise ConfigError(f"corrupt router artifact: {exc}", file=str(npz)) from exc
    except ConfigError as exc:
        where, why = f"state.{exc.field}" if exc.field else "state", exc.message
    except KeyError as exc:
        where, why = (f"state.{exc.args[0]}" if exc.args else "state"), "is missing"
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: int(Infinity)
        where, why = "state", str(exc)
    raise ConfigError(f"corrupt router artifact: {where}: {why}", file=meta_path)
