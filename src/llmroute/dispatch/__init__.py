"""Dispatch: send a planned request to its model with timeouts, retries, fallbacks,
circuit breakers and balancing across deployments. Used by the gateway and the SDK.

The names below are imported on first use (PEP 562), not with the package: planning
(`llmroute.dispatch.plan`, a request's decision and fallback chain) needs none of the
dispatcher's HTTP clients and providers, which cost a command line such as ``llmroute
route`` about half a second at every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmroute.dispatch.cascade import TierStep, cascade_header
    from llmroute.dispatch.dispatcher import Dispatcher, Opened, Served
    from llmroute.dispatch.plan import AUTO, PINNED, Plan, aplan_request, plan_request

_WHERE = {
    "AUTO": "llmroute.dispatch.plan",
    "Dispatcher": "llmroute.dispatch.dispatcher",
    "Opened": "llmroute.dispatch.dispatcher",
    "PINNED": "llmroute.dispatch.plan",
    "Plan": "llmroute.dispatch.plan",
    "Served": "llmroute.dispatch.dispatcher",
    "TierStep": "llmroute.dispatch.cascade",
    "aplan_request": "llmroute.dispatch.plan",
    "cascade_header": "llmroute.dispatch.cascade",
    "plan_request": "llmroute.dispatch.plan",
}

__all__ = [
    "AUTO",
    "PINNED",
    "Dispatcher",
    "Opened",
    "Plan",
    "Served",
    "TierStep",
    "aplan_request",
    "cascade_header",
    "plan_request",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use and kept here; else a
    submodule (``llmroute.dispatch.dispatcher`` after ``import llmroute.dispatch``, as
    when this file imported the names with their modules)."""
    module = _WHERE.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):  # not a tool's probe (``__wrapped__``)
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # the submodule's own import failed
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NOT_PUBLIC = frozenset({"annotations", "importlib", "TYPE_CHECKING", "Any"})


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__} - _NOT_PUBLIC)
