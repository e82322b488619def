"""Client keys' ``rpm`` counts requests in a sliding minute: the last minute's count,
weighted by what is left of it, plus this minute's. A run of requests that crosses a
minute's end sees the earlier ones weigh a little less, so one more is let in than the
test expects. A test that fills a limit starts clear of a minute's end."""

from __future__ import annotations

import time

WINDOW_S = 60.0


def clear_of_a_minute_end(needed_s: float = 5.0) -> None:
    """Sleep into the next minute when fewer than `needed_s` seconds are left of this one."""
    left = WINDOW_S - time.time() % WINDOW_S
    if left < needed_s:
        time.sleep(left + 0.05)
