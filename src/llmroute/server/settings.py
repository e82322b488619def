"""Gateway settings that the CLI needs without importing the web stack."""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_RELOAD_INTERVAL_S",
    "MAX_BODY_ENV",
    "REGISTRY_ENV",
    "RELOAD_INTERVAL_ENV",
]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_RELOAD_INTERVAL_S = 1.0  # how often the registry file is checked for changes
REGISTRY_ENV = "LLMROUTE_REGISTRY"  # read by the app factory of multi-worker serving
MAX_BODY_ENV = "LLMROUTE_MAX_BODY_BYTES"
RELOAD_INTERVAL_ENV = "LLMROUTE_RELOAD_INTERVAL"
