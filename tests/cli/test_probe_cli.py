"""`llmroute registry probe`, run as a user runs it against a real (fake) upstream on
127.0.0.1: the exit code a deploy pipeline reads, the two-line report, `--json`,
`--strict`, and a key that is never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_upstream import FakeUpstream, fake_upstream

LLMROUTE = str(Path(sys.executable).parent / "llmroute")
KEY = "sk-probe-cli-0123456789abcdef"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        server.listed = ["qwen2.5-7b-instruct", "qwen2.5-72b-instruct"]
        server.key = KEY
        yield server


def _registry(tmp_path: Path, upstream: FakeUpstream, large: str) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(
        f"""
encoder: builtin:static
providers:
  local: {{kind: openai, base_url: "{upstream.url}", api_key_env: PROBE_CLI_KEY}}
models:
  small: {{provider: local, model: qwen2.5-7b-instruct}}
  large: {{provider: local, model: {large}}}
routes:
  - {{name: r, examples: [hi], target: large}}
default: {{target: small}}
""",
        encoding="utf-8",
    )
    return path


def llmroute(*args: str | Path, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PROBE_CLI_KEY"}
    if key is not None:
        env["PROBE_CLI_KEY"] = key
    return subprocess.run(
        [LLMROUTE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**env, "COLUMNS": "200"},
    )


def test_a_healthy_pool_exits_0_and_says_so(tmp_path: Path, upstream: FakeUpstream) -> None:
    registry = _registry(tmp_path, upstream, "qwen2.5-72b-instruct")
    result = llmroute("registry", "probe", "-r", registry)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "ok",
        "small",
        "local",
        "/",
        "qwen2.5-7b-instruct",
        "at",
        upstream.url,
    ]
    assert lines[1].strip() == "listed by the server"
    assert lines[-1] == "2 ok, 0 warned, 0 failed"
    chat = llmroute("registry", "probe", "large", "-r", registry, "--chat", "--json")
    assert chat.returncode == 0, chat.stderr
    payload = json.loads(chat.stdout)
    assert (payload["ok"], payload["warn"], payload["fail"], payload["chat"]) == (1, 0, 0, True)
    [probe] = payload["probes"]
    assert probe["model"] == "large" and probe["upstream"] == "qwen2.5-72b-instruct"
    assert probe["detail"].startswith("answered") and probe["latency_ms"] > 0
    assert [r.path for r in upstream.requests].count("/v1/chat/completions") == 1


def test_a_name_the_server_does_not_list_warns_and_strict_fails(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    registry = _registry(tmp_path, upstream, "qwen2.5-72b-instuct")
    result = llmroute("registry", "probe", "-r", registry)
    assert result.returncode == 0, result.stderr
    assert "closest: qwen2.5-72b-instruct" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 ok, 1 warned, 0 failed"
    assert llmroute("registry", "probe", "-r", registry, "--strict").returncode == 1


def test_a_refused_or_missing_key_exits_1_without_printing_it(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    registry = _registry(tmp_path, upstream, "qwen2.5-72b-instruct")
    wrong = "sk-wrong-key-0123456789abcdef"
    refused = llmroute("registry", "probe", "-r", registry, key=wrong)
    assert refused.returncode == 1
    assert "credentials refused (HTTP 401); the key comes from PROBE_CLI_KEY" in refused.stdout
    assert wrong not in refused.stdout + refused.stderr
    before = len(upstream.requests)
    unset = llmroute("registry", "probe", "-r", registry, key=None)
    assert unset.returncode == 1
    assert "PROBE_CLI_KEY is not set; nothing was sent" in unset.stdout
    assert len(upstream.requests) == before


def test_usage_errors_exit_2(tmp_path: Path, upstream: FakeUpstream) -> None:
    registry = _registry(tmp_path, upstream, "qwen2.5-72b-instruct")
    unknown = llmroute("registry", "probe", "huge", "-r", registry)
    assert unknown.returncode == 2
    assert "not a pool model of" in unknown.stderr and "it has small, large" in unknown.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n", encoding="utf-8")
    assert llmroute("registry", "probe", "-r", bad).returncode == 2
    assert llmroute("registry", "probe", "-r", registry, "--timeout", "0").returncode == 2
    # the file where `registry check FILE` takes it: named, with the command that works
    mistaken = llmroute("registry", "probe", registry)
    assert mistaken.returncode == 2
    assert f"probe --registry {registry}" in mistaken.stderr
    assert upstream.requests == []


def test_each_redis_the_registry_keeps_state_in_is_a_row(
    tmp_path: Path, upstream: FakeUpstream, redis_namespace: str
) -> None:
    """Without MODEL the probe also checks each Redis the features use, as the gateway
    does when it loads the registry: one whose db the server lacks fails the probe (the
    gateway would serve without it), one that answers is ok; MODEL asks only models."""
    from redis_service import REDIS_URL, past_databases

    past, db, count = past_databases()
    registry = _registry(tmp_path, upstream, "qwen2.5-72b-instruct")
    with registry.open("a", encoding="utf-8") as more:
        more.write(
            f'cache: {{url: "{past}"}}\n'
            f'affinity: {{url: "{past}"}}\n'
            f'stored_responses: {{url: "{REDIS_URL}", namespace: "{redis_namespace}"}}\n'
        )
    result = llmroute("registry", "probe", "-r", registry, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    payload = json.loads(result.stdout)
    assert (payload["ok"], payload["fail"]) == (3, 1)
    rows = [p for p in payload["probes"] if p["model"] == "(redis)"]
    assert [(r["upstream"], r["where"], r["status"]) for r in rows] == [
        ("cache.url, affinity.url", past, "fail"),
        ("stored_responses.url", REDIS_URL, "ok"),
    ]
    assert rows[0]["detail"].startswith(f"db {db} is out of range: this Redis has {count}")
    assert rows[1]["detail"].startswith("answered in ")
    text = llmroute("registry", "probe", "-r", registry)
    assert f"fail  (redis)  redis / cache.url, affinity.url at {past}" in text.stdout
    assert text.stdout.splitlines()[-1] == "3 ok, 0 warned, 1 failed"
    assert llmroute("registry", "probe", "small", "-r", registry).returncode == 0


def test_a_redis_slower_than_a_features_timeout_warns(
    tmp_path: Path, upstream: FakeUpstream, redis_namespace: str
) -> None:
    """A Redis whose every round trip outlasts affinity's 50 ms was an `ok` row ("answered
    in 70 ms"), though each of affinity's calls would time out: it warns, naming the
    feature's timeout_s and both times, and the probe exits 0 (1 with --strict), as for
    any warning."""
    from redis_service import REDIS_URL
    from stall_proxy import stall_proxy

    registry = _registry(tmp_path, upstream, "qwen2.5-72b-instruct")
    text = registry.read_text(encoding="utf-8")
    with stall_proxy(REDIS_URL) as (proxy, url):
        registry.write_text(
            text + f'affinity: {{url: "{url}", namespace: "{redis_namespace}"}}\n',
            encoding="utf-8",
        )
        proxy.slow(0.07)
        result = llmroute("registry", "probe", "-r", registry, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        (row,) = [p for p in json.loads(result.stdout)["probes"] if p["model"] == "(redis)"]
        assert (row["upstream"], row["status"]) == ("affinity.url", "warn"), row
        assert "a round trip took " in row["detail"], row
        assert "more than affinity.timeout_s (50 ms)" in row["detail"], row
        text_run = llmroute("registry", "probe", "-r", registry)
        assert f"warn  (redis)  redis / affinity.url at {url}" in text_run.stdout
        assert text_run.stdout.splitlines()[-1] == "2 ok, 1 warned, 0 failed"
        assert llmroute("registry", "probe", "-r", registry, "--strict").returncode == 1
