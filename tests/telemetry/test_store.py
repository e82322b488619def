"""Both decision-log backends against the `Store` contract: migrations, every field of a
record round-tripping, feedback, shadow records, URLs and masking."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from telemetry_records import PG_BASE, MakeRecord, pg_execute

from llmroute.dispatch.usage import Usage
from llmroute.errors import ConfigError, TelemetryError
from llmroute.registry.schema import TelemetrySettings
from llmroute.telemetry.dashboard import Grid, aggregate, api_totals, client_totals, tag_totals
from llmroute.telemetry.record import (
    DECISION_COLUMNS,
    DecisionRecord,
    FeedbackRecord,
    LoggedDecision,
    ShadowRecord,
    prompt_hash,
)
from llmroute.telemetry.recorder import Recorder
from llmroute.telemetry.store import (
    SqliteStore,
    Store,
    latest_version,
    load_migrations,
    mask_url,
    open_store,
    pending_migrations,
    resolve_telemetry_url,
)
from llmroute.telemetry.store.postgres import PostgresStore

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def fresh(store_url: str) -> Iterator[Store]:
    """An empty, unmigrated store."""
    store = open_store(store_url, pool_size=2)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def store(fresh: Store) -> Store:
    fresh.migrate()
    return fresh


# -- migrations -------------------------------------------------------------------------


def test_migrations_apply_from_empty_and_are_idempotent(fresh: Store) -> None:
    assert fresh.schema_version() == 0
    labels = [m.label for m in pending_migrations(fresh)]
    assert labels == [
        "0001_initial",
        "0002_client",
        "0003_route_only",
        "0004_attribution",
        "0005_response",
        "0006_api",
    ]
    assert fresh.migrate() == latest_version("sqlite") == latest_version("postgres") == 6
    assert fresh.schema_version() == 6
    assert pending_migrations(fresh) == []
    assert fresh.migrate() == 6  # a second run is a no-op
    assert fresh.count_decisions() == 0


def test_a_log_at_version_1_keeps_its_rows_when_upgraded(
    store_url: str, make_record: MakeRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log written before the client, route_only, end_user, tags, response and api
    columns existed: migrations 0002 to 0006 add them, the old rows read back with no
    client, user, tags or API and as dispatched requests, and new rows carry theirs."""
    from llmroute.telemetry.store import migrate

    shipped = migrate.load_migrations
    monkeypatch.setattr(migrate, "load_migrations", lambda backend: shipped(backend)[:1])
    store = open_store(store_url)
    try:
        assert store.migrate() == 1  # the schema as version 1 of the code left it
        added = ("client", "route_only", "end_user", "tags", "response", "api")
        old_columns = [c for c in DECISION_COLUMNS if c not in added]
        row = make_record(0).to_row()[: len(old_columns)]
        sql = f"INSERT INTO decisions ({', '.join(old_columns)}) VALUES "
        if isinstance(store, SqliteStore):
            with store._transaction("insert a version-1 row") as conn:
                conn.execute(sql + f"({', '.join('?' * len(row))})", row)
        else:
            with store._connection("insert a version-1 row") as conn:
                conn.execute((sql + f"({', '.join(['%s'] * len(row))})").encode(), row)
        monkeypatch.setattr(migrate, "load_migrations", shipped)
        assert store.migrate() == 6
        (old,) = store.decisions(0.0)
        assert old.id == row[0] and old.client is None and old.route_only is False
        assert (old.end_user, old.tags, old.response, old.api) == (None, (), None, None)
        store.write_decisions(
            [
                make_record(
                    1,
                    client="team-a",
                    end_user="u-1",
                    tags=("team:search", "app=web"),
                    response="the answer",
                    response_mode="full",
                    api="completions",
                ),
                make_record(2, client="team-b", route_only=True),
            ]
        )
        rows = store.decisions(0.0)
        assert [(d.client, d.route_only, d.end_user, d.tags) for d in rows] == [
            (None, False, None, ()),
            ("team-a", False, "u-1", ("team:search", "app=web")),
            ("team-b", True, None, ()),
        ]
        assert [d.response for d in rows] == [None, "the answer", None]
        assert [d.api for d in rows] == [None, "completions", None]
        summary = store.decisions(0.0, details=False)
        assert [d.tags for d in summary] == [(), ("team:search", "app=web"), ()]
        assert [d.response for d in summary] == [None, None, None]  # a heavy column
        assert [d.route_only for d in store.decisions(0.0, details=False)] == [False, False, True]
    finally:
        store.close()


