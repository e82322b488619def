"""The llmroute exception tree.

Every error the package raises on purpose derives from `LlmrouteError`, so callers can
catch one class at the boundary::

    LlmrouteError
    ├── ConfigError (ValueError)      a registry, data file or setting is invalid
    │     carries `file`, `line` and `field` when they are known
    │     └── ConfigErrors              several at once (llmroute.registry; `.errors`)
    ├── EncoderError                  an encoder cannot be loaded or fails to encode
    │     └── EncoderUnavailable      its files or extra are not installed (says how to fix)
    ├── DataError (ValueError)        a labelled data file has a bad line
    ├── RoutingError                  a request cannot be routed (bad request shape)
    └── ProviderError                 an upstream model provider failed (carries `status`)

Foreign exceptions (yaml, pydantic, httpx, onnxruntime) are mapped to these once, where
they enter the package, and chained with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "EncoderError",
    "EncoderUnavailable",
    "LlmrouteError",
    "ProviderError",
    "RoutingError",
]


class LlmrouteError(Exception):
    """Base class of every error llmroute raises on purpose."""


class ConfigError(LlmrouteError, ValueError):
    """A registry or setting is invalid. `str()` reads ``file:line: field: message``."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            where += ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class DataError(LlmrouteError, ValueError):
    """A labelled data file (JSONL) has a line that cannot be used; names file and line."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        self.message = message
        self.file = file
        self.line = line
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{message}")


class EncoderError(LlmrouteError):
    """An encoder failed to load or to encode."""


class EncoderUnavailable(EncoderError):
    """The files or optional dependency an encoder needs are missing; the message says how
    to install them."""


class RoutingError(LlmrouteError):
    """The request cannot be routed, for example a chat body with no messages."""


class ProviderError(LlmrouteError):
    """An upstream provider failed: an HTTP error status, a timeout or a broken connection.

    `status` is the upstream HTTP status, or None when no response came back. The message
    names the provider; it never carries an API key or a URL (which may embed credentials).
    """

    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        self.provider = provider
        self.status = status
        self.message = message
        super().__init__(f"provider {provider!r}: {message}")
