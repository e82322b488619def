"""The chat formats a llamacpp provider's ``chat_format`` may name.

llama-cpp-python looks the name up only when a request comes: a typo was a 502 on every
request (each counted by the breaker), never an error at load. It is checked at load:

* with llama-cpp-python installed (the gateway needs it to serve such a provider), its
  registry of chat handlers decides, and a name it does not know is an error at the
  ``chat_format`` line;
* without it (CI checking a registry on a machine without the ``local`` extra), a name
  missing from `KNOWN` is a warning of ``registry check``, not an error: a newer
  llama-cpp-python may know it;
* ``chat_template.NAME`` picks a template the GGUF itself carries (``chat_template.default``,
  ``chat_template.tool_use``): it is checked once the file is loaded (`template_problem`).
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping

from llmroute.registry._paths import did_you_mean

__all__ = ["KNOWN", "TEMPLATE_PREFIX", "installed", "template_problem", "unknown"]

# the names llama-cpp-python 0.3 registers (register_chat_format and
# register_chat_completion_handler in llama_cpp/llama_chat_format.py)
KNOWN: tuple[str, ...] = (
    "alpaca",
    "baichuan",
    "baichuan-2",
    "chatglm3",
    "chatml",
    "chatml-function-calling",
    "functionary",
    "functionary-v1",
    "functionary-v2",
    "gemma",
    "intel",
    "llama-2",
    "llama-3",
    "mistral-instruct",
    "mistrallite",
    "oasst_llama",
    "open-orca",
    "openbuddy",
    "openchat",
    "phind",
    "pygmalion",
    "qwen",
    "redpajama-incite",
    "saiga",
    "snoozy",
    "vicuna",
    "zephyr",
)
TEMPLATE_PREFIX = "chat_template."  # a template of the GGUF's metadata, by its name


def installed() -> frozenset[str] | None:
    """The chat formats the installed llama-cpp-python knows; None when it is not
    installed (or cannot be loaded, or keeps no registry this code can read)."""
    try:
        module = importlib.import_module("llama_cpp.llama_chat_format")
    except (ImportError, OSError, RuntimeError):  # RuntimeError: its library fails to load
        return None
    registry = getattr(module, "LlamaChatCompletionHandlerRegistry", None)
    handlers = getattr(registry(), "_chat_handlers", None) if callable(registry) else None
    return frozenset(handlers) if isinstance(handlers, Mapping) else None


def unknown(name: str, known: Collection[str]) -> str | None:
    """Why `name` is no chat format of `known`, with the nearest one; None when it is
    one, or names a template of the GGUF (``chat_template.NAME``, checked at loading)."""
    if name in known or name.startswith(TEMPLATE_PREFIX):
        return None
    return (
        f"unknown chat format {name!r}{did_you_mean(name, known)}; llama.cpp's: "
        f"{', '.join(sorted(known))}, or {TEMPLATE_PREFIX}NAME for a template the GGUF carries"
    )


def template_problem(name: str | None, templates: Collection[str]) -> str | None:
    """Why ``chat_format: chat_template.NAME`` names none of the templates a loaded GGUF
    carries (`templates`: llama-cpp-python's handlers made from its metadata)."""
    if name is None or not name.startswith(TEMPLATE_PREFIX) or name in templates:
        return None
    carried = sorted(t for t in templates if t.startswith(TEMPLATE_PREFIX))
    return f"chat_format {name!r}: the GGUF carries no such template; it carries " + (
        ", ".join(carried) or "none"
    )