def test_concurrent_migrations_do_not_race(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(3)]
    results: list[int | BaseException] = []

    def run(s: Store) -> None:
        try:
            results.append(s.migrate())
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in stores:
        s.close()
    assert results == [6, 6, 6]


def test_migration_files_ship_as_package_data() -> None:
    root = resources.files("llmroute.telemetry.migrations")
    for backend in ("sqlite", "postgres"):
        assert root.joinpath(backend, "0001_initial.sql").is_file()
        first, *rest = load_migrations(backend)
        assert first.version == 1 and first.name == "initial"
        assert any(s.startswith("CREATE TABLE decisions") for s in first.statements())
        assert [(m.version, m.name) for m in rest] == [
            (2, "client"),
            (3, "route_only"),
            (4, "attribution"),
            (5, "response"),
            (6, "api"),
        ]


# -- decisions --------------------------------------------------------------------------


def _check_round_trip(record: DecisionRecord, got: LoggedDecision) -> None:
    d = record.decision
    row = dict(zip(DECISION_COLUMNS, record.to_row(), strict=True))
    assert got.id == d.id
    assert got.ts == record.ts
    assert got.registry_version == d.registry_version
    assert got.route == d.route
    assert got.model == d.model
    assert got.served_model == record.served_model
    assert got.deployment == record.deployment
    assert got.layer == d.layer
    assert got.confidence == d.confidence
    assert got.margin == d.margin
    assert dict(got.signals) == json.loads(row["signals"])
    assert got.signals["safety"]["pii"] == {"EMAIL": 1}
    assert got.signals["layers"][1]["detail"]["method"] == "linear"
    assert got.status == record.status
    assert got.error == record.error
    assert got.latency_ms == record.latency_ms
    assert got.ttft_ms == record.ttft_ms
    assert got.tokens_in == record.tokens_in
    assert got.tokens_out == record.tokens_out
    assert got.cost_usd == record.cost_usd
    assert got.usage_estimated is record.usage_estimated
    assert got.attempts == record.attempts
    assert got.cache_hit is record.cache_hit
    assert got.stream is record.stream
    assert got.shadow is record.shadow
    assert got.prompt_mode == record.prompt_mode
    assert got.prompt_hash == row["prompt_hash"]
    assert got.prompt == row["prompt"]
    assert got.api == record.api


def test_every_field_round_trips(store: Store, make_record: MakeRecord) -> None:
    records = [
        make_record(0, prompt_mode="off"),
        make_record(1, prompt_mode="hash"),
        make_record(2, prompt_mode="redacted"),
        make_record(3, prompt_mode="redacted", redacted_prompt=None),
        make_record(4, prompt_mode="full", api="messages"),
        make_record(
            5,
            status=502,
            error="upstream_error",
            served_model=None,
            deployment=None,
            ttft_ms=None,
            tokens_in=None,
            tokens_out=None,
            cost_usd=None,
            usage_estimated=False,
            attempts=(),
            cache_hit=True,
            stream=False,
            shadow=True,
            prompt=None,
        ),
    ]
    store.write_decisions(records)
    got = store.decisions(0.0)
    assert [g.id for g in got] == [r.id for r in records]  # oldest first
    for record, logged in zip(records, got, strict=True):
        _check_round_trip(record, logged)
    off, hashed, redacted, unredacted, full, failed = got
    text = records[2].prompt
    assert text is not None
    assert (off.prompt_hash, off.prompt) == (None, None)
    assert hashed.prompt_hash == prompt_hash(records[1].prompt or "") and hashed.prompt is None
    assert redacted.prompt == "my email is <EMAIL>, request 2"
    assert redacted.prompt_hash == prompt_hash(text)
    # no redaction made on the request path: the writer's thread makes it
    assert unredacted.prompt == "my email is <EMAIL_1>, request 3"
    assert full.prompt == records[4].prompt
    assert failed.error == "upstream_error" and failed.attempts == () and failed.shadow
    assert failed.prompt_hash is None


def test_duplicate_ids_are_ignored_and_time_windows_apply(
    store: Store, make_record: MakeRecord
) -> None:
    records = [make_record(i) for i in range(10)]
    store.write_decisions(records[:6])
    store.write_decisions(records[4:])  # 4 and 5 again, in a batch with new ones
    store.write_decisions([])
    assert store.count_decisions() == 10
    t0 = records[0].ts
    assert [d.id for d in store.decisions(t0 + 2, t0 + 5)] == [r.id for r in records[2:5]]
    assert len(store.decisions(t0 + 8)) == 2
    assert store.has_decision(records[3].id)
    assert not store.has_decision("nope")


