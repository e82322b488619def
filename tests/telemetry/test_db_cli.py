"""`llmroute db upgrade` and `llmroute db status`."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmroute.cli._app import run
from llmroute.telemetry.store import open_store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "registry.yaml"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_upgrade_then_status_sqlite(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    code, out, _ = _run(["db", "status", "--url", sqlite_url], capsys)
    assert code == 0 and "no decision log at" in out
    assert not path.exists()  # status asked; it did not create the file
    path.touch()  # an empty file: no tables yet
    code, out, _ = _run(["db", "status", "--url", sqlite_url], capsys)
    assert code == 0
    assert (
        "schema version: 0" in out
        and "pending migrations: 0001_initial, 0002_client, 0003_route_only, "
        "0004_attribution, 0005_response, 0006_api"
        in out
    )
    assert "decisions: -" in out

    code, out, _ = _run(["db", "upgrade", "--url", sqlite_url], capsys)
    assert code == 0 and "schema version 6 (upgraded from 0)" in out
    code, out, _ = _run(["db", "upgrade", "--url", sqlite_url], capsys)
    assert code == 0 and "schema version 6 (up to date)" in out

    code, out, _ = _run(["db", "status", "--url", sqlite_url], capsys)
    assert code == 0
    assert out.splitlines() == [
        f"url: {sqlite_url}",
        "schema version: 6",
        "pending migrations: none",
        "decisions: 0",
    ]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_schema_newer_than_this_llmroute_is_said_so(
    backend: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log a newer llmroute migrated (version 99 here) was "up to date". It is no
    error, as a schema behind is none for status: an older gateway keeps writing to it."""
    from contextlib import closing

    from llmroute.telemetry.store import latest_version

    url: str = request.getfixturevalue(f"{backend}_url")
    store = open_store(url)
    try:
        store.migrate()
    finally:
        store.close()
    if backend == "sqlite":
        import sqlite3

        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
    else:
        from telemetry_records import pg_execute

        schema = request.getfixturevalue("pg_schema")
        pg_execute(f"INSERT INTO {schema}.schema_migrations (version, name) VALUES (99, 'future')")
    newer = f"99 (newer than this llmroute knows, {latest_version('sqlite')}: upgrade llmroute)"
    code, out, _ = _run(["db", "upgrade", "--url", url], capsys)
    assert code == 0 and out.endswith(f": schema version {newer}\n")
    code, out, _ = _run(["db", "status", "--url", url], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[1:3] == [
        f"schema version: {newer}",
        "pending migrations: none",
    ]


def test_postgres_url_from_the_environment_is_masked(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # trust auth ignores the password; it must still never be printed
    url = postgres_url.replace("postgres@", "postgres:hunter2@")
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", url)
    code, out, _ = _run(["db", "upgrade"], capsys)
    assert code == 0 and "schema version 6" in out
    assert "hunter2" not in out and "postgres:***@" in out
    code, out, _ = _run(["db", "status"], capsys)
    assert code == 0 and "decisions: 0" in out and "hunter2" not in out


def test_url_from_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL", raising=False)
    db = tmp_path / "from-registry.db"
    registry = tmp_path / "registry.yaml"
    text = EXAMPLE.read_text(encoding="utf-8")
    shipped = "url: sqlite:///llmroute-telemetry.db"
    assert shipped in text
    registry.write_text(text.replace(shipped, f"url: sqlite:///{db}"), encoding="utf-8")
    code, out, err = _run(["db", "upgrade", "--registry", str(registry)], capsys)
    assert code == 0, err
    assert f"sqlite:///{db}: schema version 6" in out
    store = open_store(f"sqlite:///{db}")
    assert store.schema_version() == 6
    store.close()


def test_errors_are_one_clean_line(
    closed_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", "off")
    code, _, err = _run(["db", "upgrade"], capsys)
    assert code == 2 and "decision log is off" in err

    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", "mysql://u:pw@h/db")
    code, _, err = _run(["db", "status"], capsys)
    assert code == 2 and "unsupported telemetry URL" in err and ":pw@" not in err
    # named by where it came from: it said "telemetry.url: ...", sending the reader to a
    # registry that held none of it
    for argv, source in (
        (["db", "status"], "$LLMROUTE_TELEMETRY_URL"),
        (["report"], "$LLMROUTE_TELEMETRY_URL"),
        (["report", "--url", "sqlite://x.db"], "--url"),
        (["db", "prune", "--url", "mysql://h/db", "--older-than", "1d"], "--url"),
    ):
        code, _, err = _run(argv, capsys)
        assert code == 2 and err.startswith(f"error: {source}: "), (argv, err)
        assert "telemetry.url" not in err

    monkeypatch.setattr(
        "llmroute.telemetry.store.postgres.PostgresStore.__init__.__kwdefaults__",
        {"timeout_s": 0.2, "connect_timeout_s": 2, "insert_method": "copy"},
    )
    url = f"postgresql://u:pw@127.0.0.1:{closed_port}/test"
    code, _, err = _run(["db", "upgrade", "--url", url], capsys)
    assert code == 2 and "no connection to PostgreSQL" in err
    assert ":pw@" not in err and "u:***@" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["db", "forget", "--client", "team-a"],
        ["db", "prune", "--older-than", "30d"],
        ["db", "prune", "--older-than", "30d", "--dry-run"],
    ],
)
def test_erasing_from_a_log_that_is_not_there_creates_nothing(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped path (or another working directory) is said, and no empty log (nor its
    folder) is left there: opening the file to find it had no tables created it."""
    missing = tmp_path / "typo" / "llmroute-telemetry.db"
    code, out, err = _run([*argv, "--url", f"sqlite:///{missing}"], capsys)
    assert code == 2 and out == ""
    assert " ".join(err.split()) == (
        f"error: sqlite:///{missing}: no decision log at {missing}; nothing to erase"
    )
    assert not (tmp_path / "typo").exists()


def test_forget_an_end_user_by_the_id_the_client_sent(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log holds the pseudonym safety sent upstream; the operator has the address."""
    from telemetry_records import build_record

    from llmroute.layers.safety import pseudonym

    store = open_store(sqlite_url)
    try:
        store.migrate()
        store.write_decisions(
            [build_record(0, end_user=pseudonym("mary@example.org")), build_record(1)]
        )
    finally:
        store.close()
    code, out, _ = _run(
        ["db", "forget", "--end-user", "mary@example.org", "--url", sqlite_url], capsys
    )
    assert code == 0 and "erased 1 decision, 0 feedback and 0 shadow rows" in out
    code, _, err = _run(["db", "forget", "--url", sqlite_url], capsys)
    assert code == 2 and "--end-user ID" in err
    code, out, _ = _run(["db", "status", "--url", sqlite_url], capsys)
    assert "decisions: 1" in out


def test_forget_with_an_end_user_and_a_key_erases_that_users_requests_with_that_key(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Adding --client narrows the erasure; it erased the key's whole log besides."""
    from telemetry_records import build_record

    store = open_store(sqlite_url)
    try:
        store.migrate()
        store.write_decisions(
            [
                build_record(0, end_user="mary", client="team-a"),
                build_record(1, end_user="mary", client="team-b"),
                build_record(2, end_user="bob", client="team-a"),
            ]
        )
    finally:
        store.close()
    argv = ["db", "forget", "--end-user", "mary", "--client", "team-a", "--url", sqlite_url]
    code, out, _ = _run(argv, capsys)
    assert code == 0 and "erased 1 decision, 0 feedback and 0 shadow rows" in out
    code, out, _ = _run(["db", "status", "--url", sqlite_url], capsys)
    assert "decisions: 2" in out


def test_prune_erases_what_is_older_than_the_period_given_or_the_registrys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`db prune` is the retention period for logs no gateway prunes: the period from
    the command line, else from the registry's `telemetry.retention_days`."""
    import time

    from telemetry_records import build_record

    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL", raising=False)
    db = tmp_path / "log.db"
    url = f"sqlite:///{db}"
    now = time.time()
    store = open_store(url)
    try:
        store.migrate()
        ages = (40, 20, 10, 0.5)  # days
        store.write_decisions([build_record(i, ts=now - d * 86400) for i, d in enumerate(ages)])
    finally:
        store.close()
    code, out, _ = _run(["db", "prune", "--older-than", "15d", "--url", url, "--dry-run"], capsys)
    assert code == 0 and "would erase 2 decisions logged before" in out, out
    code, out, _ = _run(["db", "prune", "--older-than", "30d", "--url", url], capsys)
    assert code == 0 and "erased 1 decision logged before" in out, out
    assert "0 feedback and 0 shadow rows" in out
    registry = tmp_path / "registry.yaml"
    text = EXAMPLE.read_text(encoding="utf-8")
    shipped = "url: sqlite:///llmroute-telemetry.db"
    registry.write_text(
        text.replace(shipped, f"url: {url}\n  retention_days: 14"), encoding="utf-8"
    )
    code, out, err = _run(["db", "prune", "-r", str(registry)], capsys)
    assert code == 0 and "erased 1 decision logged before" in out, err
    code, out, _ = _run(["db", "status", "--url", url], capsys)
    assert "decisions: 2" in out
    for bad, said in (
        ("2999-01-01", "in the future"),
        ("soon", "use a duration ago"),
    ):
        code, _, err = _run(["db", "prune", "--older-than", bad, "--url", url], capsys)
        assert code == 2 and said in err and "Traceback" not in err, err
    registry.write_text(text.replace(shipped, f"url: {url}"), encoding="utf-8")
    code, _, err = _run(["db", "prune", "-r", str(registry)], capsys)
    assert code == 2 and "--older-than 30d" in err and "retention_days" in err


def test_prune_by_url_without_a_period_asks_for_one(
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`db prune --url URL` with no --older-than said "no registry given: pass --registry
    FILE", though the log was given: what it lacked was how old."""
    monkeypatch.chdir(tmp_path)  # no ./registry.yaml
    monkeypatch.delenv("LLMROUTE_REGISTRY", raising=False)
    code, _, err = _run(["db", "prune", "--url", sqlite_url], capsys)
    assert code == 2 and "no registry given" not in err
    assert "say how old: --older-than 30d" in " ".join(err.split())


def test_report_on_a_log_that_is_not_there_says_so_without_a_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "no decision log at PATH yet in the last 24h; nothing to report"."""
    missing = tmp_path / "missing.db"
    code, out, _ = _run(["report", "--url", f"sqlite:///{missing}"], capsys)
    assert code == 0 and not missing.exists()
    assert " ".join(out.split()) == (
        f"sqlite:///{missing}: no decision log at {missing} yet; nothing to report"
    )
    (tmp_path / "empty.db").touch()
    code, out, _ = _run(["report", "--url", f"sqlite:///{tmp_path / 'empty.db'}"], capsys)
    assert code == 0 and "in the last" not in out and "no tables yet" in out


def test_a_relative_log_that_is_not_there_is_named_by_where_it_was_looked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sqlite:///llmroute-telemetry.db` (the default) is read from the working directory,
    not the registry's folder: run from elsewhere, report said "no decision log at
    llmroute-telemetry.db yet", exit 0, without saying where it had looked."""
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///llmroute-telemetry.db"
    where = tmp_path / "llmroute-telemetry.db"
    for argv, code_wanted in (
        (["report", "--url", url], 0),
        (["db", "status", "--url", url], 0),
        (["db", "prune", "--url", url, "--older-than", "30d"], 2),
    ):
        code, out, err = _run(argv, capsys)
        assert code == code_wanted and f"no decision log at {where}" in out + err, argv
    assert not where.exists()


@pytest.mark.parametrize("argv", [["db", "status"], ["report"], ["export"], ["drift"]])
def test_url_off_says_the_command_reads_a_log(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--url off` was "unsupported telemetry URL 'off': use sqlite:///PATH,
    postgresql://USER@HOST/DB, or off": refused, then offered as the fix."""
    code, _, err = _run([*argv, "--url", "off", "-r", str(EXAMPLE)], capsys)
    assert code == 2
    assert err.strip() == (
        "error: --url: 'off' turns the decision log off, and this command reads one: "
        "give its sqlite:///PATH or postgresql://USER@HOST/DB"
    )


def test_refresh_on_a_log_that_is_not_there_says_the_candidate_was_not_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "...; nothing to report" and exited 0, leaving a script to find out at
    its next step that -o had not been written (a mistyped --url passing as a quiet
    week): exit 2, as `export`, which has nothing to write either."""
    missing = tmp_path / "missing.db"
    candidate = tmp_path / "candidate.yaml"
    argv = ["refresh", "-r", str(EXAMPLE), "--url", f"sqlite:///{missing}", "-o", str(candidate)]
    for extra in ([], ["--json"]):
        code, out, err = _run([*argv, *extra], capsys)
        assert code == 2 and not candidate.exists() and not out
        assert " ".join(err.split()) == (
            f"error: sqlite:///{missing}: no decision log at {missing} yet; nothing to mine; "
            f"{candidate} not written"
        )


def test_forget_says_when_no_rows_matched_a_key_the_registry_does_not_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An erasure request with a mistyped key printed "erased 0 decisions", read as done:
    with nothing erased and no such key in the registry's `auth`, it says so (as `report
    --client` does). A key since removed is still erased (the point of forgetting it),
    its rows found and no note added."""
    from telemetry_records import build_record

    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL", raising=False)
    monkeypatch.setenv("H10_TEAM_A_KEY", "sk-team-a-0123456789")
    url = f"sqlite:///{tmp_path / 'log.db'}"
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "encoder: builtin:static\nproviders: {echo: {kind: echo}}\n"
        "models: {small: {provider: echo, model: echo-small}}\n"
        "routes: [{name: chat, target: small, examples: [hello there]}]\n"
        f'default: {{target: small}}\ntelemetry: {{url: "{url}"}}\n'
        "auth:\n  keys:\n    - {name: team-a, key_env: H10_TEAM_A_KEY}\n"
    )
    store = open_store(url)
    try:
        store.migrate()
        store.write_decisions([build_record(0, client="team-a"), build_record(1, client="gone")])
    finally:
        store.close()
    forget = ["db", "forget", "--registry", str(registry), "--client"]
    code, out, _ = _run([*forget, "team-b"], capsys)
    assert code == 0
    assert out.strip().endswith(
        "erased 0 decisions, 0 feedback and 0 shadow rows; no client key 'team-b' in the "
        "registry (its keys: team-a)"
    ), out
    code, out, _ = _run([*forget, "gone"], capsys)  # removed from auth, still in the log
    assert code == 0 and out.strip().endswith("erased 1 decision, 0 feedback and 0 shadow rows")
    code, out, _ = _run([*forget, "team-a"], capsys)
    assert code == 0 and "no client key" not in out
    code, out, _ = _run([*forget, "team-a"], capsys)  # a key it has: nothing more to say
    assert code == 0 and out.strip().endswith("erased 0 decisions, 0 feedback and 0 shadow rows")
