"""What one request has spent upstream so far, for when its caller gives up on it.

The gateway cancels a request whose client hangs up (the SDK one its caller cancels).
What the request had cost by then is what it is charged: the answers it got (a cascade
tier that was answered, then escalated; already charged to their models' budgets as
they came) and the prompts of the calls that were in flight, on the models they had
been sent to (a hosted API may bill a prompt it received). A call that failed is not
counted, and a request cancelled between calls (a retry's backoff, a gate's check)
owes nothing for them. A call cut by a time limit of the router's own around it (a
cascade gate's `GATE_TIMEOUT_S`, the LLM router's ``timeout_s``:
`Dispatcher.within`) is charged its prompt when that limit runs out, and counted then
as an answer, so that the request pays it once whether it goes on or is cut later.

Calls register through a context variable, so fallbacks, retries, cascade tiers and
gates need not pass anything along; outside `tracked` the two hooks cost a lookup. A
request cut during its calls also notes there the way it had gone (`cut_after`): the
models it had passed over and the one it was cut on, for its decision log row.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmroute.errors import LlmrouteError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from llmroute.dispatch.usage import Usage
    from llmroute.registry.schema import Price

    # how a call that got no answer is priced: (an empty answer, the body sent, the price)
    Pricer = Callable[[dict[str, Any], Mapping[str, Any], Price], Usage]

__all__ = [
    "BUG",
    "CANCELLED",
    "Spend",
    "answered",
    "cancelled_on",
    "current",
    "cut_after",
    "ending_of",
    "failed_attempts",
    "noted_cut",
    "paid_by_model",
    "sending",
    "tracked",
]


@dataclass
class Spend:
    """One request's upstream calls so far: the usage of those that answered (and in
    `paid_to`, the model of each), and the (model, body sent) of those sent and not
    answered: in flight, or cut by a cancellation; `pricers` the way to price those that
    are not chat completions (embeddings, rerank), by the same keys; `cut`, the (model,
    usage) of the unanswered calls once `Dispatcher.charge_abandoned` charged them.
    `tried`: for a request cancelled during its calls (or ended by a bug there), its
    attempt path as a served or failed request's says it (`cut_after`); `cut_on` the
    entry of the model it was cut on, whatever came before it."""

    answered: list[Usage] = field(default_factory=list)
    paid_to: list[str] = field(default_factory=list)
    unanswered: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    pricers: dict[int, Pricer] = field(default_factory=dict)
    cut: list[tuple[str, Usage]] = field(default_factory=list)
    tried: tuple[str, ...] = ()
    cut_on: str | None = None


CANCELLED = "cancelled"  # how a cut request's last attempt ended (`cancelled_on`)
BUG = "internal_error"  # how a bug's did: the code of its 500 (`server.errors.INTERNAL_ERROR`)
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


def current() -> Spend | None:
    """The spend `tracked` counts this task's calls in (None: none)."""
    return _CURRENT.get()


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


def cancelled_on(model: str, provider: str | None = None, how: str = CANCELLED) -> str:
    """The attempt of `model` for a request cancelled while on it (called through
    `provider`; None: not called yet), as a failure's says it: ``MODEL via PROVIDER
    (cancelled)``; `how` another ending (`BUG`: a bug ended the request there)."""
    via = "" if provider is None else f" via {provider}"
    return f"{model}{via} ({how})"


def ending_of(exc: BaseException) -> str | None:
    """How a request `exc` ended on a model ends its attempt there (`cancelled_on`): a
    cancel's `CANCELLED`, a bug's `BUG`; None for an error of ours, whose own attempts
    say it, or an exit of the process."""
    if isinstance(exc, asyncio.CancelledError):
        return CANCELLED
    if isinstance(exc, Exception) and not isinstance(exc, LlmrouteError):
        return BUG
    return None


def cut_after(passed_over: Sequence[str], entry: str) -> None:
    """The request was cancelled (its client hung up, the gateway stopped), or a bug
    ended it, on the attempt `entry` (`cancelled_on`) after the models `passed_over`
    (as their attempts say them): its attempt path is theirs then `entry`, so that a
    request cut on its fallback is logged as one that fell back. Nothing when it was
    cut on its first model: it did not fall back, as a request refused there lists
    nothing (`Spend.cut_on` keeps the entry). Said by whatever tried the models,
    innermost first: a cascade says its own after its tier's chain did."""
    spend = _CURRENT.get()
    if spend is None:
        return
    spend.cut_on = entry
    spend.tried = (*passed_over, entry) if passed_over else ()


def failed_attempts(attempts: Sequence[str]) -> int:
    """How many of a request's `attempts` were not cut: all but the last entry of a
    request cut on a later model (`cut_after`), which its client or the gateway's stop
    ended, not the model; the path itself keeps it."""
    cut = bool(attempts) and attempts[-1].endswith(f" ({CANCELLED})")
    return len(attempts) - cut


def noted_cut(model: str, how: str = CANCELLED) -> str | None:
    """The attempt `cut_after` noted last, when it was `model`'s ended `how` (a cascade's
    tier cut in its chain, the provider called named); else None."""
    spend = _CURRENT.get()
    entry = None if spend is None else spend.cut_on
    if entry is None or not entry.startswith(f"{model} ") or not entry.endswith(f"({how})"):
        return None
    return entry


def answered(usage: Usage | None, model: str) -> None:
    """Count `usage`, an answer of `model`'s (already charged to its budget)."""
    spend = _CURRENT.get()
    if spend is not None and usage is not None:
        spend.answered.append(usage)
        spend.paid_to.append(model)


def paid_by_model(
    spend: Spend, served: str | None, total: Usage | None
) -> tuple[tuple[str, Usage], ...]:
    """The request's `total` usage split by the model that spent it, for the metrics:
    each answer `spend` counted under its own model (a cascade's tiers passed over, its
    gates' model calls, an answer a content filter withheld), the rest under `served`
    (the answer served: a stream's usage is charged as it ends, after `tracked`), the
    prompts of a cancelled request's cut calls (`Spend.cut`) under the models they were
    sent to. Empty (nothing made) when the served model spent it all, as nearly every
    request does."""
    paid_to = spend.paid_to
    if total is None or (
        # every answer the served model's (or none): counted, not a generator, as this
        # runs for every request recorded
        (not paid_to or (served is not None and paid_to.count(served) == len(paid_to)))
        and (not spend.cut or all(model == served for model, _ in spend.cut))
    ):
        return ()
    from llmroute.gates.base import total_usage

    spent = [*zip(spend.paid_to, spend.answered, strict=True), *spend.cut]
    split: dict[str, Usage] = {}
    for model, usage in spent:
        split[model] = total_usage([split.get(model), usage]) or usage
    counted = total_usage([usage for _, usage in spent])
    if served is not None and counted is not None:
        rest = _less(total, counted)
        if rest is not None:
            split[served] = total_usage([split.get(served), rest]) or rest
    return tuple(split.items())


def _less(total: Usage, counted: Usage) -> Usage | None:
    """What `total` holds beyond `counted` (None: nothing; float dust is nothing)."""
    from llmroute.dispatch.usage import Usage

    prompt = max(0, total.prompt_tokens - counted.prompt_tokens)
    completion = max(0, total.completion_tokens - counted.completion_tokens)
    cost = max(0.0, round(total.cost_usd - counted.cost_usd, 10))  # sums are rounded so
    if not (prompt or completion or cost):
        return None
    return Usage(prompt, completion, cost, total.estimated)
