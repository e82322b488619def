"""Parsing the time windows of the analysis commands."""

from __future__ import annotations

import pytest

from llmroute.telemetry.windows import WindowError, parse_window

NOW = 1_700_000_000.0
DAY = 86400.0


def test_relative_windows() -> None:
    w = parse_window("7d", now=NOW)
    assert (w.since, w.until) == (NOW - 7 * DAY, None)
    assert w.end == NOW
    w = parse_window("14d..7d", now=NOW)
    assert (w.since, w.until) == (NOW - 14 * DAY, NOW - 7 * DAY)
    assert parse_window("24h", now=NOW).since == NOW - DAY
    assert parse_window("30m", now=NOW).since == NOW - 1800
    assert parse_window("2w", now=NOW).since == NOW - 14 * DAY
    assert parse_window(" 90S ", now=NOW).since == NOW - 90


def test_iso_dates_are_utc() -> None:
    w = parse_window("2023-11-01..2023-11-08", now=NOW)
    assert w.since == 1698796800.0 and w.until == 1698796800.0 + 7 * DAY
    assert parse_window("2023-11-01T12:00+02:00", now=NOW).since == 1698796800.0 + 10 * 3600
    assert "2023-11-01 00:00 UTC" in parse_window("2023-11-01", now=NOW).describe()


@pytest.mark.parametrize(
    "text", ["", "7", "7x", "..7d", "7d..", "7d..14d", "yesterday", "2099-01-01"]
)
def test_invalid_windows(text: str) -> None:
    with pytest.raises(WindowError):
        parse_window(text, now=NOW)


@pytest.mark.parametrize("text", ["0d", "0h", " 0.0w "])
def test_a_window_of_no_time_is_invalid(text: str) -> None:
    """`--since 0d` was accepted as a window from now until now: every command reported
    it empty, the dashboard showed nothing, and nothing said why. A window may still
    end now (`14d..0d`)."""
    with pytest.raises(WindowError, match="it holds no time"):
        parse_window(text, now=NOW)
    assert parse_window("14d..0d", now=NOW).until == NOW


@pytest.mark.parametrize("text", ["99999999999999999999d", "9" * 400 + "h", "60000w", "3000w..1d"])
def test_a_duration_reaching_back_before_1970_is_invalid(text: str) -> None:
    """Not a start no database can take (a SQLite INTEGER overflow, an infinity), which
    was a 500 from /dashboard/data: a clear error naming the start of the text."""
    with pytest.raises(WindowError, match="reaches back before 1970") as caught:
        parse_window(text, now=NOW)
    assert len(str(caught.value)) < 150  # the text cut to its start