def test_bounded_reads_take_the_newest_rows_oldest_first(
    store: Store, make_record: MakeRecord
) -> None:
    records = [make_record(i) for i in range(10)]
    store.write_decisions(records)
    t0 = records[0].ts
    assert [d.id for d in store.decisions(t0, newest=3)] == [r.id for r in records[7:]]
    assert [d.id for d in store.decisions(t0 + 1, t0 + 6, newest=2)] == [r.id for r in records[4:6]]
    assert store.decisions(t0, newest=0) == []
    assert len(store.decisions(t0, newest=50)) == 10
    assert store.count_decisions(t0 + 2, t0 + 5) == 3
    assert store.count_decisions(t0 + 8) == 2
    assert store.count_decisions(until=t0 + 1) == 1
    light = store.decisions(t0, newest=2, details=False)
    full = store.decisions(t0, newest=2)
    assert [d.id for d in light] == [d.id for d in full]
    assert full[0].signals and full[0].prompt_hash
    assert light[0].signals == {} and light[0].prompt is None
    assert light[0].prompt_hash == full[0].prompt_hash and light[0].margin == full[0].margin


def test_the_database_counts_buckets_as_the_dashboard_would(
    store: Store, make_record: MakeRecord
) -> None:
    t0 = 1_700_000_000.0
    records = [
        make_record(
            i,
            ts=t0 + 7 * i,
            status=502 if i % 5 == 0 else 499 if i % 7 == 3 else 200,
            error=(
                "upstream_error"
                if i % 5 == 0
                else "client_disconnected"  # a client that hung up: no error
                if i % 7 in (3, 4)
                else None
            ),
            cache_hit=i % 3 == 0,
            attempts=(
                ("big (timeout)",)
                if i % 4 == 0
                else ("big (timeout)", "small (HTTP 503)")  # failed down its chain
                if i % 10 == 5
                # a stream that failed on its own model after its 200: no fallback
                else ("small-model-2024 via up (HTTP 503)",)
                if i % 10 == 7
                else ()
            ),
            served_model=None if i % 5 == 0 else "small-model-2024",  # failed: none answered
            cost_usd=0.01 if i % 2 else None,
            tokens_in=None if i == 9 else 100 + i,
            client="team-a" if i % 2 else None,
            tags=("team:a", "app=x") if i % 3 == 0 else ("team:b",) if i % 3 == 1 else (),
            api="embeddings" if i % 9 == 2 else ("chat", "completions", None)[i % 3],
            route_only=i % 6 == 1,  # counted apart: the rates leave them out
        )
        for i in range(30)
    ]
    records = [
        dataclasses.replace(r, decision=dataclasses.replace(r.decision, route=f"r{i % 3}"))
        for i, r in enumerate(records)
    ]
    store.write_decisions(records)
    grid = Grid(start=t0 - 10, step=30, count=10)
    got = store.decision_buckets(t0, t0 + 200, grid.start, grid.step)
    expected = aggregate(store.decisions(t0, t0 + 200), grid)
    got, expected = sorted(got), sorted(expected)
    assert [b._replace(cost_usd=0.0) for b in got] == [b._replace(cost_usd=0.0) for b in expected]
    assert [b.cost_usd for b in got] == pytest.approx([b.cost_usd for b in expected])
    assert sum(b.requests for b in got) == 29  # ts t0 + 203 is outside
    assert sum(b.errors for b in got) == 6  # the upstream errors, i = 0, 5, ..., 25
    # went on after a failed attempt: answered, i = 4, 8, 12, 16, 24, 28; failed on the
    # next model too, i = 5, 15, 25 (0 and 20 failed on their only model, 7, 17 and 27
    # on the one that answered: no fallback)
    assert sum(b.fallbacks for b in got) == 9
    assert sum(b.route_only for b in got) == 5 and sum(b.unrouted for b in got) == 3
    assert {b.bucket for b in got} == set(range(7))

    clients = sorted(store.client_totals(t0, t0 + 200), key=str)
    reference = sorted(client_totals(store.decisions(t0, t0 + 200)), key=str)
    assert [c._replace(cost_usd=0.0) for c in clients] == [
        c._replace(cost_usd=0.0) for c in reference
    ]
    assert [c.cost_usd for c in clients] == pytest.approx([c.cost_usd for c in reference])
    assert {c.client for c in clients} == {None, "team-a"}

    tags = sorted(store.tag_totals(t0, t0 + 200), key=str)
    reference_tags = sorted(tag_totals(store.decisions(t0, t0 + 200)), key=str)
    assert [t._replace(cost_usd=0.0) for t in tags] == [
        t._replace(cost_usd=0.0) for t in reference_tags
    ]
    assert [t.cost_usd for t in tags] == pytest.approx([t.cost_usd for t in reference_tags])
    assert {t.tag for t in tags} == {None, "team:a", "app=x", "team:b"}
    per_tag = {tag: sum(t.requests for t in tags if t.tag == tag) for tag in ("team:a", None)}
    assert per_tag == {"team:a": 10, None: 9}  # i % 3 == 0 of 29; i % 3 == 2 untagged

    apis = sorted(store.api_totals(t0, t0 + 200), key=str)
    reference_apis = sorted(api_totals(store.decisions(t0, t0 + 200)), key=str)
    assert [a._replace(cost_usd=0.0) for a in apis] == [
        a._replace(cost_usd=0.0) for a in reference_apis
    ]
    assert [a.cost_usd for a in apis] == pytest.approx([a.cost_usd for a in reference_apis])
    per_api = {api: sum(a.requests for a in apis if a.api == api) for api in ("chat", None)}
    assert per_api == {"chat": 10, None: 6}  # i = 2, 11, 20 came by embeddings


