"""Time windows over the decision log, as the analysis commands take them.

``7d`` is the last seven days (until now), ``14d..7d`` the week before that (from 14
days ago until 7 days ago); units are ``s``, ``m``, ``h``, ``d`` and ``w``. An ISO date
or date-time (``2024-05-01``, ``2024-05-01T12:00``; UTC unless it names a zone) stands
for that instant, so ``2024-05-01..2024-05-08`` is a fixed week and ``2024-05-01`` alone
runs from then until now. Windows are half-open: ``since <= ts < until``.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Window", "WindowError", "parse_instant", "parse_window"]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


class WindowError(ValueError):
    """A window that cannot be parsed, or that ends before it starts."""


@dataclass(frozen=True, slots=True)
class Window:
    """``since <= ts < until`` in Unix seconds; `until` None means up to now."""

    since: float
    until: float | None
    text: str

    @property
    def end(self) -> float:
        """`until`, or the time the window was parsed at when it is open-ended."""
        return self.until if self.until is not None else self._now

    _now: float = 0.0

    def describe(self) -> str:
        end = "now" if self.until is None else _iso(self.until)
        return f"{self.text} ({_iso(self.since)} .. {end})"

    def to_dict(self) -> dict[str, object]:
        return {"text": self.text, "since": self.since, "until": self.until}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


_SHOWN_CHARS = 40


def _shown(text: str) -> str:
    """`text` quoted for an error message, cut to its start when long."""
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…")


def _instant(text: str, now: float) -> float:
    """A point in time: a duration ago (``7d``) or an ISO date/date-time."""
    match = _RELATIVE.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        start = now - amount * _UNIT_SECONDS[unit]
        if not (math.isfinite(start) and start >= 0):  # 10**30d: no database takes it
            raise WindowError(
                f"invalid time {_shown(text)}: it reaches back before 1970 "
                "(use e.g. 30d or 52w, or an ISO date)"
            )
        return start
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise WindowError(
            f"invalid time {_shown(text)}: use a duration ago such as 30m, 24h, 7d, 2w, "
            "or an ISO date such as 2024-05-01"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_instant(text: str, *, now: float | None = None) -> float:
    """A point in the past, as Unix seconds: a duration ago (``30d``) or an ISO date or
    date-time; raise `WindowError` when invalid or in the future."""
    current = time.time() if now is None else now
    moment = _instant(text, current)
    if moment > current:
        raise WindowError(f"invalid time {_shown(text)}: it is in the future")
    return moment


def parse_window(text: str, *, now: float | None = None) -> Window:
    """Parse ``START`` (until now) or ``START..END``; raise `WindowError` when invalid."""
    current = time.time() if now is None else now
    start_text, sep, end_text = text.partition("..")
    if not start_text.strip() or (sep and not end_text.strip()):
        raise WindowError(f"invalid window {_shown(text)}: use e.g. 7d, 24h or 14d..7d")
    since = _instant(start_text, current)
    until = _instant(end_text, current) if sep else None
    if until is not None and until <= since:
        raise WindowError(
            f"invalid window {_shown(text)}: it ends before it starts "
            "(the first part is the older one, e.g. 14d..7d)"
        )
    if since > current:
        raise WindowError(f"invalid window {_shown(text)}: it starts in the future")
    if until is None and since == current:  # 0d: nothing could be in it, silently
        raise WindowError(
            f"invalid window {_shown(text)}: it holds no time (it starts now); use e.g. "
            "30m, 24h or 7d"
        )
    return Window(since=since, until=until, text=text.strip(), _now=current)
