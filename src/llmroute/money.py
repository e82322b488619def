"""Dollar amounts as messages say them (budget refusals, their worst cases, lint)."""

from __future__ import annotations

import math
from decimal import Decimal

__all__ = ["usd", "usd_as_written"]

_MOST_DECIMALS = 12  # below a trillionth of a dollar: $0


def usd(amount: float) -> str:
    """`amount` dollars, readable however small: at most four decimals from a cent up,
    two significant digits below a cent (a hard budget of a millionth of a dollar is
    ``$0.000001``, not ``$1e-06``, and a call costing a hundred-thousandth is not
    ``$0.0000``), trailing zeros dropped (``$5``, ``$0.25``, ``$50.0132``)."""
    if not math.isfinite(amount):
        return f"${amount}"
    size = abs(amount)
    decimals = 4
    if 0 < size < 0.01:
        decimals = min(_MOST_DECIMALS, 1 - math.floor(math.log10(size)))
    text = f"{size:.{decimals}f}".rstrip("0").rstrip(".")
    sign = "-" if amount < 0 and text != "0" else ""
    return f"{sign}${text}"


def usd_as_written(amount: float) -> str:
    """A configured amount (a price per 1M tokens, a budget) with every digit it was
    written with and never an exponent: ``$0.000001`` for ``1e-06``, ``$0.01875`` where
    `usd` would round to ``$0.0188``. For echoing a file back, not for computed sums."""
    if not math.isfinite(amount):
        return f"${amount}"
    text = format(Decimal(repr(abs(amount))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    sign = "-" if amount < 0 and text != "0" else ""
    return f"{sign}${text}"
