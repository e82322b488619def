"""Column lists, row conversions and the read queries shared by the SQL backends."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from llmroute.telemetry.record import (
    CLIENT_DISCONNECTED,
    DECISION_COLUMNS,
    UNROUTED_APIS,
    FeedbackRecord,
    LoggedDecision,
    ShadowRecord,
)
from llmroute.telemetry.store.base import ApiTotal, ClientTotal, DecisionBucket, TagTotal

__all__ = [
    "DECISION_LIST",
    "FEEDBACK_COLUMNS",
    "FEEDBACK_LIST",
    "SHADOW_COLUMNS",
    "SHADOW_LIST",
    "SUMMARY_LIST",
    "SqlReads",
    "buckets_from_rows",
    "buckets_sql",
    "clients_sql",
    "feedback_from_row",
    "forget_sql",
    "prune_sql",
    "shadow_from_row",
    "shadow_row",
    "tags_sql",
    "totals_from_rows",
]

DECISION_LIST = ", ".join(DECISION_COLUMNS)
# The same columns with the heavy ones (signals JSON, prompt and answer text) read as NULL: what
# aggregate readers such as the dashboard load.
SUMMARY_LIST = ", ".join(
    f"NULL AS {c}" if c in ("signals", "prompt", "response") else c for c in DECISION_COLUMNS
)
FEEDBACK_COLUMNS: tuple[str, ...] = ("decision_id", "ts", "score", "thumbs", "comment")
FEEDBACK_LIST = ", ".join(FEEDBACK_COLUMNS)
SHADOW_COLUMNS: tuple[str, ...] = (
    "decision_id",
    "ts",
    "route",
    "routed_model",
    "reference_model",
    "routed_answer",
    "reference_answer",
    "judge",
    "routed_ok",
    "judge_score",
    "judge_error",
    "reference_latency_ms",
    "reference_cost_usd",
    "extra",
)
SHADOW_LIST = ", ".join(SHADOW_COLUMNS)


def shadow_row(record: ShadowRecord) -> tuple[Any, ...]:
    """The `SHADOW_COLUMNS` values; `extra` as JSON text."""
    return (
        record.decision_id,
        record.ts,
        record.route,
        record.routed_model,
        record.reference_model,
        record.routed_answer,
        record.reference_answer,
        record.judge,
        record.routed_ok,
        record.judge_score,
        record.judge_error,
        record.reference_latency_ms,
        record.reference_cost_usd,
        json.dumps(dict(record.extra), separators=(",", ":")),
    )


def shadow_from_row(row: tuple[Any, ...]) -> ShadowRecord:
    values = dict(zip(SHADOW_COLUMNS, row, strict=True))
    extra = values["extra"]
    values["extra"] = json.loads(extra) if isinstance(extra, str) else extra or {}
    if values["routed_ok"] is not None:
        values["routed_ok"] = bool(values["routed_ok"])
    return ShadowRecord(**values)


def feedback_from_row(row: tuple[Any, ...]) -> FeedbackRecord:
    decision_id, ts, score, thumbs, comment = row
    return FeedbackRecord(decision_id, ts, score=score, thumbs=thumbs, comment=comment)


# What the dashboard's counts take from each group of decisions: requests, errors (as
# `report.is_error` counts them: a client that hung up is none), and spending (logged
# costs; the tokens of rows without one, priced afterwards).
_ERRORS = (
    "sum(CASE WHEN (status >= 400 OR error IS NOT NULL)"
    f" AND coalesce(error, '') <> '{CLIENT_DISCONNECTED}' THEN 1 ELSE 0 END)"
)
_SPEND = (
    "coalesce(sum(cost_usd), 0), "
    "coalesce(sum(CASE WHEN cost_usd IS NULL THEN tokens_in END), 0), "
    "coalesce(sum(CASE WHEN cost_usd IS NULL THEN tokens_out END), 0)"
)
# the /v1/route decisions and the embeddings and rerank requests, which the rates leave
# out (`report.of_dispatched`, `report.of_routed`)
_ROUTE_ONLY = "sum(CASE WHEN route_only THEN 1 ELSE 0 END)"
_UNROUTED_APIS = ", ".join(f"'{api}'" for api in sorted(UNROUTED_APIS))
_UNROUTED = f"sum(CASE WHEN api IN ({_UNROUTED_APIS}) THEN 1 ELSE 0 END)"


def buckets_sql(bucket: str, attempts: str, first_attempt: str, where: str) -> str:
    """`DecisionBucket` rows; `bucket`, `attempts` and `first_attempt` are the backend's
    expressions for ``floor((ts - start) / step)``, the length of the attempt path and
    its first entry's text. A fallback is a request that went on to another model after
    a failed attempt, answered or not (`report.is_fallback`): a path of two entries or
    more, or of one that does not name the model that answered."""
    fell_back = (
        f"CASE WHEN {attempts} >= 2 THEN 1 WHEN {attempts} = 1 AND served_model IS NOT NULL "
        f"AND substr({first_attempt}, 1, length(served_model) + 1) <> served_model || ' ' "
        "THEN 1 ELSE 0 END"
    )
    return (
        f"SELECT {bucket} AS bucket, route, model, count(*), {_ERRORS}, "
        f"sum(CASE WHEN cache_hit THEN 1 ELSE 0 END), "
        f"sum({fell_back}), "
        f"{_SPEND}, {_ROUTE_ONLY}, {_UNROUTED} "
        f"FROM decisions WHERE {where} GROUP BY bucket, route, model"
    )


def clients_sql(where: str, column: str = "client") -> str:
    """`ClientTotal` rows (`ApiTotal` rows with `column` ``api``)."""
    return (
        f"SELECT {column}, model, count(*), {_ERRORS}, {_SPEND}, {_ROUTE_ONLY} "
        f"FROM decisions WHERE {where} GROUP BY {column}, model"
    )


def tags_sql(where: str, each_tag: str) -> str:
    """`TagTotal` rows: one group per (tag, model) over the rows' tags (`each_tag` is the
    backend's table function yielding a row's tags as ``j.value``), then the untagged
    rows as tag NULL. `where` appears twice: its parameters are bound twice."""
    return (
        f"SELECT j.value, model, count(*), {_ERRORS}, {_SPEND}, {_ROUTE_ONLY} "
        f"FROM decisions, {each_tag} WHERE {where} GROUP BY j.value, model "
        f"UNION ALL SELECT NULL, model, count(*), {_ERRORS}, {_SPEND}, {_ROUTE_ONLY} "
        f"FROM decisions WHERE {where} AND tags IS NULL GROUP BY model"
    )


def buckets_from_rows(rows: list[tuple[Any, ...]]) -> list[DecisionBucket]:
    return [
        DecisionBucket(
            int(b), r, m, int(n), int(e), int(c), int(f), float(u), int(i), int(o), int(q), int(x)
        )
        for b, r, m, n, e, c, f, u, i, o, q, x in rows
    ]


Total = TypeVar("Total", ClientTotal, TagTotal, ApiTotal)


def totals_from_rows(rows: list[tuple[Any, ...]], kind: type[Total]) -> list[Total]:
    """`ClientTotal`, `TagTotal` or `ApiTotal` rows (the same columns, named apart)."""
    return [
        kind(g, m, int(n), int(e), float(u), int(i), int(o), int(q))
        for g, m, n, e, u, i, o, q in rows
    ]


class SqlReads:
    """The read side of a SQL store, written once: a backend names its parameter marker
    and two expressions, and runs a query in `_select`."""

    _marker: ClassVar[str]  # the driver's parameter placeholder: "%s" or "?"
    _bucket: ClassVar[str]  # floor((ts - start) / step) as an integer, start and step bound
    _attempts: ClassVar[str]  # the length of the row's attempt path
    _first_attempt: ClassVar[str]  # the text of its first entry
    _each_tag: ClassVar[str]  # a FROM item yielding the row's tags as j.value

    def _select(self, sql: str, params: tuple[Any, ...], what: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _between(self, since: float, until: float | None) -> tuple[str, tuple[float, ...]]:
        if until is None:
            return f"ts >= {self._marker}", (since,)
        return f"ts >= {self._marker} AND ts < {self._marker}", (since, until)

    def has_decision(self, decision_id: str, *, by: str | None = None) -> bool:
        sql = f"SELECT 1 FROM decisions WHERE id = {self._marker}"
        if by is None:
            return bool(self._select(sql, (decision_id,), "read decisions"))
        sql += f" AND client = {self._marker}"
        return bool(self._select(sql, (decision_id, by), "read decisions"))

    def decisions(
        self,
        since: float,
        until: float | None = None,
        *,
        newest: int | None = None,
        details: bool = True,
    ) -> list[LoggedDecision]:
        where, params = self._between(since, until)
        columns = DECISION_LIST if details else SUMMARY_LIST
        sql = f"SELECT {columns} FROM decisions WHERE {where} ORDER BY ts, id"
        if newest is not None:
            sql = (
                f"SELECT * FROM (SELECT {columns} FROM decisions WHERE {where} "
                f"ORDER BY ts DESC, id DESC LIMIT {self._marker}) AS newest ORDER BY ts, id"
            )
            params = (*params, max(0, int(newest)))
        return [LoggedDecision.from_row(r) for r in self._select(sql, params, "read decisions")]

    def feedback(self, since: float, until: float | None = None) -> list[FeedbackRecord]:
        where, params = self._between(since, until)
        sql = f"SELECT {FEEDBACK_LIST} FROM feedback WHERE {where} ORDER BY ts, id"
        return [feedback_from_row(r) for r in self._select(sql, params, "read feedback")]

    def shadows(self, since: float, until: float | None = None) -> list[ShadowRecord]:
        where, params = self._between(since, until)
        sql = f"SELECT {SHADOW_LIST} FROM shadow WHERE {where} ORDER BY ts, id"
        return [shadow_from_row(r) for r in self._select(sql, params, "read shadow records")]

    def decision_buckets(
        self, since: float, until: float | None, start: float, step: float
    ) -> list[DecisionBucket]:
        where, params = self._between(since, until)
        sql = buckets_sql(self._bucket, self._attempts, self._first_attempt, where)
        return buckets_from_rows(self._select(sql, (start, step, *params), "count decisions"))

    def client_totals(self, since: float, until: float | None) -> list[ClientTotal]:
        where, params = self._between(since, until)
        rows = self._select(clients_sql(where), params, "count decisions")
        return totals_from_rows(rows, ClientTotal)

    def api_totals(self, since: float, until: float | None) -> list[ApiTotal]:
        where, params = self._between(since, until)
        rows = self._select(clients_sql(where, "api"), params, "count decisions")
        return totals_from_rows(rows, ApiTotal)

    def tag_totals(self, since: float, until: float | None) -> list[TagTotal]:
        where, params = self._between(since, until)
        sql = tags_sql(where, self._each_tag)
        return totals_from_rows(self._select(sql, params * 2, "count decisions"), TagTotal)

    def count_decisions(self, since: float | None = None, until: float | None = None) -> int:
        if since is None and until is None:
            rows = self._select("SELECT count(*) FROM decisions", (), "count decisions")
        else:
            where, params = self._between(since if since is not None else float("-inf"), until)
            sql = f"SELECT count(*) FROM decisions WHERE {where}"
            rows = self._select(sql, params, "count decisions")
        return int(rows[0][0])


def forget_sql(
    end_users: Sequence[str], client: str | None, mark: str
) -> tuple[list[str], tuple[Any, ...]]:
    """The statements erasing the decisions of `end_users` (any of them) made with the
    client key `client` ('' for requests made without one): each given narrows, as a
    filter does (both: that end user's requests with that key). Their feedback and shadow
    rows go first; `mark` is the backend's parameter mark. Their shared parameters are
    bound to each statement."""
    conditions: list[str] = []
    params: list[Any] = []
    if end_users:
        conditions.append(f"end_user IN ({', '.join([mark] * len(end_users))})")
        params.extend(end_users)
    if client is not None:
        conditions.append("client IS NULL" if client == "" else f"client = {mark}")
        if client:
            params.append(client)
    if not conditions:
        raise ValueError("forget what: give end users or a client")
    where = " AND ".join(conditions)
    chosen = f"SELECT id FROM decisions WHERE {where}"
    return [
        f"DELETE FROM shadow WHERE decision_id IN ({chosen})",
        f"DELETE FROM feedback WHERE decision_id IN ({chosen})",
        f"DELETE FROM decisions WHERE {where}",
    ], tuple(params)


def prune_sql(mark: str, most: int) -> list[str]:
    """The statements erasing the oldest `most` decisions older than the parameter
    `mark` (bound to each statement), their feedback and shadow rows first. Run in one
    write transaction of SQLite (one writer at a time), each statement picks the same
    decisions: ``ts, id`` orders them all. (PostgreSQL's store chooses them once, in one
    statement, skipping rows another pruner holds.)"""
    chosen = f"SELECT id FROM decisions WHERE ts < {mark} ORDER BY ts, id LIMIT {int(most)}"
    return [
        f"DELETE FROM shadow WHERE decision_id IN ({chosen})",
        f"DELETE FROM feedback WHERE decision_id IN ({chosen})",
        f"DELETE FROM decisions WHERE id IN ({chosen})",
    ]
