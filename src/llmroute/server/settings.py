"""Gateway settings that the CLI needs without importing the web stack."""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_BODY_BYTES", "MAX_BODY_ENV", "REGISTRY_ENV"]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
REGISTRY_ENV = "LLMROUTE_REGISTRY"  # read by the app factory of multi-worker serving
MAX_BODY_ENV = "LLMROUTE_MAX_BODY_BYTES"