class _Kept:
    """A decision log writer that keeps what it is offered."""

    def __init__(self) -> None:
        self.records: list[DecisionRecord] = []

    def offer(self, record: DecisionRecord) -> bool:
        self.records.append(record)
        return True


def test_embeddings_and_rerank_answers_are_logged_and_counted(
    store: Store, make_record: MakeRecord
) -> None:
    """An embeddings or rerank answer (`Recorder.unrouted`) is a row of its own: api and
    route say what it was, the pool model, key, tags, end user, tokens, cost and status
    round-trip, no routing fields; its text is kept as ``telemetry.prompts`` says, here
    redacted (the PII detector runs in the writer's thread, at `to_row`); and the
    database's per-key, per-API and per-bucket spend counts it beside the chats'."""
    kept = _Kept()
    recorder = Recorder(kept, None, "redacted", embeddings_text=True).for_client(
        "team-a", tags=("app=x",)
    )
    t0 = 1_700_000_000.0
    text = "contact bob@example.com about it"
    embedded = recorder.by_api("embeddings").unrouted(
        "(embeddings)",
        "embed",
        "v1",
        {"model": "embed", "input": [text, "two"], "user": "mary"},
        lambda body: "\n".join(body["input"]),
        ts=t0,
        started_ns=0,
        status=200,
        usage=Usage(prompt_tokens=2, completion_tokens=0, cost_usd=0.2, estimated=False),
    )
    reranked = recorder.by_api("rerank").unrouted(
        "(rerank)",
        "rr",
        "v1",
        {"model": "rr", "query": "q", "documents": ["a"]},
        lambda body: None,
        ts=t0 + 1,
        started_ns=0,
        status=502,
        error="upstream_error",
        attempts=("rr: HTTP 500",),
    )
    assert kept.records == [embedded, reranked]
    chat = make_record(0, ts=t0 + 2, client="team-a", api="chat", cost_usd=0.01)
    store.write_decisions([embedded, reranked, chat])

    got = {d.id: d for d in store.decisions(t0)}
    row = got[embedded.id]
    assert (row.api, row.route, row.model, row.served_model) == (
        "embeddings",
        "(embeddings)",
        "embed",
        "embed",
    )
    assert (row.layer, row.margin, row.route_only, row.unrouted) == (
        "(unrouted)",
        None,
        False,
        True,
    )
    assert (row.client, row.tags, row.end_user) == ("team-a", ("app=x",), "mary")
    assert (row.tokens_in, row.tokens_out, row.cost_usd, row.status) == (2, 0, 0.2, 200)
    assert row.prompt_mode == "redacted" and row.prompt is not None
    assert "bob@example.com" not in row.prompt and "<EMAIL_1>" in row.prompt
    assert row.prompt_hash == prompt_hash(f"{text}\ntwo")
    failed = got[reranked.id]
    assert (failed.api, failed.route, failed.status, failed.error) == (
        "rerank",
        "(rerank)",
        502,
        "upstream_error",
    )
    assert failed.served_model is None and failed.cost_usd is None and failed.unrouted
    assert failed.attempts == ("rr: HTTP 500",) and failed.prompt is None
    assert not got[chat.id].unrouted

    team = store.client_totals(t0, None)  # a row per (key, model)
    assert {c.client for c in team} == {"team-a"}
    assert (sum(c.requests for c in team), sum(c.errors for c in team)) == (3, 1)
    assert sum(c.cost_usd for c in team) == pytest.approx(0.21)
    by_api = {a.api: a for a in store.api_totals(t0, None)}
    assert by_api["embeddings"].cost_usd == pytest.approx(0.2)
    assert (by_api["rerank"].requests, by_api["rerank"].errors) == (1, 1)
    buckets = store.decision_buckets(t0, None, t0, 60)
    assert {(b.route, b.model) for b in buckets} >= {("(embeddings)", "embed"), ("(rerank)", "rr")}
    assert sum(b.cost_usd for b in buckets) == pytest.approx(0.21)

    # feedback judges a routing decision: an unrouted request takes none, a chat does
    for decision_id in (embedded.id, reranked.id, chat.id):
        judged = FeedbackRecord(decision_id, t0 + 3, thumbs="up")
        assert store.write_feedback(judged) is (decision_id == chat.id)
        assert store.has_decision(decision_id)
    assert [f.decision_id for f in store.feedback(t0)] == [chat.id]


