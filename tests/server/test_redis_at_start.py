"""`llmroute serve` says at its start, and at each reload, whether each Redis its
registry names can be used: one line per URL, naming the settings that use it and what
is wrong (here a db the server lacks and a refused port), its password masked; and it
serves all the same, each feature as when Redis is down."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from gateway_proc import ECHO_ONLY, free_port, serve_text, wait_for
from redis_service import REDIS_URL, past_databases
from stall_proxy import stall_proxy

REGISTRY = """
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small: {provider: echo, model: echo-small, rpm: %(rpm)d}
routes:
  - {name: chat, examples: [hello there], target: small}
default: {target: small}
telemetry: {enabled: false}
cache: {url: "redis://:s3cret@127.0.0.1:%(closed)d/0"}
affinity: {url: "%(past)s", namespace: "%(ns)s"}
stored_responses: {url: "%(redis)s", namespace: "%(ns)s"}
dispatch:
  limits: {url: "%(past)s", namespace: "%(ns)s"}
"""


def _lines(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line]


def test_each_redis_is_said_once_at_start_and_at_a_reload(
    tmp_path: Path, redis_namespace: str
) -> None:
    """A wrong URL or a Redis that is down showed only at the first request that used
    it, in that feature's failure line."""
    past, db, count = past_databases()
    closed_port = free_port()  # bound, then closed: nothing listens
    values = {"closed": closed_port, "past": past, "redis": REDIS_URL, "ns": redis_namespace}
    text = REGISTRY % {**values, "rpm": 100}
    with serve_text(text, tmp_path) as served:
        body = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
        answered = httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=30)
        assert answered.status_code == 200  # limits let it through, the cache misses
        said = [
            f"redis {past} (dispatch.limits.url, affinity.url) cannot be used: db {db} is "
            f"out of range: this Redis has {count} databases",
            f"redis redis://:***@127.0.0.1:{closed_port}/0 (cache.url) cannot be used: "
            "connection refused: ",
            f"redis {REDIS_URL} (stored_responses.url): answered in ",
        ]
        wait_for(
            "the Redis checks",
            lambda: all(_lines(served.log_text(), s) for s in said),
            15,
            served.log,
        )
        log = served.log_text()
        assert [len(_lines(log, s)) for s in said] == [1, 1, 1]
        assert [_lines(log, s)[0].startswith("WARNING") for s in said] == [True, True, False]
        assert "s3cret" not in log

        (tmp_path / "registry.yaml").write_text(REGISTRY % {**values, "rpm": 200})
        served.proc.send_signal(signal.SIGHUP)
        wait_for(
            "the checks of the reloaded registry",
            lambda: all(len(_lines(served.log_text(), s)) == 2 for s in said),
            30,
            served.log,
        )
        assert "s3cret" not in served.log_text()


FIXED = ECHO_ONLY + 'affinity: {url: "%(url)s", namespace: "%(ns)s"}\n'


def test_a_reload_that_leaves_the_version_unchanged_checks_redis_again(
    tmp_path: Path, redis_namespace: str
) -> None:
    """An operator who fixed Redis (or the network) sends SIGHUP for a fresh check: a
    reload whose file is as it was (the version unchanged) said nothing of Redis."""
    with stall_proxy(REDIS_URL) as (proxy, url):
        proxy.refuse()
        with serve_text(FIXED % {"url": url, "ns": redis_namespace}, tmp_path) as served:
            down = f"redis {url} (affinity.url) cannot be used: "
            up = f"redis {url} (affinity.url): answered in "
            wait_for("the start's check", lambda: bool(_lines(served.log_text(), down)), 15)
            proxy.resume()
            served.proc.send_signal(signal.SIGHUP)
            wait_for(
                "the check of the unchanged registry",
                lambda: bool(_lines(served.log_text(), up)),
                15,
                served.log,
            )
            log = served.log_text()
            assert _lines(log, "registry reload (SIGHUP): version ")[0].endswith(" unchanged")
            assert len(_lines(log, down)) == 1
