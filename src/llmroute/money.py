"""Dollar amounts as people read them: budget refusals, `llmroute report`, the
``--log-requests`` line, lint (and the dashboard's ``fmtMoney``, its JavaScript twin).

Always fixed point, never an exponent (``0.0000006``, not ``6e-07``): `dollars` is the
number, `usd` and `usd_as_written` put a dollar sign before it."""

from __future__ import annotations

import math
from decimal import Decimal

__all__ = ["dollars", "usd", "usd_as_written"]

_MOST_DECIMALS = 12  # below a trillionth of a dollar: $0


def dollars(amount: float, *, exact: bool = False) -> str:
    """`amount` in fixed point, without a dollar sign: at most four decimals from a cent
    up, two significant digits below a cent (a call costing $0.0009996 is ``0.001``, a
    millionth of a dollar ``0.000001``, not ``1e-06``, a hundred-thousandth not
    ``0.0000``), trailing zeros dropped (``5``, ``0.25``, ``50.0132``). With `exact`,
    every digit the float has (``0.00153125``, ``0.01875``): for a log line, summed
    later, and for echoing a configured price or budget."""
    if not math.isfinite(amount):
        return str(amount)
    size = abs(amount)
    if exact:
        text = format(Decimal(repr(size)), "f")
    else:
        decimals = 4
        if 0 < size < 0.01:
            decimals = min(_MOST_DECIMALS, 1 - math.floor(math.log10(size)))
        text = f"{size:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"-{text}" if amount < 0 and text != "0" else text


def usd(amount: float) -> str:
    """`dollars(amount)` after a dollar sign (``$5``, ``$0.25``, ``$0.000001``,
    ``-$0.5``): a computed sum, read by a person."""
    return _signed(dollars(amount))


def usd_as_written(amount: float) -> str:
    """A configured amount (a price per 1M tokens, a budget) with every digit it was
    written with and never an exponent: ``$0.000001`` for ``1e-06``, ``$0.01875`` where
    `usd` would round to ``$0.0188``. For echoing a file back, not for computed sums."""
    return _signed(dollars(amount, exact=True))


def _signed(text: str) -> str:
    """``$`` before the digits, after a minus sign (``-$0.5``)."""
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"
