"""`llmroute drift`, `refresh`, `report` and `report shadow` over a real SQLite log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from strict_json import loads_strict
from test_refresh import PASSPORT, REGISTRY, WEATHER_LIKE

from llmroute.cli._app import run
from llmroute.decision import Decision, new_decision_id
from llmroute.telemetry.record import DecisionRecord, FeedbackRecord, ShadowRecord
from llmroute.telemetry.store import open_store

DAY = 86400.0


def record(
    route: str, margin: float | None, ts: float, prompt: str | None = None, **fields: object
) -> DecisionRecord:
    decision = Decision(
        id=new_decision_id(),
        route=route,
        model="large" if route == "code" else "small",
        layer="default" if route == "default" else "intent",
        confidence=0.9,
        margin=margin,
        reason="test",
        registry_version="v1",
        signals=(),
        encode_us=0.0,
        total_us=0.0,
    )
    mode = "full" if prompt is not None else "hash"
    return DecisionRecord(
        decision=decision, ts=ts, status=200, latency_ms=50.0, prompt_mode=mode, prompt=prompt,
        **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def traffic(ts: float, rng: np.random.Generator, shift: float = 0.0) -> list[DecisionRecord]:
    out = []
    for route in ("code", "weather", "cooking"):
        drop = shift if route == "weather" else 0.0
        for m in np.clip(rng.beta(4, 3, size=120) - drop, 0, 1):
            out.append(record(route, float(m), ts, tokens_in=100, tokens_out=100))
    out += [record("default", 0.05, ts) for _ in range(30)]
    return out


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    data = yaml.safe_load(REGISTRY)
    data["telemetry"] = {"url": f"sqlite:///{tmp_path / 'log.db'}", "prompts": "full"}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def fill(registry: Path, records: list[DecisionRecord]) -> None:
    store = open_store(f"sqlite:///{registry.parent / 'log.db'}")
    try:
        store.migrate()
        store.write_decisions(records)
    finally:
        store.close()


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def test_drift_flags_the_shifted_route(registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now, rng = time.time(), np.random.default_rng(0)
    fill(registry, traffic(now - 10 * DAY, rng) + traffic(now - DAY, rng, shift=0.2))
    code, out, _ = cli(capsys, "drift", "-r", registry, "--json")
    payload = loads_strict(out)
    assert code == 1 and payload["flagged_routes"] == ["weather"]
    assert payload["n_baseline"] == 390 and not payload["default_flagged"]
    code, out, _ = cli(capsys, "drift", "-r", registry)
    assert code == 1 and "flagged" in out and "weather" in out


def test_drift_quiet_and_empty(registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # no log where the registry says: bad input, not "nothing flagged" (a drift check
    # in cron pointed at a mistyped path passed for ever)
    code, out, err = cli(capsys, "drift", "-r", registry)
    assert code == 2 and out == "" and "no decision log" in err
    assert "nothing to check drift on" in err
    now, rng = time.time(), np.random.default_rng(1)
    fill(registry, traffic(now - 10 * DAY, rng) + traffic(now - DAY, rng))
    code, out, _ = cli(capsys, "drift", "-r", registry)
    assert code == 0 and "no drift flagged" in out
    code, out, _ = cli(capsys, "drift", "-r", registry, "--baseline", "60d..50d")
    assert code == 0 and "not enough data" in out
    code, _, err = cli(capsys, "drift", "-r", registry, "--recent", "7x")
    assert code == 2 and "--recent" in err


def test_drift_counts_one_request_in_the_singular(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(registry, traffic(time.time() - DAY, np.random.default_rng(2))[:1])
    code, out, _ = cli(capsys, "drift", "-r", registry)
    assert code == 0 and "not enough data" in out
    assert ": 0 requests\n" in out and ": 1 request\n" in out, out


@pytest.mark.parametrize(
    ("baseline", "recent"),
    [("7d", "7d"), ("30d", "7d"), ("1d", "7d"), ("14d..7d", "14d..7d"), ("7d", "14d..7d")],
)
def test_drift_refuses_windows_that_overlap_or_are_reversed(
    registry: Path, capsys: pytest.CaptureFixture[str], baseline: str, recent: str
) -> None:
    """A baseline sharing the recent window's decisions (or after it) was compared with
    them: `--baseline 7d --recent 7d` said "no drift flagged", exit 0, whatever the
    margins did (a cron check that could never fail)."""
    now, rng = time.time(), np.random.default_rng(3)
    fill(registry, traffic(now - 10 * DAY, rng) + traffic(now - DAY, rng, shift=0.2))
    windows = ("--baseline", baseline, "--recent", recent)
    code, out, err = cli(capsys, "drift", "-r", registry, *windows)
    assert code == 2 and out == "", out
    assert "does not end before --recent" in " ".join(err.split())


def test_report_and_plot(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    records = traffic(now - 3600, np.random.default_rng(2))
    fill(registry, records)
    store = open_store(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        store.write_feedback(FeedbackRecord(records[0].id, now, score=1.0, thumbs="up"))
        store.write_shadow(
            ShadowRecord(records[0].id, now, "code", "large", "large", "a", "a", routed_ok=True)
        )
    finally:
        store.close()
    plot = tmp_path / "report.html"
    code, out, _ = cli(capsys, "report", "-r", registry, "--json", "--plot", plot)
    payload = loads_strict(out)
    assert code == 0 and payload["total"]["n"] == 390
    assert payload["strongest_model"] == "large"
    assert {r["name"] for r in payload["routes"]} == {"code", "weather", "cooking", "default"}
    assert [(g["name"], g["n"]) for g in payload["layers"]] == [("intent", 360), ("default", 30)]
    assert payload["feedback"][0]["route"] == "code"
    assert payload["shadow"]["overall"]["judged"] == 1
    assert "<svg" in plot.read_text(encoding="utf-8")
    code, out, _ = cli(capsys, "report", "-r", registry)
    assert code == 0 and "always on large" in out and "shadow quality" in out
    assert "deciding layer" in out
    code, out, _ = cli(capsys, "report", "-r", registry, "--since", "30m")
    assert code == 0 and "no decisions" in out


def test_report_from_the_log_alone(
    registry: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--url`` without a registry (none in the directory either): the log alone makes
    the report, without prices or a counterfactual."""
    fill(registry, traffic(time.time() - 3600, np.random.default_rng(3)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("LLMROUTE_REGISTRY", raising=False)
    url = f"sqlite:///{tmp_path / 'log.db'}"
    code, out, err = cli(capsys, "report", "--url", url, "--json")
    assert code == 0, err
    payload = loads_strict(out)
    assert payload["total"]["n"] == 390 and payload["strongest_model"] is None
    code, out, _ = cli(capsys, "report", "--url", url)
    assert code == 0 and "no registry" in out
    code, out, _ = cli(capsys, "drift", "--url", url, "--json")
    assert code in (0, 1) and "enough_data" in loads_strict(out)
    code, _, err = cli(capsys, "report")  # neither a log nor a registry
    # it said "no registry given" (and offered `llmroute init`): the log is what it reads
    assert code == 2 and "no decision log given: pass --url URL" in err
    assert "default" not in err  # no log of a gateway started here
    (elsewhere / "llmroute-telemetry.db").touch()  # a gateway started here, no registry left
    for command in (["report"], ["export"], ["drift", "--baseline", "14d..7d", "--recent", "7d"]):
        code, _, err = cli(capsys, *command)
        assert code == 2 and "no decision log given" in err, command
        assert "is in this folder: --url sqlite:///llmroute-telemetry.db" in err, command


def test_report_of_one_cheap_request(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One request is "1 request", and a cost of four thousandths of a cent keeps its
    digits, the same in the text and in the --plot page ("$4e-05" there before)."""
    fill(registry, [record("code", 0.5, time.time() - 60, tokens_in=1, cost_usd=0.00004)])
    plot = tmp_path / "one.html"
    code, out, err = cli(capsys, "report", "-r", registry, "--plot", plot)
    assert code == 0, err
    assert "\n1 request; errors" in out and "cost $0.00004 vs" in out
    assert "$0.00004<" in plot.read_text(encoding="utf-8")


@pytest.mark.parametrize("columns", [None, "80"], ids=["piped", "80-column-terminal"])
def test_report_tables_never_cut_a_figure(
    registry: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    columns: str | None,
) -> None:
    """Written to a pipe or a file (cron's mail, a CI log: no width, so rich took 80
    columns), the tables were squeezed and cut: `cost $` read `0.00000…`, a route
    `rule:too…`. Not a terminal, nothing is squeezed; in an 80-column terminal a name
    past 12 characters is cut, the figures never."""
    if columns is None:
        monkeypatch.delenv("COLUMNS")
    else:
        monkeypatch.setenv("COLUMNS", columns)
    ts = time.time() - 60
    fill(
        registry,
        [
            record("rule:tools-go-small", None, ts, tokens_in=5, tokens_out=5, cost_usd=0.00000008),
            record("code", 0.5, ts, tokens_in=5, tokens_out=5, cost_usd=0.000019),
        ],
    )
    code, out, err = cli(capsys, "report", "-r", registry)
    assert code == 0, err
    figures = ("0.00000008", "0.000019", "0.00009", "78.9%", "99.9%", "always large $")
    assert all(f in out for f in figures), out
    if columns is None:
        assert "…" not in out and "rule:tools-go-small " in out, out
    else:  # the name alone is cut, past 12 characters
        assert "rule:tools-…" in out and out.count("…") == 1, out


def test_report_by_tag_end_user_and_key(registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The tables a team reads its spend from, and --tag / --client narrowing the whole
    report (an empty narrowing is a message, exit 0)."""
    now = time.time() - 600
    records = []
    for i in range(40):
        tags = ("team:search", "app=web") if i % 4 == 0 else ("team:ads",) if i % 4 == 1 else ()
        records.append(
            record(
                "code" if i % 2 else "weather",
                0.5,
                now,
                tokens_in=100,
                tokens_out=100,
                tags=tags,
                end_user=f"user-{i % 25}",
                client="svc-a" if i < 30 else "svc-b",
            )
        )
    fill(registry, records)
    code, out, err = cli(capsys, "report", "-r", registry)
    assert code == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["tag", "n"])
    rows = {line.split()[0]: int(line.split()[1]) for line in lines[header + 1 : header + 5]}
    assert rows == {"(untagged)": 20, "team:search": 10, "app=web": 10, "team:ads": 10}
    assert "end users: 25, the 20 that cost the most" in out
    assert any(line.split()[:2] == ["client", "key"] for line in lines)
    code, out, _ = cli(capsys, "report", "-r", registry, "--tag", "team:ads", "--json")
    payload = loads_strict(out)
    assert code == 0 and payload["total"]["n"] == 10 and payload["tag"] == "team:ads"
    assert {r["name"] for r in payload["routes"]} == {"code"}  # i % 4 == 1: odd i
    code, out, _ = cli(capsys, "report", "-r", registry, "--client", "svc-b", "--json")
    assert loads_strict(out)["total"]["n"] == 10
    code, out, _ = cli(capsys, "report", "-r", registry, "--tag", "team:none")
    assert code == 0 and "no decisions in the last 24h with tag team:none" in out


def test_a_client_key_the_registry_lacks_is_named_when_nothing_matched(
    registry: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--client team-zzz` (a typo of team-a) matched nothing and said only "no
    decisions": read as a key that made no requests. Given a registry with keys, a name
    it lacks is said, with the names it has; a key since removed still reads its rows."""
    data = yaml.safe_load(registry.read_text(encoding="utf-8"))
    data["auth"] = {"keys": [{"name": "team-a", "key_env": "H5_TEST_KEY"}]}
    registry.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv("H5_TEST_KEY", "k" * 24)
    fill(registry, [record("code", 0.5, time.time() - 60, tokens_in=5, client="old-team")])
    hint = "no client key 'team-zzz' in the registry (its keys: team-a)"
    code, out, err = cli(capsys, "report", "-r", registry, "--client", "team-zzz")
    assert code == 0 and hint in out, out
    code, out, _ = cli(capsys, "report", "-r", registry, "--client", "team-zzz", "--json")
    assert hint in loads_strict(out)["message"], out
    code, out, err = cli(capsys, "export", "-r", registry, "--client", "team-zzz")
    assert code == 0 and out == "" and hint in err, err
    # a key the registry no longer lists, whose rows the log keeps: read as ever
    code, out, _ = cli(capsys, "report", "-r", registry, "--client", "old-team")
    assert code == 0 and "1 request;" in out and "no client key" not in out, out
    code, out, _ = cli(capsys, "report", "-r", registry, "--client", "team-a")
    assert "no decisions" in out and "in the registry" not in out, out


def test_report_counts_tags_without_the_untagged_requests(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """51 tags and the untagged requests, the costliest row: the table lists 50 rows,
    49 of them tags; `(untagged)` is not counted as a tag (it was: "tags: 52, the 50")."""
    from llmroute.telemetry.report import TOP_TAGS

    now = time.time() - 600
    tagged = [
        record("code", 0.5, now, tokens_in=100, tokens_out=100, tags=(f"t{i:02}",))
        for i in range(TOP_TAGS + 1)
    ]
    untagged = [record("code", 0.5, now, tokens_in=100, tokens_out=100) for _ in range(60)]
    fill(registry, tagged + untagged)
    code, out, err = cli(capsys, "report", "-r", registry)
    assert code == 0, err
    assert f"tags: {TOP_TAGS + 1}, the {TOP_TAGS - 1} that cost the most" in out
    code, out, _ = cli(capsys, "report", "-r", registry, "--json")
    payload = loads_strict(out)
    assert code == 0 and payload["tag_count"] == TOP_TAGS + 1
    assert len(payload["tags"]) == TOP_TAGS and payload["tags"][0]["name"] == "(untagged)"


def test_export_writes_the_log_as_jsonl_that_other_commands_read(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The exported prompts feed `registry record` as they are; filters narrow the rows;
    feedback rides along; an existing file is not overwritten without --force."""
    now = time.time() - 600
    records = [
        record("weather", 0.5, now, prompt="will it rain in Paris tomorrow?", tags=("app=web",)),
        record("cooking", 0.5, now + 1, prompt="how long do I boil an egg?"),
        record("weather", 0.5, now + 2),  # prompts: hash at the time: no text
    ]
    fill(registry, records)
    store = open_store(f"sqlite:///{registry.parent / 'log.db'}")
    try:
        store.write_feedback(FeedbackRecord(records[0].id, now + 5, thumbs="down"))
    finally:
        store.close()
    out = tmp_path / "traffic.jsonl"
    code, _, err = cli(capsys, "export", "-r", registry, "-o", out)
    assert code == 0 and "wrote 3 of the 3 requests" in err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["route"] for r in rows] == ["weather", "cooking", "weather"]
    assert rows[0]["prompt"] == "will it rain in Paris tomorrow?" and rows[2]["prompt"] is None
    assert rows[0]["tags"] == ["app=web"] and rows[0]["feedback"][0]["thumbs"] == "down"
    assert rows[1]["tags"] is None  # the log's NULL, was []
    code, _, err = cli(capsys, "export", "-r", registry, "-o", out)
    assert code == 2 and "--force" in err
    code, stdout, _ = cli(capsys, "export", "-r", registry, "--with-text", "--route", "weather")
    assert [json.loads(line)["id"] for line in stdout.splitlines()] == [records[0].id]
    texts = tmp_path / "texts.jsonl"
    code, _, _ = cli(capsys, "export", "-r", registry, "--with-text", "-o", texts)
    cases = tmp_path / "cases.yaml"
    code, stdout, err = cli(capsys, "registry", "record", texts, "-o", cases, "-r", registry)
    assert code == 0, err
    assert "recorded 2 cases" in stdout
    code, stdout, err = cli(capsys, "registry", "test", cases, "-r", registry)
    assert code == 0 and stdout.splitlines()[-1] == "2 of 2 cases passed", stdout + err


def test_export_with_text_of_a_log_of_hashes_says_why_nothing_matched(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """registry.md's pipeline `export --with-text | registry record -` on a log that keeps
    hashes (the example registry's `prompts: hash`) said only 'no request of the 2 ...
    matched', then `registry record` 'no prompts in the file'."""
    now = time.time() - 600
    fill(registry, [record("weather", 0.5, now), record("cooking", 0.5, now + 1)])
    code, stdout, err = cli(capsys, "export", "-r", registry, "--with-text")
    assert code == 0 and stdout == ""
    assert "no request of the 2 of the last 24h matched: none kept its prompt" in err
    assert "telemetry.prompts: redacted or full" in err
    code, _, err = cli(capsys, "export", "-r", registry, "--with-text", "-o", tmp_path / "t.jsonl")
    assert code == 0 and "wrote 0 of the 2 requests" in err and "none kept its prompt" in err
    code, _, err = cli(capsys, "export", "-r", registry, "--route", "nope")
    assert "matched" in err and "prompt" not in err  # another filter: no such reason


def test_export_to_a_dash_writes_standard_output(
    registry: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`-o -` wrote a file named '-' in the working directory (and refused a second
    run without --force), where '-' conventionally means standard output."""
    fill(registry, [record("weather", 0.5, time.time() - 600, prompt="rain in Paris?")])
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        code, stdout, err = cli(capsys, "export", "-r", registry, "-o", "-")
        assert code == 0, err
        assert [json.loads(line)["prompt"] for line in stdout.splitlines()] == ["rain in Paris?"]
    assert not (tmp_path / "-").exists()


def test_registry_diff_replays_the_exported_traffic(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a user runs before merging a registry change: the log's traffic, exported,
    routed by both registries; the moves, shares and cost; --max-moved for CI."""
    now = time.time() - 600
    rain = "will it rain in Paris tomorrow?"
    fill(
        registry,
        [
            record("weather", 0.5, now, prompt=rain, tokens_in=100, tokens_out=200),
            record("cooking", 0.5, now + 1, prompt="how long do I boil an egg?"),
            record("weather", 0.5, now + 2, tokens_in=5, tokens_out=5),  # hash only
        ],
    )
    out = tmp_path / "traffic.jsonl"
    assert cli(capsys, "export", "-r", registry, "-o", out)[0] == 0
    new = tmp_path / "registry.new.yaml"
    data = yaml.safe_load(registry.read_text(encoding="utf-8"))
    data["routes"][1]["target"] = "large"  # weather to the large model
    new.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    code, stdout, err = cli(capsys, "registry", "diff", registry, new, "-d", out)
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[2] == (
        f"2 requests from {out} (1 not replayed: 1 without a stored prompt, "
        "0 pinned by the client to a route or model)"
    )
    assert "route changed: 0 (0.0%)" in lines and "model changed: 1 (50.0%)" in lines
    assert "  small -> large: 1" in lines and f'      "{rain}"' in lines
    # 100 in and 200 out at 0.1 / 0.4 on small ($0.00009, not "$0.0001"), then at 3 / 15
    assert (
        "cost of the 1 request with token counts: $0.00009 -> $0.0033 (+3566.7%) "
        "(their logged token counts at each registry's prices)"
    ) in lines

    code, stdout, err = cli(
        capsys, "registry", "diff", registry, new, "-d", out, "--json", "--max-moved", "0.25"
    )
    assert code == 1 and "50.0% of the requests would be served by another model" in err
    payload = loads_strict(stdout)
    assert payload["skipped"] == {"without_text": 1, "pinned": 0}
    assert payload["model_moves"] == [
        {"from": "small", "to": "large", "count": 1, "examples": [rain]}
    ]
    assert payload["cost_after_usd"] == pytest.approx((100 * 3 + 200 * 15) / 1e6)
    assert cli(capsys, "registry", "diff", registry, new, "-d", out, "--max-moved", "0.5")[0] == 0

    hashed = tmp_path / "hashed.jsonl"
    hashed.write_text('{"prompt": null}\n', encoding="utf-8")
    code, _, err = cli(capsys, "registry", "diff", registry, new, "-d", hashed)
    assert code == 2 and "none of its rows can be replayed (1 without a stored prompt" in err


def test_report_shadow(registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    records = [record("code", 0.5, now - 60) for _ in range(4)]
    fill(registry, records)
    store = open_store(f"sqlite:///{registry.parent / 'log.db'}")
    try:
        for i, r in enumerate(records):
            ok = None if i == 3 else i != 0
            error = "timeout" if i == 3 else None
            store.write_shadow(
                ShadowRecord(
                    r.id,
                    now - 60,
                    "code",
                    "large",
                    "ref",
                    "a",
                    "b",
                    routed_ok=ok,
                    judge_error=error,
                )
            )
    finally:
        store.close()
    code, out, _ = cli(capsys, "report", "shadow", "-r", registry, "--json")
    payload = loads_strict(out)
    assert code == 0 and payload["overall"]["judged"] == 3 and payload["overall"]["lost"] == 1
    assert payload["routes"][0]["judge_errors"] == 1
    code, out, _ = cli(
        capsys, "report", "shadow", "--url", f"sqlite:///{registry.parent / 'log.db'}"
    )
    assert code == 0 and "lost quality" in out


def test_password_is_masked(registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "report", "-r", registry, "--url", "mysql://bob:s3cret@db/x")
    assert code == 2 and "s3cret" not in out + err and "bob:***" in out + err


def test_refresh(registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    fill(registry, [record("default", 0.01, now - 60) for _ in range(3)])
    out_path = tmp_path / "candidate.yaml"
    code, _, err = cli(capsys, "refresh", "-r", registry, "-o", out_path)
    assert code == 2 and "telemetry.prompts: full or redacted" in err
    records = [record("default", 0.05, now - 60, p) for p in PASSPORT]
    records += [record("weather", 0.04, now - 60, p) for p in WEATHER_LIKE]
    records += [record("cooking", 0.9, now - 60, "recipe for banana bread")]
    fill(registry, records)
    before = registry.read_text(encoding="utf-8")
    code, out, _ = cli(capsys, "refresh", "-r", registry, "-o", out_path, "--since", "1h")
    assert code == 0, out
    assert "new route candidate-1" in out and "examples for weather" in out
    assert "routing of mined prompts" in out
    candidate = yaml.safe_load(out_path.read_text(encoding="utf-8"))
    assert "candidate-1" in [r["name"] for r in candidate["routes"]]
    assert registry.read_text(encoding="utf-8") == before
    code, _, err = cli(capsys, "refresh", "-r", registry, "-o", registry)
    assert code == 2 and "live registry" in err
    written = out_path.read_text(encoding="utf-8")  # a candidate being reviewed: kept
    code, _, err = cli(capsys, "refresh", "-r", registry, "-o", out_path, "--since", "1h")
    assert code == 2 and "--force" in err and out_path.read_text(encoding="utf-8") == written
    code, _, _ = cli(capsys, "refresh", "-r", registry, "-o", out_path, "--since", "1h", "--force")
    assert code == 0


def test_refresh_and_export_count_one_in_the_singular(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One cluster of mined prompts is '1 cluster', one request exported '1 request' (they
    said '1 clusters', 'of the 1 requests')."""
    now = time.time()
    fill(registry, [record("default", 0.05, now - 60, p) for p in PASSPORT])
    out_path = tmp_path / "candidate.yaml"
    code, out, _ = cli(capsys, "refresh", "-r", registry, "-o", out_path, "--since", "1h")
    assert code == 0, out
    assert f"{len(PASSPORT)} in 1 cluster\n" in out, out
    fill(registry, [record("weather", 0.5, now - 30, prompt="will it rain?")])
    code, _, err = cli(
        capsys, "export", "-r", registry, "--since", "45s", "-o", tmp_path / "t.jsonl"
    )
    assert code == 0 and "wrote 1 of the 1 request of the last 45s" in err, err


@pytest.mark.parametrize("command", ["report", "export", "refresh"])
def test_since_0d_is_a_usage_error(
    command: str, registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was a window from now until now: "no decisions in the last 0d", exit 0."""
    fill(registry, [record("default", 0.05, time.time() - 60, p) for p in PASSPORT])
    extra = ["-o", str(tmp_path / "candidate.yaml")] if command == "refresh" else []
    code, _, err = cli(capsys, command, "-r", registry, "--since", "0d", *extra)
    assert code == 2
    assert " ".join(err.split()) == (
        "error: --since: invalid window '0d': it holds no time (it starts now); use e.g. "
        "30m, 24h or 7d"
    )


def test_refresh_json_says_whether_the_candidate_was_written(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty window exited 0 with `{"empty": true, ...}` and nothing saying that -o
    was not written; now `written` says it (false, with the reason; true when it was).
    Exit 0 all the same: a quiet week is not a failure."""
    now = time.time()
    fill(registry, [record("default", 0.05, now - 3 * 86400, p) for p in PASSPORT])
    out_path = tmp_path / "candidate.yaml"
    argv = ["refresh", "-r", registry, "-o", out_path, "--json"]
    code, out, _ = cli(capsys, *argv, "--since", "1h")
    assert code == 0 and not out_path.exists()
    said = loads_strict(out)
    assert said["written"] is False and said["output"] == str(out_path)
    assert said["reason"] == "no decisions in the last 1h"
    code, out, _ = cli(capsys, *argv, "--since", "7d")
    assert code == 0 and out_path.exists()
    assert loads_strict(out)["written"] is True


def test_refresh_with_eval_data(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    fill(registry, [record("default", 0.05, now - 60, p) for p in PASSPORT])
    data = tmp_path / "eval.jsonl"
    rows = [{"text": "recipe for apple pie", "intent": "cooking"}]
    rows += [{"text": "will it rain in berlin", "intent": "weather"}]
    data.write_text("\n".join(map(json.dumps, rows)) + "\n", encoding="utf-8")
    out_path = tmp_path / "candidate.yaml"
    code, out, _ = cli(capsys, "refresh", "-r", registry, "-o", out_path, "--eval-data", data)
    assert code == 0 and "accuracy" in out and "vs baseline" in out


def test_refresh_exits_1_when_the_candidate_loses_accuracy_on_eval_data(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed FAILED and exited 0, so a pipeline gating on it passed every candidate.
    The passport questions are out of scope (no route is labelled so): the current
    registry defaults them, the candidate's new route takes them."""
    now = time.time()
    fill(registry, [record("default", 0.05, now - 60, p) for p in PASSPORT])
    data = tmp_path / "eval.jsonl"
    rows = [{"text": p, "intent": "passport"} for p in PASSPORT]
    data.write_text("\n".join(map(json.dumps, rows)) + "\n", encoding="utf-8")
    out_path = tmp_path / "candidate.yaml"
    argv = ["refresh", "-r", registry, "-o", out_path, "--eval-data", data]
    code, out, _ = cli(capsys, *argv)
    assert code == 1 and "new route candidate-1" in out and "FAILED" in out
    code, out, _ = cli(capsys, *argv, "--force", "--json")
    assert code == 1 and loads_strict(out)["compare"]["passed"] is False
    code, out, _ = cli(capsys, *argv, "--force", "--max-drop", "100")
    assert code == 0 and "passed" in out


def test_refresh_reads_eval_data_before_it_writes_the_candidate(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing or broken --eval-data failed after the mining, the candidate written
    (so the next run also needed --force)."""
    now = time.time()
    fill(registry, [record("default", 0.05, now - 60, p) for p in PASSPORT])
    broken = tmp_path / "eval.jsonl"
    broken.write_text('{"text": "recipe for apple pie", "intent": "cooking"}\nnot json\n')
    out_path = tmp_path / "candidate.yaml"
    for data, said in (
        (tmp_path / "missing.jsonl", "cannot read labelled data: No such file or directory"),
        (broken, f"{broken}:2: invalid JSON"),
    ):
        code, _, err = cli(capsys, "refresh", "-r", registry, "-o", out_path, "--eval-data", data)
        assert code == 2 and said in " ".join(err.split())
        assert not out_path.exists()


def test_a_log_of_an_older_schema_asks_for_an_upgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log copied off an older gateway (schema 1) failed with "no such column:
    client", a raw SQL error, in report, export and the dashboard."""
    from llmroute.telemetry.store import migrate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    shipped = migrate.load_migrations
    monkeypatch.setattr(migrate, "load_migrations", lambda backend: shipped(backend)[:1])
    store = open_store(url)
    try:
        assert store.migrate() == 1
    finally:
        store.close()
    monkeypatch.setattr(migrate, "load_migrations", shipped)
    for command in (("report",), ("export",)):
        code, _, err = cli(capsys, *command, "--url", url)
        assert code == 2 and "has schema version 1" in err and "llmroute db upgrade" in err
    assert cli(capsys, "db", "upgrade", "--url", url)[0] == 0
    assert cli(capsys, "report", "--url", url)[0] == 0


def test_a_candidate_in_another_folder_names_the_registrys_artifacts(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`refresh -r team/registry.yaml -o candidate.yaml` kept `router: routers/r` as the
    registry wrote it, so the candidate named ./routers/r: 'no such router artifact' at
    its first load, and `--eval-data`, which loads it, failed with exit 2 after writing
    it. Its relative paths are now rewritten for its own folder (team/routers/r)."""
    from llmroute.decide import Router
    from llmroute.registry import load_registry

    team = tmp_path / "team"
    data = tmp_path / "difficulty.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"q {i}", "weak_correct": i % 3 == 0, "strong_correct": True})
            + "\n"
            for i in range(60)
        )
    )
    train = ["train", "difficulty", "--data", data, "--router", "random", "-o", team / "routers/r"]
    assert cli(capsys, *train)[0] == 0
    document = yaml.safe_load(registry.read_text(encoding="utf-8"))
    document["default"]["difficulty"] = {
        "router": "routers/r", "strong": "large", "weak": "small", "threshold": 0.5,
    }  # fmt: skip
    live = team / "registry.yaml"
    live.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    fill(registry, [record("default", 0.05, time.time() - 60, p) for p in PASSPORT])
    labelled = tmp_path / "eval.jsonl"
    labelled.write_text(json.dumps({"text": "recipe for apple pie", "intent": "cooking"}) + "\n")
    out_path = tmp_path / "candidate.yaml"
    code, out, err = cli(capsys, "refresh", "-r", live, "-o", out_path, "--eval-data", labelled)
    assert code == 0, err
    assert "new route candidate-1" in out and "vs baseline" in out
    candidate = load_registry(out_path)
    assert candidate.registry.default.difficulty is not None
    assert candidate.registry.default.difficulty.router == "team/routers/r"
    Router(candidate).close()  # loads the router artifact: found


def test_client_empty_narrows_to_the_requests_without_a_key(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--client ''` is the requests made without a key, as `db forget --client ''` erases
    them; report and export matched no row with it (a key's name is never empty)."""
    now = time.time() - 600
    keyed = [record("code", 0.5, now, client="svc-a") for _ in range(2)]
    fill(registry, keyed + [record("weather", 0.5, now) for _ in range(3)])
    code, out, err = cli(capsys, "report", "-r", registry, "--client", "", "--json")
    assert code == 0, err
    assert loads_strict(out)["total"]["n"] == 3
    code, out, _ = cli(capsys, "export", "-r", registry, "--client", "")
    assert code == 0 and [json.loads(line)["client"] for line in out.splitlines()] == [None] * 3


def test_a_narrowed_report_keeps_only_its_requests_feedback_and_shadow_rows(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--client`, `--tag` and `--api` narrow the whole report: its shadow quality was
    every request's (another key's judged pairs shown as the narrowed one's), and the
    feedback on another key's requests was counted as on requests outside the window."""
    now = time.time() - 600
    keyed = [record("code", 0.5, now, client="svc-a") for _ in range(2)]
    fill(registry, keyed + [record("weather", 0.5, now) for _ in range(3)])
    store = open_store(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        store.write_feedback(FeedbackRecord(keyed[0].id, now, score=1.0, thumbs="up"))
        store.write_shadow(
            ShadowRecord(keyed[0].id, now, "code", "large", "large", "a", "a", routed_ok=True)
        )
    finally:
        store.close()
    code, out, err = cli(capsys, "report", "-r", registry, "--client", "", "--json")
    assert code == 0, err
    payload = loads_strict(out)
    assert payload["total"]["n"] == 3
    assert (payload["feedback"], payload["feedback_unmatched"]) == ([], 0)
    assert payload["shadow"]["overall"]["pairs"] == 0
    code, out, _ = cli(capsys, "report", "-r", registry, "--client", "svc-a", "--json")
    payload = loads_strict(out)
    assert payload["feedback"][0]["n"] == 1 and payload["feedback_unmatched"] == 0
    assert payload["shadow"]["overall"]["pairs"] == 1
    code, out, _ = cli(capsys, "report", "-r", registry, "--client", "")
    assert code == 0 and "shadow quality" not in out


def test_cache_hits_are_a_line_of_their_own_not_requests_without_token_counts(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cache hit is logged with no tokens and no cost (no model was called): the report
    counted hits in "N without token counts", read as missing data, and a cache-heavy
    deployment's savings left them out unsaid. They are a line of their own: how many,
    and what the hits whose prompt the same model answered in the window would have cost
    again (that answer's cost), labelled so; nor are they "without token counts"."""
    now = time.time()
    fill(
        registry,
        [
            record("code", 0.5, now - 90, "what is a monad", tokens_in=1000, tokens_out=1000),
            *[
                record("code", 0.5, now - 60 + i, "what is a monad", cache_hit=True)
                for i in range(3)
            ],
            record("code", 0.5, now - 30, "never answered here", cache_hit=True),
            record("weather", 0.5, now - 20, "rain?"),  # no tokens: still said so
        ],
    )
    code, out, err = cli(capsys, "report", "-r", registry)
    assert code == 0, err
    lines = out.splitlines()
    cost = next(line for line in lines if line.startswith("cost $"))
    assert cost.endswith("; 1 without token counts"), cost  # the weather request alone
    (hits,) = [line for line in lines if line.startswith("cache hits: ")]
    # large: $3 + $15 per million tokens, 1000 of each: $0.018 a call
    assert hits == (
        "cache hits: 4, no model called ($0, not in the savings above); $0.054 not spent "
        "again on 3 of them (the cost of the same prompt's answer by the same model in "
        "this window)"
    ), hits
    code, out, _ = cli(capsys, "report", "-r", registry, "--json")
    payload = loads_strict(out)
    assert payload["cache"] == {"hits": 4, "priced": 3, "not_spent_usd": pytest.approx(0.054)}
    assert payload["total"]["unpriced"] == 1