# -- feedback and shadow ----------------------------------------------------------------


def test_a_nul_from_a_client_loses_no_record(store: Store, make_record: MakeRecord) -> None:
    """PostgreSQL refuses NUL in text and jsonb, and the whole batch with it: one client
    sending "\\u0000" must not drop the records of everyone written beside it."""
    bad = make_record(
        0,
        prompt_mode="full",
        prompt="a\x00b",
        end_user="\x00",
        error="up\x00",
        attempts=("big (said \x00)", "small (said \\u0000, escaped)"),
    )
    records = [bad, make_record(1), make_record(2)]
    store.write_decisions(records)
    got = store.decisions(0.0)
    assert [g.id for g in got] == [r.id for r in records]
    stored = got[0]
    assert stored.prompt in ("a\x00b", "a\ufffdb") and stored.end_user in ("\x00", "\ufffd")
    assert stored.error in ("up\x00", "up\ufffd")
    assert stored.attempts[0] in ("big (said \x00)", "big (said \ufffd)")
    assert stored.attempts[1] == "small (said \\u0000, escaped)"  # the text, not a NUL
    assert store.write_feedback(FeedbackRecord(bad.id, 1_700_000_100.0, comment="x\x00")) is True


def test_feedback_for_known_and_unknown_ids(store: Store, make_record: MakeRecord) -> None:
    record = make_record(0)
    store.write_decisions([record])
    first = FeedbackRecord(record.id, 1_700_000_100.0, score=0.75, thumbs="up", comment="ok")
    second = FeedbackRecord(record.id, 1_700_000_200.0, thumbs="down")
    assert store.write_feedback(first) is True
    assert store.write_feedback(second) is True
    assert store.write_feedback(FeedbackRecord("unknown", 1_700_000_300.0, score=1.0)) is False
    assert store.feedback(0.0) == [first, second]
    assert store.feedback(1_700_000_150.0) == [second]
    assert store.feedback(0.0, 1_700_000_150.0) == [first]


def test_feedback_by_a_key_finds_that_keys_decisions_only(
    store: Store, make_record: MakeRecord
) -> None:
    record = make_record(0, client="team-a")
    store.write_decisions([record])
    feedback = FeedbackRecord(record.id, 1_700_000_100.0, thumbs="down")
    assert not store.has_decision(record.id, by="team-b")
    assert store.write_feedback(feedback, by="team-b") is False
    assert store.has_decision(record.id, by="team-a")
    assert store.write_feedback(feedback, by="team-a") is True
    assert store.write_feedback(feedback) is True  # no key to scope by: any decision
    assert len(store.feedback(0.0)) == 2


def test_shadow_records_round_trip(store: Store) -> None:
    full = ShadowRecord(
        decision_id="d1",
        ts=1_700_000_000.5,
        route="billing",
        routed_model="small",
        reference_model="big",
        routed_answer="42",
        reference_answer="forty-two",
        judge="model:big",
        routed_ok=True,
        judge_score=0.9,
        judge_error=None,
        reference_latency_ms=1234.5,
        reference_cost_usd=0.002,
        extra={"tokens": [1, 2], "note": "ünïcode"},
    )
    bare = ShadowRecord("d2", 1_700_000_001.0, "math", "small", "big", None, None)
    failed = ShadowRecord(
        "d3", 1_700_000_002.0, "math", "s", "b", "x", "y", routed_ok=False, judge_error="boom"
    )
    for record in (full, bare, failed):
        store.write_shadow(record)
    assert store.shadows(0.0) == [full, bare, failed]
    assert store.shadows(1_700_000_001.0, 1_700_000_002.0) == [bare]


# -- failures ---------------------------------------------------------------------------


