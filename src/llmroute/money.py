"""Dollar amounts as people read them: budget refusals, `llmroute report`, the
``--log-requests`` line, lint (and the dashboard's ``fmtMoney``, its JavaScript twin).

Always fixed point, never an exponent (``0.0000006``, not ``6e-07``), thousands grouped
with commas as counts are (``12,345.67``), a half rounded up as JavaScript's ``toFixed``
rounds it (``0.03125`` to four places is ``0.0313``): `dollars` is the number, `usd` and
`usd_as_written` put a dollar sign before it; `usd_figure` is an amount for JSON."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Context, Decimal

__all__ = ["dollars", "usd", "usd_as_written", "usd_figure"]

_MOST_DECIMALS = 12  # below a trillionth of a dollar: $0
_PLACES = tuple(Decimal(1).scaleb(-n) for n in range(_MOST_DECIMALS + 1))
# every digit of the largest float (309) and its decimals: quantize never runs out
_ROUNDING = Context(prec=400, rounding=ROUND_HALF_UP)


def dollars(amount: float, *, exact: bool = False, grouped: bool = True) -> str:
    """`amount` in fixed point, without a dollar sign: at most four decimals from a cent
    up, two significant digits below a cent (a call costing $0.0009996 is ``0.001``, a
    millionth of a dollar ``0.000001``, not ``1e-06``, a hundred-thousandth not
    ``0.0000``), trailing zeros dropped (``5``, ``0.25``, ``50.0132``), thousands grouped
    (``12,345.67``; not with `grouped` false: a figure a program reads). With `exact`,
    every digit the float has (``0.00153125``, ``0.01875``): for a log line, summed
    later, and for echoing a configured price or budget."""
    if not math.isfinite(amount):
        return str(amount)
    size = abs(amount)
    comma = "," if grouped else ""
    if exact:
        text = format(Decimal(repr(size)), f"{comma}f")
    else:
        decimals = 4
        if 0 < size < 0.01:
            decimals = min(_MOST_DECIMALS, 1 - math.floor(math.log10(size)))
        # the float's exact value, a half up: the digits `toFixed` gives the dashboard
        rounded = Decimal(size).quantize(_PLACES[decimals], context=_ROUNDING)
        text = format(rounded, f"{comma}f")
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


def usd_figure(amount: float) -> float:
    """`amount` for JSON (a budget's spent and left): float noise past a trillionth of a
    dollar dropped (``0.1 + 0.2`` is ``0.3``), every digit `dollars` may write kept
    (``4e-07`` spent is not ``0``, as it was rounded to a millionth)."""
    return round(amount, _MOST_DECIMALS)


def _signed(text: str) -> str:
    """``$`` before the digits, after a minus sign (``-$0.5``)."""
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"
