"""`Balancer`: the order in which to try a model's deployments.

The caller tries deployments in the returned order, moving on when one is skipped (open
breaker) or fails, so every strategy returns a full preference order, not one pick:

- ``weighted``: a weighted random permutation (Efraimidis–Spirakis), so deployment i
  comes first with probability w_i / Σw and the rest follow in weighted order too;
- ``least_in_flight``: fewest requests in flight per unit of weight first (a stream is
  in flight until it ends, not just until its first event: the caller holds its count,
  `llmroute.dispatch.deployments.InFlight`);
- ``latency``: lowest moving average (EWMA) of observed latency first;
- ``sticky``: by the request's conversation (`order`'s `key`), with rendezvous hashing
  weighted like ``weighted``: every request of a conversation prefers the same deployment
  (a self-hosted server keeps its prompt-prefix cache), conversations spread by weight,
  and one deployment leaving moves only its own conversations. Without a key, weighted.

Ties are broken at random so equal deployments share traffic instead of the first one
taking it all. Randomness comes from the injected `rng`, so tests are reproducible.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence

from llmroute.registry.schema import Balance

__all__ = ["FAILURE_PENALTY_S", "MAX_PENALTY_S", "Balancer"]

FAILURE_PENALTY_S = 1.0  # a failure counts as at least this latency
MAX_PENALTY_S = 300.0  # ... and at most this, so repeated failures cannot overflow the EWMA

# latency tiers: try unmeasured deployments first, unless one is already being measured
_UNMEASURED, _MEASURED, _MEASURING = 0, 1, 2


class Balancer:
    """Orders the deployments of one model by `strategy`; `weights` is one positive
    weight per deployment, indexed as the caller indexes its deployments."""

    def __init__(
        self,
        weights: Sequence[float],
        strategy: Balance,
        *,
        rng: random.Random,
        ewma_alpha: float = 0.3,
    ) -> None:
        if not weights or not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"weights must be positive and finite, got {list(weights)}")
        if not 0.0 < ewma_alpha <= 1.0:
            raise ValueError(f"ewma_alpha must be in (0, 1], got {ewma_alpha}")
        self._weights = [float(w) for w in weights]
        self._strategy = strategy
        self._rng = rng
        self._alpha = ewma_alpha
        self._in_flight = [0] * len(weights)
        self._ewma: list[float | None] = [None] * len(weights)
        self._orderers: dict[str, Callable[[Sequence[int]], list[int]]] = {
            "weighted": self._weighted,
            "least_in_flight": self._least_in_flight,
            "latency": self._fastest,
            "sticky": self._weighted,  # the keyed order is `_rendezvous`
        }
        if strategy not in self._orderers:
            raise ValueError(f"unknown balance strategy {strategy!r}")

    @property
    def strategy(self) -> Balance:
        return self._strategy

    def order(self, candidates: Sequence[int], key: str | None = None) -> list[int]:
        """`candidates` (deployment indices) in the order to try them; `key` names the
        request's conversation for ``sticky``."""
        if len(candidates) == 1:  # the common case: one deployment, nothing to order
            return [candidates[0]]
        if key is not None and self._strategy == "sticky":
            return self._rendezvous(candidates, key)
        return self._orderers[self._strategy](candidates)

    def _rendezvous(self, candidates: Sequence[int], key: str) -> list[int]:
        """Weighted rendezvous hashing: a deterministic u in (0, 1) per (key, deployment)
        ranked as `_weighted` ranks random ones, so deployment i comes first for a share
        w_i / Σw of keys."""

        def rank(i: int) -> float:
            digest = hashlib.blake2b(f"{key}:{i}".encode(), digest_size=8).digest()
            u = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)
            return math.log(u) / self._weights[i]

        return sorted(candidates, key=rank, reverse=True)

    def start(self, index: int) -> None:
        """A request to deployment `index` began."""
        self._in_flight[index] += 1

    def finish(self, index: int, *, latency_s: float | None) -> None:
        """A request to deployment `index` ended, after `latency_s` seconds, or failed
        (None), which counts as a penalty latency so a failing deployment sorts later."""
        self._in_flight[index] = max(0, self._in_flight[index] - 1)
        self.sample(index, latency_s=latency_s)

    def sample(self, index: int, *, latency_s: float | None) -> None:
        """A latency (None: a failure's penalty) of deployment `index`, apart from its
        in-flight count: a stream is timed by its first event (handed over before it:
        when it comes) but stays in flight until it ends."""
        previous = self._ewma[index]
        if latency_s is None:
            sample = min(MAX_PENALTY_S, max(2.0 * (previous or 0.0), FAILURE_PENALTY_S))
        elif math.isfinite(latency_s):
            sample = max(0.0, latency_s)
        else:
            return  # a broken clock reading teaches nothing
        if previous is None:
            self._ewma[index] = sample
        else:
            self._ewma[index] = self._alpha * sample + (1.0 - self._alpha) * previous

    def release(self, index: int) -> None:
        """A request to deployment `index` ended saying nothing about its speed or health
        (the request's own 4xx, a cancellation): in-flight − 1, no latency sample."""
        self._in_flight[index] = max(0, self._in_flight[index] - 1)

    def in_flight(self, index: int) -> int:
        return self._in_flight[index]

    def latency(self, index: int) -> float | None:
        """The EWMA latency of deployment `index` in seconds; None before any outcome."""
        return self._ewma[index]

    def _weighted(self, candidates: Sequence[int]) -> list[int]:
        # Efraimidis–Spirakis: sort by u ** (1 / w) descending, in log form (log u / w)
        # so small weights do not underflow; 1 - random() is in (0, 1], so log is finite.
        keys = {i: math.log(1.0 - self._rng.random()) / self._weights[i] for i in candidates}
        return sorted(candidates, key=keys.__getitem__, reverse=True)

    def _least_in_flight(self, candidates: Sequence[int]) -> list[int]:
        return self._sorted(candidates, lambda i: (self._in_flight[i] / self._weights[i], 0.0))

    def _fastest(self, candidates: Sequence[int]) -> list[int]:
        def key(i: int) -> tuple[float, float]:
            ewma = self._ewma[i]
            if ewma is None:
                return (_MEASURING if self._in_flight[i] else _UNMEASURED, 0.0)
            return (_MEASURED, ewma)

        return self._sorted(candidates, key)

    def _sorted(
        self, candidates: Sequence[int], key: Callable[[int], tuple[float, float]]
    ) -> list[int]:
        """`candidates` ascending by `key`, ties in random order."""
        tagged = sorted((key(i), self._rng.random(), i) for i in candidates)
        return [i for _, _, i in tagged]