def test_postgres_down_is_a_clear_error_without_the_password(closed_port: int) -> None:
    url = f"postgresql://bob:s3cret-pw@127.0.0.1:{closed_port}/test"
    store = PostgresStore(url, timeout_s=0.3)
    assert store.url == f"postgresql://bob:***@127.0.0.1:{closed_port}/test"
    with pytest.raises(TelemetryError) as info:
        store.migrate()
    store.close()
    assert "s3cret-pw" not in str(info.value)
    assert "bob:***@" in str(info.value)
    store.close()  # idempotent


def test_a_missing_database_is_named_not_guessed_to_be_a_server_down(
    postgres_url: str,
) -> None:
    """A typo in the database name waited its timeout, then said "is the server up?":
    psycopg's own reason (the pool's failed attempts are kept from stderr) is said."""
    store = PostgresStore(f"{PG_BASE.rsplit('/', 1)[0]}/llmroute_no_such_db", timeout_s=1.0)
    with pytest.raises(TelemetryError) as info:
        store.migrate()
    store.close()
    assert 'database "llmroute_no_such_db" does not exist' in str(info.value)


def test_postgres_down_fails_at_once_for_a_while_after_a_timeout(closed_port: int) -> None:
    """A reader after a timeout without a connection (a dashboard polling, feedback) is
    told at once instead of waiting as long again; the message says so."""
    store = PostgresStore(f"postgresql://bob@127.0.0.1:{closed_port}/test", timeout_s=0.3)
    with pytest.raises(TelemetryError, match=r"within 0\.3 s"):
        store.migrate()
    with pytest.raises(TelemetryError, match="moments ago"):
        store.count_decisions()
    store.close()


