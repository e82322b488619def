"""`Store`: what every decision-log backend (SQLite, PostgreSQL) offers.

Stores are synchronous: the batching writer calls them from its own thread, and the
gateway's feedback endpoint and the report CLIs call them through a thread
(``asyncio.to_thread``), so nothing blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from llmroute.telemetry.record import (
    DecisionRecord,
    FeedbackRecord,
    LoggedDecision,
    ShadowRecord,
)
from llmroute.telemetry.store.migrate import Backend

__all__ = ["ApiTotal", "ClientTotal", "DecisionBucket", "Store", "TagTotal"]


class DecisionBucket(NamedTuple):
    """The decisions of one (time bucket, route, model), counted by the database: exact
    over a whole window however many rows it holds. `bucket` is ``floor((ts - start) /
    step)``; an error is a status >= 400 or an error code (a client that hung up is
    none: `report.is_error`), a fallback a request that went on to another model after
    a failed attempt, answered or not (`report.is_fallback`); `cost_usd` sums the logged costs and
    `tokens_in`/`tokens_out` the tokens of the rows without one (priced afterwards at the
    model's registry price). `route_only` counts the ``/v1/route`` decisions and
    `unrouted` the embeddings and rerank requests, which the rates leave out
    (`report.of_dispatched`, `report.of_routed`)."""

    bucket: int
    route: str
    model: str
    requests: int
    errors: int
    cache_hits: int
    fallbacks: int
    cost_usd: float
    tokens_in: int
    tokens_out: int
    route_only: int = 0
    unrouted: int = 0


class ClientTotal(NamedTuple):
    """The decisions of one (gateway client key, model) over a window, counted by the
    database; `client` is None for requests made without a key. The fields mean what
    `DecisionBucket`'s do."""

    client: str | None
    model: str
    requests: int
    errors: int
    cost_usd: float
    tokens_in: int
    tokens_out: int
    route_only: int = 0


class ApiTotal(NamedTuple):
    """The decisions of one (API they came by, model) over a window, counted by the
    database; `api` is None for rows without one (the SDK's, ``/v1/route``, older rows).
    The fields mean what `DecisionBucket`'s do."""

    api: str | None
    model: str
    requests: int
    errors: int
    cost_usd: float
    tokens_in: int
    tokens_out: int
    route_only: int = 0


class TagTotal(NamedTuple):
    """The decisions of one (``x-llmroute-tags`` tag, model) over a window, counted by the
    database: a request with two tags counts under each; `tag` is None for requests
    without any. The fields mean what `DecisionBucket`'s do."""

    tag: str | None
    model: str
    requests: int
    errors: int
    cost_usd: float
    tokens_in: int
    tokens_out: int
    route_only: int = 0


class Store(Protocol):
    """A decision log. `url` is shown with any password masked; `backend` names its
    migrations."""

    url: str
    backend: Backend

    def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in place."""
        ...

    def schema_version(self) -> int:
        """The applied schema version (0 for an empty database)."""
        ...

    def write_decisions(self, records: Sequence[DecisionRecord]) -> int:
        """Insert a batch in one transaction (a decision id seen twice is ignored); the
        number of records left out, their rows not built (`decision_rows`)."""
        ...

    def write_feedback(self, feedback: FeedbackRecord, *, by: str | None = None) -> bool:
        """Store feedback; False (nothing stored) when the decision id is unknown, was
        made for another client key than `by` (None: any), or is an embeddings or rerank
        request's (layer ``(unrouted)``: no routing to judge)."""
        ...

    def write_shadow(self, record: ShadowRecord) -> None: ...

    def forget(
        self, *, end_users: Sequence[str] = (), client: str | None = None
    ) -> tuple[int, int, int]:
        """Erase the decisions of `end_users` (as logged; any of them) made with the client
        key `client` ('' for requests without one; None: any key), or all of the key's
        without `end_users`, with their feedback and shadow rows; the counts (decisions,
        feedback, shadow)."""
        ...

    def prune(self, before: float, *, most: int) -> tuple[int, int, int]:
        """Erase the oldest `most` decisions logged before `before` (Unix seconds), with
        their feedback and shadow rows, in one transaction; the counts (decisions,
        feedback, shadow). Fewer than `most` decisions: none older is left."""
        ...

    def has_decision(self, decision_id: str, *, by: str | None = None) -> bool: ...

    def decisions(
        self,
        since: float,
        until: float | None = None,
        *,
        newest: int | None = None,
        details: bool = True,
    ) -> list[LoggedDecision]:
        """Decisions with ``since <= ts < until`` (no upper bound when None), oldest first;
        with `newest`, only the last `newest` of them (a bounded read for the dashboard).
        Without `details`, `signals` is empty and `prompt` None (not read at all)."""
        ...

    def feedback(self, since: float, until: float | None = None) -> list[FeedbackRecord]: ...

    def shadows(self, since: float, until: float | None = None) -> list[ShadowRecord]: ...

    def decision_buckets(
        self, since: float, until: float | None, start: float, step: float
    ) -> list[DecisionBucket]:
        """`DecisionBucket` rows for the decisions in ``since <= ts < until``."""
        ...

    def client_totals(self, since: float, until: float | None) -> list[ClientTotal]:
        """`ClientTotal` rows for the decisions in ``since <= ts < until``."""
        ...

    def tag_totals(self, since: float, until: float | None) -> list[TagTotal]:
        """`TagTotal` rows for the decisions in ``since <= ts < until``."""
        ...

    def api_totals(self, since: float, until: float | None) -> list[ApiTotal]:
        """`ApiTotal` rows for the decisions in ``since <= ts < until``."""
        ...

    def count_decisions(self, since: float | None = None, until: float | None = None) -> int:
        """All decisions, or those in ``since <= ts < until`` when either bound is given."""
        ...

    def close(self, timeout_s: float | None = None) -> None:
        """Release the store's connections; `timeout_s` bounds the wait for work of its
        own still under way (PostgreSQL's connection attempts to a server that does not
        answer), which is then left to end by itself (None: the store's own bound)."""
        ...
