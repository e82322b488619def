"""Registry hot reload end to end: `llmroute serve` as a subprocess, its registry file
edited under it, a fake upstream (a real HTTP server) behind it."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import BIN, Served, serve, wait_for

KEY_ENV = "LLMROUTE_TEST_UPSTREAM_KEY"
SECRET = "sk-test-SECRET-reload-77aa66bb55cc"
SLOW = "slow?delay=3"  # the upstream takes this long: long enough to reload under it

REGISTRY = """\
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", api_key_env: %(key_env)s, timeout_s: 10}
models:
  small: {provider: fake, model: up-small}
  slow: {provider: fake, model: "%(slow)s"}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
%(extra)s
default: {target: small}
"""

MATHS = """\
  - name: maths
    examples: ["integrate x squared from zero to one", "solve this quadratic equation"]
    target: small
"""

INVALID = """\
  - name: maths
    examples: ["solve this quadratic equation"]
    target: nope
"""
INVALID_LINE = 13  # the line of `target: nope` above, once rendered into REGISTRY


@dataclass
class Reloading:
    served: Served
    registry: Path
    upstream: FakeUpstream

    def write(self, extra: str = "", *, slow: bool = True) -> None:
        """Replace the registry file atomically (as editors and deploy tools do)."""
        text = _registry(self.upstream, extra)
        if not slow:
            text = text.replace(f'  slow: {{provider: fake, model: "{SLOW}"}}\n', "")
        scratch = self.registry.with_suffix(".tmp")
        scratch.write_text(text)
        os.replace(scratch, self.registry)

    def wait_version(self, old: str, timeout: float = 15) -> str:
        wait_for("a reload", lambda: self.served.version() != old, timeout, self.served.log)
        return self.served.version()

    def wait_log(self, text: str, timeout: float = 15) -> None:
        wait_for(repr(text), lambda: text in self.served.log_text(), timeout, self.served.log)


def _registry(upstream: FakeUpstream, extra: str = "") -> str:
    values = {"url": upstream.url, "key_env": KEY_ENV, "slow": SLOW, "extra": extra}
    return REGISTRY % values


@pytest.fixture
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Reloading]:
    """A gateway polling its registry every 0.1 s; a test may pass other serve
    arguments by indirect parametrization."""
    args = getattr(request, "param", ["--reload-interval", "0.1"])
    registry = tmp_path / "registry.yaml"
    with fake_upstream() as upstream:
        registry.write_text(_registry(upstream))
        log = tmp_path / "serve.log"
        with serve(registry, log, args, env={KEY_ENV: SECRET}) as served:
            yield Reloading(served, registry, upstream)
        assert SECRET not in log.read_text()


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _chat(url: str, model: str, *, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": _user("hello"), "stream": stream}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20)


def _model_ids(url: str) -> set[str]:
    response = httpx.get(f"{url}/v1/models", timeout=5)
    return {m["id"] for m in response.json()["data"]}


def test_an_edit_adds_a_route(gateway: Reloading) -> None:
    url = gateway.served.url
    old = gateway.served.version()
    assert "maths" not in _model_ids(url)
    gateway.write(MATHS)
    new = gateway.wait_version(old)
    assert "maths" in _model_ids(url)
    pinned = {"model": "maths", "messages": _user("x")}
    assert httpx.post(f"{url}/v1/route", json=pinned, timeout=5).json()["route"] == "maths"
    auto = {"model": "auto", "messages": _user("solve this quadratic equation")}
    assert httpx.post(f"{url}/v1/route", json=auto, timeout=5).json()["route"] == "maths"
    gateway.wait_log(f"registry reloaded (file changed): version {old} → {new} (routes +maths)")


def test_a_registry_file_gone_for_a_while_is_said_and_so_is_its_return(
    gateway: Reloading,
) -> None:
    """The old registry serves meanwhile, silently: an operator must learn that edits
    are not being read (an editor's delete and rename, shorter, is not reported)."""
    old = gateway.served.version()
    text = gateway.registry.read_text()
    gateway.registry.unlink()
    gateway.wait_log("is gone or cannot be read: still serving version " + old)
    assert _chat(gateway.served.url, "auto").status_code == 200
    gateway.registry.write_text(text)
    gateway.wait_log("can be read again")
    assert gateway.served.version() == old


def test_a_touch_without_a_change_does_not_reload(gateway: Reloading) -> None:
    old = gateway.served.version()
    os.utime(gateway.registry)
    gateway.write()  # the same text, a new file
    time.sleep(1.0)  # ten polls
    assert gateway.served.version() == old
    assert "registry reload" not in gateway.served.log_text()


def test_an_invalid_registry_is_rejected_and_the_old_one_keeps_serving(
    gateway: Reloading,
) -> None:
    url = gateway.served.url
    old = gateway.served.version()
    gateway.write(INVALID)
    where = f"{gateway.registry}:{INVALID_LINE}: routes[1].target: unknown model 'nope'"
    gateway.wait_log(where)
    line = next(x for x in gateway.served.log_text().splitlines() if where in x)
    assert line.startswith("ERROR")
    assert f"still serving version {old}" in line
    assert gateway.served.version() == old
    assert _chat(url, "chitchat").status_code == 200
    assert "maths" not in _model_ids(url)

    gateway.write(MATHS)  # the fix
    new = gateway.wait_version(old)
    assert "maths" in _model_ids(url)
    gateway.wait_log(f"version {old} → {new}")


@pytest.mark.parametrize("gateway", [["--reload-interval", "600"]], indirect=True)
def test_sighup_reloads(gateway: Reloading) -> None:
    old = gateway.served.version()
    gateway.write(MATHS)
    assert gateway.served.version() == old  # the next poll is ten minutes away
    gateway.served.proc.send_signal(signal.SIGHUP)
    new = gateway.wait_version(old)
    assert "maths" in _model_ids(gateway.served.url)
    gateway.wait_log(f"registry reloaded (SIGHUP): version {old} → {new}")
    assert gateway.served.proc.poll() is None  # SIGHUP did not end it


def test_in_flight_requests_finish_on_the_registry_they_started_with(
    gateway: Reloading,
) -> None:
    url = gateway.served.url
    old = gateway.served.version()
    results: dict[str, httpx.Response] = {}

    def call(stream: bool) -> None:
        results["stream" if stream else "plain"] = _chat(url, "slow", stream=stream)

    threads = [threading.Thread(target=call, args=(stream,)) for stream in (False, True)]
    for thread in threads:
        thread.start()
    wait_for("both requests upstream", lambda: len(gateway.upstream.calls_to(SLOW)) == 2, 10)
    gateway.write(slow=False)  # the model they asked for is gone from the new registry
    gateway.wait_version(old, timeout=2.5)
    assert not results  # the upstream is still answering them
    for thread in threads:
        thread.join(timeout=20)
    assert results["plain"].status_code == 200
    assert results["plain"].json()["choices"][0]["message"]["content"] == "echo: hello"
    assert results["stream"].status_code == 200
    assert results["stream"].text.rstrip().endswith("data: [DONE]")
    gateway.wait_log(f"registry version {old} retired")
    missing = _chat(url, "slow")
    assert missing.status_code == 404  # new requests see the new registry
    assert missing.json()["error"]["code"] == "model_not_found"


def test_a_new_decision_log_takes_over_without_losing_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``telemetry.url`` edited under a running gateway: requests from then on are
    logged to the new log; a request in flight across the reload still lands (in one
    log or the other, not lost), and the old log is closed once it is done."""
    from llmroute.telemetry.store import open_store

    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL", raising=False)  # the registry decides
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    registry = tmp_path / "registry.yaml"

    def write(log: Path) -> None:
        settings = f"telemetry: {{url: 'sqlite:///{log}', flush_seconds: 0.05}}\n"
        scratch = registry.with_suffix(".tmp")
        scratch.write_text(_registry(upstream) + settings)
        os.replace(scratch, registry)

    def ids(log: Path) -> set[str]:
        if not log.exists():
            return set()
        store = open_store(f"sqlite:///{log}")
        try:
            return {d.id for d in store.decisions(0)}
        except Exception:  # the writer has not created the tables yet
            return set()
        finally:
            store.close()

    with fake_upstream() as upstream:
        write(first)
        args = ["--reload-interval", "0.1"]
        with serve(registry, tmp_path / "serve.log", args, env={KEY_ENV: SECRET}) as served:
            before = _chat(served.url, "small").headers["x-llmroute-decision-id"]
            wait_for("the first record", lambda: before in ids(first), 10, served.log)
            in_flight: list[httpx.Response] = []
            thread = threading.Thread(target=lambda: in_flight.append(_chat(served.url, "slow")))
            thread.start()
            time.sleep(0.5)  # the slow request is upstream now
            old = served.version()
            write(second)
            wait_for("a reload", lambda: served.version() != old, 15, served.log)
            after = _chat(served.url, "small").headers["x-llmroute-decision-id"]
            thread.join(20)
            slow = in_flight[0].headers["x-llmroute-decision-id"]
            wait_for("the new log", lambda: after in ids(second), 10, served.log)
            wait_for("the slow record", lambda: slow in ids(first) | ids(second), 10, served.log)
            assert after not in ids(first)
            wait_for(
                "the old log closed",
                lambda: "registry version" in served.log_text() and "retired" in served.log_text(),
                15,
                served.log,
            )
            assert "decision log settings changed" in served.log_text()


def test_with_cases_a_registry_that_fails_one_is_not_served(tmp_path: Path) -> None:
    """`--cases`: a reload whose registry breaks a routing case is rejected like an
    invalid one, and the running registry keeps serving; at start, serve refuses."""
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n  - name: small talk stays small\n    prompt: hi there!\n"
        "    expect: {route: chitchat, model: small}\n"
    )
    registry = tmp_path / "registry.yaml"
    with fake_upstream() as upstream:
        registry.write_text(_registry(upstream))
        args = ["--reload-interval", "0.1", "--cases", str(cases)]
        with serve(registry, tmp_path / "serve.log", args, env={KEY_ENV: SECRET}) as served:
            gateway = Reloading(served, registry, upstream)
            old = served.version()
            broken = _registry(upstream).replace("    target: small\n", "    target: slow\n", 1)
            scratch = registry.with_suffix(".tmp")
            scratch.write_text(broken)
            os.replace(scratch, registry)
            gateway.wait_log("1 of 1 routing cases fail: small talk stays small")
            line = next(x for x in served.log_text().splitlines() if "routing cases fail" in x)
            assert line.startswith("ERROR") and f"still serving version {old}" in line
            assert "model small expected, got slow" in line
            assert served.version() == old
            gateway.write(MATHS)  # a change that keeps the case
            gateway.wait_version(old)
        refused = subprocess.run(
            [str(BIN / "llmroute"), "serve", "-r", str(registry), "--port", "9", "--cases",
             str(tmp_path / "missing.yaml")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert refused.returncode == 2 and "missing.yaml" in refused.stderr
        registry.write_text(broken)
        refused = subprocess.run(
            [str(BIN / "llmroute"), "serve", "-r", str(registry), "--port", "9", "--cases",
             str(cases)],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, KEY_ENV: SECRET},
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert "1 of 1 routing cases fail" in refused.stderr
        assert "Traceback" not in refused.stderr


def test_what_only_building_finds_stops_serve_with_one_line(tmp_path: Path) -> None:
    """An unset pseudonym key (found when the safety layer is built, not by the schema)
    was a starlette lifespan traceback and exit 3; `registry check` said it in one line."""
    registry = tmp_path / "registry.yaml"
    with fake_upstream() as upstream:
        text = _registry(upstream).replace(
            "default: {target: small}",
            "default: {target: small}\nsafety:\n  injection: {enabled: false}\n"
            "  pii: {pseudonym_key_env: LLMROUTE_TEST_UNSET_PSEUDONYM_KEY}",
        )
        registry.write_text(text)
        env = {k: v for k, v in os.environ.items() if k != "LLMROUTE_TEST_UNSET_PSEUDONYM_KEY"}
        for workers in ("1", "2"):  # with workers, checked in a short-lived child process
            refused = subprocess.run(
                [str(BIN / "llmroute"), "serve", "-r", str(registry), "--port", "9",
                 "--workers", workers],
                capture_output=True, text=True, timeout=60, check=False,
                env={**env, KEY_ENV: SECRET},
            )  # fmt: skip
            assert refused.returncode == 2, refused.stderr
            assert "LLMROUTE_TEST_UNSET_PSEUDONYM_KEY" in refused.stderr
            lines = refused.stderr.strip().splitlines()
            assert "Traceback" not in refused.stderr and len(lines) == 1, refused.stderr


def test_a_reload_keeps_an_open_breaker_open(gateway: Reloading) -> None:
    """An edit elsewhere in the registry closed every breaker: the dead upstream was
    called again after each reload, and the gauge said it was healthy."""
    url = gateway.served.url

    def write(extra: str = "") -> None:
        text = _registry(gateway.upstream, extra).replace(
            "  slow: {", "  flaky: {provider: fake, model: fail-500}\n  slow: {"
        )
        text += "dispatch:\n  retries: {attempts: 1}\n  breaker: {failures: 2, cooldown_s: 600}\n"
        scratch = gateway.registry.with_suffix(".tmp")
        scratch.write_text(text)
        os.replace(scratch, gateway.registry)

    def gauge() -> str:
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        return next(
            line.rsplit(" ", 1)[1]
            for line in metrics.splitlines()
            if line.startswith("llmroute_breaker_open{") and 'model="flaky"' in line
        )

    old = gateway.served.version()
    write()
    old = gateway.wait_version(old)
    for _ in range(3):
        assert _chat(url, "flaky").status_code >= 500
    assert gauge() == "1.0"
    called = len(gateway.upstream.calls_to("fail-500"))
    write(MATHS)  # an edit that has nothing to do with the flaky model
    gateway.wait_version(old)
    assert gauge() == "1.0"
    assert _chat(url, "flaky").status_code == 503  # refused by the breaker, not sent
    assert len(gateway.upstream.calls_to("fail-500")) == called
