"""What one request has spent upstream so far, for when its caller gives up on it.

The gateway cancels a request whose client hangs up (the SDK one its caller cancels).
What the request had cost by then is what it is charged: the answers it got (a cascade
tier that was answered, then escalated; already charged to their models' budgets as
they came) and the prompts of the calls that were in flight, on the models they had
been sent to (a hosted API may bill a prompt it received). A call that failed is not
counted, and a request cancelled between calls (a retry's backoff, a gate's check)
owes nothing for them.

Calls register through a context variable, so fallbacks, retries, cascade tiers and
gates need not pass anything along; outside `tracked` the two hooks cost a lookup.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from llmroute.dispatch.usage import Usage
    from llmroute.registry.schema import Price

    # how a call that got no answer is priced: (an empty answer, the body sent, the price)
    Pricer = Callable[[dict[str, Any], Mapping[str, Any], Price], Usage]

__all__ = ["Spend", "answered", "sending", "tracked"]


@dataclass
class Spend:
    """One request's upstream calls so far: the usage of those that answered, and the
    (model, body sent) of those sent and not answered: in flight, or cut by a
    cancellation; `pricers` the way to price those that are not chat completions
    (embeddings, rerank), by the same keys."""

    answered: list[Usage] = field(default_factory=list)
    unanswered: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    pricers: dict[int, Pricer] = field(default_factory=dict)


_CURRENT: ContextVar[Spend | None] = ContextVar("llmroute_spend", default=None)
_keys = itertools.count()


@contextmanager
def tracked(spend: Spend) -> Iterator[Spend]:
    """Count in `spend` the upstream calls made inside the block (and in the tasks it
    starts)."""
    token = _CURRENT.set(spend)
    try:
        yield spend
    finally:
        _CURRENT.reset(token)


@contextmanager
def sending(model: str, body: dict[str, Any], pricer: Pricer | None = None) -> Iterator[None]:
    """One upstream call to `model` with `body`, unanswered while the block runs; it
    stays so when the block is cancelled (its prompt was sent). `pricer` prices it
    then, when it is not a chat completion (whose prompt is counted)."""
    spend = _CURRENT.get()
    if spend is None:
        yield
        return
    key = next(_keys)
    spend.unanswered[key] = (model, body)
    if pricer is not None:
        spend.pricers[key] = pricer
    cancelled = False
    try:
        yield
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        if not cancelled:
            del spend.unanswered[key]
            spend.pricers.pop(key, None)


def answered(usage: Usage | None) -> None:
    """Count `usage`, an answer's (already charged to its model's budget)."""
    spend = _CURRENT.get()
    if spend is not None and usage is not None:
        spend.answered.append(usage)
