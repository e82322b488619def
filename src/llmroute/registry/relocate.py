"""Move a registry document's relative file paths from one folder to another.

A registry names artifacts relative to its own file (a difficulty router, the injection
detector, a reasoning scorer, learned cascade gates, llamacpp GGUF files). A command
that writes a registry built from another (``registry from-examples --base``,
``refresh -o``) into another folder must rewrite them, or the new file names
artifacts that are not there and fails at its first load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["relocate_paths"]


def _relocated(path: str, base_dir: Path, out_dir: Path) -> str:
    """`path`, relative to `base_dir` as the registry wrote it, made relative to
    `out_dir` (where the new registry is written): relative, not absolute, so that a
    registry and its artifacts committed together still load from another checkout or a
    container. Absolute paths stay; so does one with no relative form (another drive)."""
    if Path(path).expanduser().is_absolute():
        return path
    target = os.path.normpath(base_dir / path)
    try:
        return Path(os.path.relpath(target, out_dir)).as_posix()
    except ValueError:  # pragma: no cover - Windows: another drive
        return target


def _get(section: Any, key: str) -> Any:
    return section.get(key) if isinstance(section, dict) else None


def _learned_gates(document: dict[str, Any]) -> list[Any]:
    """The learned gates the routes' cascades name, their own and their tiers'."""
    gates: list[Any] = []
    for route in document.get("routes") or []:
        cascade = _get(route, "cascade")
        if not isinstance(cascade, dict):
            continue  # absent, or `[small, large]`: tiers alone, the default gates
        gates += cascade.get("gates") or []
        for tier in cascade.get("tiers") or []:
            gates += _get(tier, "gates") or []
    return [g for g in gates if _get(g, "kind") == "learned"]


def _gguf_holders(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The models and deployments whose `model` is a GGUF file of a llamacpp provider."""
    providers = document.get("providers") or {}
    local = {name for name, p in providers.items() if _get(p, "kind") == "llamacpp"}
    holders: list[dict[str, Any]] = []
    for model in (document.get("models") or {}).values():
        if not isinstance(model, dict):
            continue
        deployments = [d for d in model.get("deployments") or [] if isinstance(d, dict)]
        if model.get("provider") in local or any(
            d.get("provider") in local and d.get("model") is None for d in deployments
        ):
            holders.append(model)
        holders += [d for d in deployments if d.get("provider") in local]
    return holders


def relocate_paths(document: dict[str, Any], base_dir: Path, out_dir: Path) -> None:
    """Rewrite, in place, the relative paths of `document` (a registry as YAML data,
    written for a file in `base_dir`) for a file in `out_dir`. ``builtin``,
    ``package:`` names and absolute paths are kept as they are."""
    if base_dir.resolve() == out_dir.resolve():
        return
    from llmroute.providers.llamacpp import PACKAGE_PREFIX  # httpx and more: when needed

    def move(section: Any, key: str, keep: tuple[str, ...] = ()) -> None:
        value = _get(section, key)
        if isinstance(value, str) and value not in keep and not value.startswith(PACKAGE_PREFIX):
            section[key] = _relocated(value, base_dir, out_dir)

    move(_get(document.get("default"), "difficulty"), "router")
    move(_get(document.get("safety"), "injection"), "artifact", ("builtin",))
    move(document.get("reasoning"), "scorer", ("builtin",))
    for gate in _learned_gates(document):
        move(gate, "artifact", ("builtin",))
    for holder in _gguf_holders(document):
        move(holder, "model")
