"""Warnings about a valid registry that probably does not do what its author meant,
printed by ``llmroute registry check`` (``--strict`` fails on them).

Each warning names where it is (``routes[1].examples[0]``) and why it matters. They are
warnings, not errors: a registry written by ``registry from-examples`` from noisy labels
may hold them, and it must still load.
"""

from __future__ import annotations

import re

from llmroute.registry.schema import Registry

__all__ = ["lint"]

_SPACE = re.compile(r"\s+")
_EDGE = re.compile(r"^[\s\"'“”‘’`]+|[\s\"'“”‘’`.!?…]+$")


def _key(text: str) -> str:
    """An example as the encoder hears it, near enough: case, surrounding quotes,
    trailing punctuation and runs of spaces do not matter."""
    return _SPACE.sub(" ", _EDGE.sub("", text.casefold()))


def lint(registry: Registry) -> list[str]:
    """Every warning, in file order."""
    return _example_conflicts(registry)


def _example_conflicts(registry: Registry) -> list[str]:
    """The same example (near enough) taught as two routes, or as a route and as out of
    scope: the intent head is trained on both labels for one text, and decides it by
    whichever weighs more."""
    seen: dict[str, tuple[str, str]] = {}  # key -> (where, whose)
    out = []
    entries = [
        (f"routes[{i}].examples[{j}]", f"route {route.name!r}", text)
        for i, route in enumerate(registry.routes)
        for j, text in enumerate(route.examples)
    ]
    entries += [
        (f"intent.out_of_scope[{j}]", "out of scope", text)
        for j, text in enumerate(registry.intent.out_of_scope)
    ]
    for where, whose, text in entries:
        key = _key(text)
        first = seen.get(key)
        if first is None:
            seen[key] = (where, whose)
        elif first[1] != whose:
            out.append(
                f"{where}: {text!r} is also an example of {first[1]} ({first[0]}); the "
                "intent head learns both for one text: keep it in one place"
            )
    return out