def test_postgres_down_is_said_by_the_store_not_by_its_pools_every_try(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """psycopg_pool logs each failed attempt of its pools; this store's pool's are left
    to the store, which says it once, masked (a host without logging set up saw them all
    on its stderr)."""
    url = f"postgresql://bob:s3cret-pw@127.0.0.1:{closed_port}/test"
    store = PostgresStore(url, timeout_s=0.3)
    with caplog.at_level(logging.DEBUG, logger="psycopg.pool"), pytest.raises(TelemetryError):
        store.migrate()
    store.close()
    pool_records = [r for r in caplog.records if r.name.startswith("psycopg.pool")]
    assert not [r for r in pool_records if "llmroute-telemetry" in r.getMessage()]
    other = logging.getLogger("psycopg.pool")
    kept = other.makeRecord("psycopg.pool", logging.WARNING, __file__, 1, "pool 'mine'", (), None)
    assert all(f.filter(kept) for f in other.filters)  # another pool's records pass


def test_sqlite_error_is_a_telemetry_error(tmp_path: Path, make_record: MakeRecord) -> None:
    store = SqliteStore(tmp_path / "t.db")
    with pytest.raises(TelemetryError, match="no such table"):
        store.write_decisions([make_record(0)])
    store.close()
    with pytest.raises(TelemetryError, match="closed"):
        store.count_decisions()


def test_sqlite_schema_survives_several_connections(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    """Gateway workers are separate processes with their own connections to one file."""
    path = tmp_path / "shared.db"
    stores = [SqliteStore(path) for _ in range(4)]
    errors: list[BaseException] = []

    def work(s: SqliteStore, k: int) -> None:
        try:
            s.migrate()
            for j in range(20):
                s.write_decisions([make_record(k * 1000 + j * 10 + n) for n in range(10)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, k)) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert stores[0].count_decisions() == 4 * 20 * 10
    assert stores[0].decisions(0.0)[0].id
    mode = stores[0]._select("PRAGMA journal_mode", (), "x")[0][0]
    assert mode == "wal"
    for s in stores:
        s.close()


def test_dropped_schema_is_an_error_then_migrate_recreates_it(
    postgres_url: str, pg_schema: str, make_record: MakeRecord
) -> None:
    store = PostgresStore(postgres_url, pool_size=1)
    store.migrate()
    store.write_decisions([make_record(0)])
    pg_execute(f"DROP SCHEMA {pg_schema} CASCADE; CREATE SCHEMA {pg_schema}")
    with pytest.raises(TelemetryError, match="decisions"):
        store.write_decisions([make_record(1)])
    assert store.schema_version() == 0
    assert store.migrate() == latest_version("postgres")
    store.write_decisions([make_record(2)])
    assert store.count_decisions() == 1
    store.close()


# -- URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u:p%40ss@h/db?sslmode=require", "postgres://u:***@h/db?sslmode=require"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        # characters a URL reserves, which libpq reads as part of the password
        ("postgresql://u:p#w?d@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
        ("postgresql://h/db?user=u&password=pw", "postgresql://h/db?user=u&password=***"),
        (
            "postgresql://u@h/db?sslcert=c.pem&sslpassword=KEYPASS",
            "postgresql://u@h/db?sslcert=c.pem&sslpassword=***",
        ),
        ("sqlite:///a/b.db", "sqlite:///a/b.db"),
        (
            "https://u:pw@x.openai.azure.com/v1?api-key=SECRET",
            "https://u:***@x.openai.azure.com/v1?api-key=***",
        ),
        (
            "https://f.azurewebsites.net/api?code=SECRET&v=1",
            "https://f.azurewebsites.net/api?code=***&v=1",
        ),
        ("https://h/v1?sv=1&sig=SECRET#x", "https://h/v1?sv=1&sig=***#x"),
        ("https://h/v1?access_token=SECRET", "https://h/v1?access_token=***"),
        (
            "https://h/v1?client_secret=S&X-Amz-Signature=T",
            "https://h/v1?client_secret=***&X-Amz-Signature=***",
        ),
        ("postgresql://u:pw@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        (
            "postgresql://u:pw@h/db?application_name=a@b",
            "postgresql://u:***@h/db?application_name=a@b",
        ),
        ("postgresql://h:5432/db?user=a@b", "postgresql://h:5432/db?user=a@b"),
        # an unescaped "/" in the password (libpq reads no password then, but it is one)
        ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),
        # what the errors of a mistyped URL show: a blank before it, a slash short
        (" postgresql://u:pw@h/db", " postgresql://u:***@h/db"),
        ("postgresql:/u:pw@h/db", "postgresql:/u:***@h/db"),
        ("redis:/:pw@h:6379", "redis:/:***@h:6379"),
        ("u:pw@h/db", "u:***@h/db"),
        ("postgresql://h/d@b", "postgresql://h/d@b"),
        ("https://h/v1/@scope/a:b@c", "https://h/v1/@scope/a:b@c"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_writes_a_lone_surrogate_as_its_escape() -> None:
    """A URL from an environment variable holding a byte that is no UTF-8 (Python
    decodes it as a lone surrogate): the masked URL, in logs and errors, must be
    writable as UTF-8; a log line holding it was a logging error."""
    url = "postgresql://u:pw@h/db?application_name=\udc80&x=\u00e9"
    assert mask_url(url) == "postgresql://u:***@h/db?application_name=\\udc80&x=\u00e9"
    mask_url(url).encode("utf-8")


@pytest.mark.parametrize(
    "url",
    [
        " postgresql:/u:s3cr3t-pw@h/db",
        "postgresql:/u:s3cr3t-pw@h/db",
        "postgresq://u:s3cr3t-pw@h/db",
    ],
)
def test_a_mistyped_urls_error_holds_no_password(url: str) -> None:
    """The URL a user mistyped is the one its error names: masked all the same."""
    with pytest.raises(ConfigError) as raised:
        open_store(url)
    assert "s3cr3t-pw" not in str(raised.value) and "***" in str(raised.value)


def test_open_store_by_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///sub/rel.db")
    assert isinstance(relative, SqliteStore) and relative.path == "sub/rel.db"
    relative.migrate()
    assert (tmp_path / "sub" / "rel.db").is_file()
    relative.close()
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SqliteStore) and absolute.path == f"{tmp_path}/abs.db"
    memory = open_store("sqlite:///:memory:")
    assert memory.migrate() == latest_version("sqlite") and memory.count_decisions() == 0
    pg = open_store("postgres://u:pw@127.0.0.1/db", pool_size=3)
    assert isinstance(pg, PostgresStore) and pg.url == "postgres://u:***@127.0.0.1/db"
    for store in (absolute, memory, pg):
        store.close()
    for bad in ("mysql://u:pw@h/db", "sqlite://relative.db", "sqlite:///", "off"):
        with pytest.raises(ConfigError) as info:
            open_store(bad)
        assert "pw" not in str(info.value)


@pytest.mark.parametrize(
    ("env", "settings", "expected"),
    [
        ({}, {}, "sqlite:///llmroute-telemetry.db"),
        ({}, {"url": "postgresql://h/db"}, "postgresql://h/db"),
        ({}, {"enabled": False}, None),
        ({}, {"url": " off "}, None),
        ({"LLMROUTE_TELEMETRY_URL": " sqlite:///x.db "}, {"enabled": False}, "sqlite:///x.db"),
        ({"LLMROUTE_TELEMETRY_URL": "off"}, {}, None),
        ({"LLMROUTE_TELEMETRY_URL": "NONE"}, {}, None),
        ({"LLMROUTE_TELEMETRY_URL": "  "}, {"url": "postgresql://h/db"}, None),
    ],
)
def test_resolve_telemetry_url(
    env: dict[str, str], settings: dict[str, object], expected: str | None
) -> None:
    resolved = resolve_telemetry_url(TelemetrySettings.model_validate(settings), env)
    assert resolved == expected


def test_forget_erases_an_end_users_or_a_keys_requests_with_their_feedback_and_shadows(
    store: Store, make_record: MakeRecord
) -> None:
    """An erasure request had no command: deleting decisions by hand left the shadow rows
    (no foreign key), answers and all."""
    mary = [make_record(i, end_user="sha256:" + "a" * 32) for i in range(3)]
    others = [make_record(10 + i, end_user="bob", client="team-b") for i in range(2)]
    keyless = [make_record(20, client=None)]
    store.write_decisions([*mary, *others, *keyless])
    assert store.write_feedback(FeedbackRecord(mary[0].id, 1.0, score=1.0, comment="mine"))
    assert store.write_feedback(FeedbackRecord(others[0].id, 1.0, score=0.0))
    store.write_shadow(ShadowRecord(mary[1].id, 1.0, "r", "s", "b", "her answer", "ref"))
    store.write_shadow(ShadowRecord(others[1].id, 1.0, "r", "s", "b", "his answer", "ref"))
    assert store.forget(end_users=["mary@example.org", "sha256:" + "a" * 32]) == (3, 1, 1)
    left = {d.id for d in store.decisions(0.0)}
    assert left == {r.id for r in (*others, *keyless)}
    assert [f.decision_id for f in store.feedback(0.0)] == [others[0].id]
    assert [s.decision_id for s in store.shadows(0.0)] == [others[1].id]
    assert store.forget(client="team-b") == (2, 1, 1)
    assert store.forget(client="") == (1, 0, 0)  # the requests made without a key
    assert store.count_decisions() == 0


def test_forget_an_end_user_and_a_key_erases_only_that_users_requests_with_that_key(
    store: Store, make_record: MakeRecord
) -> None:
    """Both given narrow, as a filter: they erased the union, the key's whole log with
    the user's requests made with any key."""
    mary_a = make_record(0, end_user="mary", client="team-a")
    mary_b = make_record(1, end_user="mary", client="team-b")
    mary_keyless = make_record(2, end_user="mary", client=None)
    bob_a = make_record(3, end_user="bob", client="team-a")
    keyless = make_record(4, client=None)
    store.write_decisions([mary_a, mary_b, mary_keyless, bob_a, keyless])
    store.write_shadow(ShadowRecord(bob_a.id, 1.0, "r", "s", "b", "his answer", "ref"))
    assert store.forget(end_users=["mary"], client="team-a") == (1, 0, 0)
    assert {d.id for d in store.decisions(0.0)} == {
        r.id for r in (mary_b, mary_keyless, bob_a, keyless)
    }
    assert store.forget(end_users=["mary"], client="") == (1, 0, 0)  # hers without a key
    assert {d.id for d in store.decisions(0.0)} == {r.id for r in (mary_b, bob_a, keyless)}
    assert [s.decision_id for s in store.shadows(0.0)] == [bob_a.id]


def test_prune_erases_the_oldest_decisions_before_a_time_in_batches(
    store: Store, make_record: MakeRecord
) -> None:
    """Retention: decisions logged before the cut go with their feedback and shadow rows,
    the oldest first, at most `most` a call; those after it stay."""
    old = [make_record(i, ts=1_000.0 + i) for i in range(5)]
    new = [make_record(10 + i, ts=5_000.0 + i) for i in range(2)]
    store.write_decisions([*new, *old])
    assert store.write_feedback(FeedbackRecord(old[0].id, 1.0, score=1.0))
    assert store.write_feedback(FeedbackRecord(new[0].id, 1.0, score=0.0))
    store.write_shadow(ShadowRecord(old[4].id, 1.0, "r", "s", "b", "an answer", "ref"))
    assert store.prune(4_000.0, most=3) == (3, 1, 0)
    assert {d.id for d in store.decisions(0.0)} == {r.id for r in (*old[3:], *new)}
    assert store.prune(4_000.0, most=3) == (2, 0, 1)  # fewer than asked: none left
    assert store.prune(4_000.0, most=3) == (0, 0, 0)
    assert {d.id for d in store.decisions(0.0)} == {r.id for r in new}
    assert [f.decision_id for f in store.feedback(0.0)] == [new[0].id]
    assert store.shadows(0.0) == []
