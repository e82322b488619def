"""Hard budgets: what a call may cost at worst, held against its model's budget while
the call runs, so that concurrent calls see each other and the budget is never passed.

A soft budget is read before a call and charged after it: calls in flight when it runs
out still finish, so it is passed by what they cost. A hard budget (``budget.hard``)
holds each call's worst case in the period's sum before the call is sent, refusing the
call when that would pass the cap, and replaces it by what the call cost once that is
known (a failed call's hold is taken back). The worst case prices as input the prompt
at its UTF-8 bytes over two (`prompt_tokens_at_most`: twice an English prompt's tokens,
as cheap as its length, where the tokenizer would cost ~1 µs a character on the event
loop) and `IMAGE_TOKENS` an image, and as output the longest answer the call may give:
the least of the request's ``max_completion_tokens`` / ``max_tokens`` (after the
model's `params`), the model's ``max_output_tokens`` and its ``context_window`` less
the prompt, of those that are set (Anthropic's API always has one: llmroute's default
when the client sends none; a llama.cpp provider its ``max_tokens``), times ``n``.

A client key's hard budget works the same way, on every call made for the key's
requests: the gateway names the key that pays (`paid_by`, a context variable, so that
fallbacks, cascade tiers, gates and background responses need not pass it along), and
each call holds its worst case in the key's budget too. Then the key's spending is kept
here, call by call, and not from the request's record.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from llmroute.dispatch.rerank import rerank_worst_case
from llmroute.dispatch.usage import count_tokens, input_tokens_at_most, prompt_tokens_at_most
from llmroute.money import usd
from llmroute.providers._anthropic_convert import DEFAULT_MAX_TOKENS
from llmroute.registry.schema import ANSWER_LIMITS, ANTHROPIC_KINDS, Budget, Model, Provider
from llmroute.request import image_count

__all__ = [
    "IMAGE_TOKENS",
    "Payer",
    "WorstCase",
    "model_account",
    "paid_by",
    "payer",
    "worst_case",
]

IMAGE_TOKENS = 1600  # an image at most: Anthropic's largest (1.15 MP), OpenAI's high detail


def model_account(name: str) -> str:
    """Where the pool model `name`'s spending is counted (``NAMESPACE:usd:budget:NAME``)."""
    return f"budget:{name}"


@dataclass(frozen=True, slots=True)
class Payer:
    """A client key with a hard budget, for whose requests calls are made: its name,
    where its spending is counted, its budget."""

    name: str
    account: str
    budget: Budget


_PAYER: ContextVar[Payer | None] = ContextVar("llmroute_payer", default=None)


def payer() -> Payer | None:
    """The client key with a hard budget that the calls made now are for, if any."""
    return _PAYER.get()


@contextmanager
def paid_by(who: Payer | None) -> Iterator[None]:
    """Make the calls inside the block (and in the tasks it starts) for `who`; None:
    for nobody's hard budget (work the gateway does for itself, such as shadow copies)."""
    token = _PAYER.set(who)
    try:
        yield
    finally:
        _PAYER.reset(token)


@dataclass(frozen=True, slots=True)
class WorstCase:
    """The most a call may cost: its prompt's tokens at most (`prompt_tokens_at_most`,
    and the images), its answer's, and their price in USD."""

    prompt_tokens: int
    answer_tokens: int
    usd: float

    def describe(self) -> str:
        return (
            f"{usd(self.usd)} at worst: about {self.prompt_tokens:,} prompt and up to "
            f"{self.answer_tokens:,} answer tokens"
        )


def worst_case(sent: Mapping[str, Any], model: Model, provider: Provider) -> WorstCase:
    """The worst case of sending `sent` (the body as `model` gets it: its params applied)
    to `provider`; for an embedding model, its ``input``; for a rerank model, the query
    with each document (and its searches, priced per search)."""
    if model.kind == "embedding":  # its input alone
        prompt = input_tokens_at_most(sent.get("input"))
        return WorstCase(prompt, 0, prompt * model.price.input / 1e6)
    if model.kind == "rerank":
        prompt, usd = rerank_worst_case(sent, model.price)
        return WorstCase(prompt, 0, usd)
    images = image_count(sent.get("messages")) * IMAGE_TOKENS
    prompt = prompt_tokens_at_most(sent) + images
    answer = _answer_bound(sent, model, provider, prompt)
    choices = sent.get("n")
    if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1:
        answer *= choices
    price = model.price
    usd = (prompt * price.input + answer * price.output) / 1e6
    return WorstCase(prompt, answer, usd)


def _answer_bound(sent: Mapping[str, Any], model: Model, provider: Provider, prompt: int) -> int:
    """The most tokens one answer may hold: the least of the bounds that apply (the
    registry refuses a hard budget on a model that has none)."""
    bounds: list[int] = []
    for key in ANSWER_LIMITS:
        value = sent.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            bounds.append(value)
            break
    else:
        if provider.kind in ANTHROPIC_KINDS:  # its API needs one: the provider sends its default
            bounds.append(DEFAULT_MAX_TOKENS)
    if model.max_output_tokens is not None:
        bounds.append(model.max_output_tokens)
    if model.context_window is not None:
        bounds.append(max(model.context_window - prompt, 1))
    if provider.kind == "llamacpp":
        bounds.append(provider.max_tokens)
    elif provider.kind == "echo":  # its reply, else the prompt's last message echoed
        bounds.append(count_tokens(provider.reply) if provider.reply is not None else prompt)
    return min(bounds) if bounds else 0
