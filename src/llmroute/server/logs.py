"""The gateway's log lines: uvicorn's and llmroute's own, as text or one JSON object a
line (for Loki, Elasticsearch, Cloud Logging and the like), at the level asked for.

The configuration is a `logging.config.dictConfig` dict, so worker processes apply the
same one; the JSON formatter is named by its import path for that reason.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any

from llmroute.telemetry.request_log import REQUESTS_LOGGER

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "join_uvicorns_logging", "log_config"]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

_ACCESS_ARGS = 5  # uvicorn's access record: client, method, path, HTTP version, status


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601, milliseconds), ``level``,
    ``logger``, ``message``, ``pid`` (with ``--workers``, which worker wrote it: each
    says its reloads and warnings), and ``exception`` when there is one. uvicorn's access lines
    also carry ``client``, ``method``, ``path`` and ``status`` as fields, and request
    lines (``--log-requests``) the decision's and outcome's, so a log store can filter
    on them without parsing the message."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        args = record.args
        access = record.name == "uvicorn.access"
        if access and isinstance(args, tuple) and len(args) == _ACCESS_ARGS:
            client, method, path, _version, status = args
            line.update(client=client, method=method, path=path, status=status)
        fields = getattr(record, "request", None)
        if isinstance(fields, dict):  # a request line (`request_log`): its fields as keys
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def _severity(level: str) -> int:
    return logging.getLevelNamesMapping()[level]


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def log_config(
    base: dict[str, Any],
    *,
    level: str = "info",
    fmt: str = "text",
    access_log: bool = True,
    requests: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """uvicorn's logging config `base`, with llmroute's own loggers (reloads, retries,
    refusals) on the same handler so they are not dropped for want of one, everything
    at `level`, in `fmt`, the access lines (one a request) only with `access_log`, and
    with `requests` one line a finished request with its decision and outcome
    (`llmroute.telemetry.request_log`; asked for explicitly, so whatever `level`).
    With several `workers`, a text line says its process's pid after its level (``INFO:
    [pid 1234] ...``), as a JSON line has ``pid``: each worker loads and reloads the
    registry on its own and says so (its warnings, its Redis check), and the same line
    twice told nobody which worker wrote which."""
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    config = copy.deepcopy(base)
    upper = level.upper()
    loggers = config.setdefault("loggers", {})
    loggers["llmroute"] = {"handlers": ["default"], "level": upper, "propagate": False}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        loggers.setdefault(name, {})["level"] = upper
    if not access_log:
        loggers["uvicorn.access"] = {"handlers": [], "level": upper, "propagate": False}
    loggers[REQUESTS_LOGGER] = {
        "handlers": ["default"],
        "level": "INFO" if requests else "WARNING",
        "propagate": False,
    }
    # Other libraries' warnings went to Python's last-resort handler: bare lines among
    # the JSON ones, whatever the level. python-multipart warns of each malformed upload
    # it then raises on (the client's 400), so a client could write lines at will.
    config["root"] = {"handlers": ["default"], "level": max(upper, "WARNING", key=_severity)}
    loggers["python_multipart"] = {"level": "ERROR"}
    if fmt == "json":
        json_formatter = {"()": f"{__name__}.JsonFormatter"}
        config["formatters"] = {"default": json_formatter, "access": json_formatter}
    elif workers > 1:
        for formatter in config.get("formatters", {}).values():
            said = formatter.get("fmt")
            if isinstance(said, str) and "%(process)" not in said:
                head, level, rest = said.partition("%(levelprefix)s ")
                formatter["fmt"] = f"{head}{level}[pid %(process)d] {rest}"
    return config


def join_uvicorns_logging(*, requests: bool = False, fmt: str = "text") -> None:
    """Under ``uvicorn --factory``, which configures its own loggers only: llmroute's
    (and the root's) on uvicorn's handler at uvicorn's level, as `log_config` puts them
    for ``serve``, or its start, reloads and refusals go unsaid (the last-resort handler
    says warnings alone, bare). In `fmt` json, they are JSON lines through the same
    handlers (`_OursAsJson`: uvicorn's own lines stay its ``--log-config``'s to format).
    Nothing is changed where the root or llmroute's logger
    already has a handler (uvicorn's ``--log-config`` gave one, or the program that
    builds the app did), nor where uvicorn's logger has none to share. The root is left
    without them where uvicorn's logger propagates (a ``--log-config`` that does not say
    ``propagate: false``): each of uvicorn's lines would reach them twice."""
    ours = logging.getLogger("llmroute")
    root = logging.getLogger()
    uvicorns = logging.getLogger("uvicorn")
    if ours.handlers or root.handlers or not uvicorns.handlers:
        return
    handlers = uvicorns.handlers
    if fmt == "json":
        for handler in handlers:
            handler.setFormatter(_OursAsJson(handler.formatter))
    level = logging.getLogger("uvicorn.error").getEffectiveLevel()  # its --log-level
    said = logging.getLogger(REQUESTS_LOGGER)
    joined = [(ours, level), (said, logging.INFO if requests else logging.WARNING)]
    if not uvicorns.propagate:
        joined.append((root, max(level, logging.WARNING)))
    for logger, at in joined:
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(at)
    ours.propagate = said.propagate = False
    logging.getLogger("python_multipart").setLevel(logging.ERROR)


class _OursAsJson(logging.Formatter):
    """A shared handler's formatter under ``uvicorn --factory`` with json: uvicorn's
    lines in its own format (`text`), the others (llmroute's, the root's) as JSON. The
    handler is shared, not copied: a copy writing to its stream wrote to stderr for a
    file not opened yet (``delay: true``), and to a closed file once it rotated."""

    def __init__(self, text: logging.Formatter | None) -> None:
        super().__init__()
        self._text = text or logging.Formatter()
        self._json = JsonFormatter()

    def format(self, record: logging.LogRecord) -> str:
        ours = record.name.partition(".")[0] != "uvicorn"
        return (self._json if ours else self._text).format(record)
