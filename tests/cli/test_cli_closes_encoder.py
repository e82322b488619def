"""The commands that build a router close it, and the embeddings endpoint's client it
built, on every path, errors included: each left its connection to the endpoint open
until the process ended (``unclosed <socket.socket ...>`` under ``-W error``; in-process,
a `ResourceWarning` once collected). A real endpoint on 127.0.0.1 answers them."""

from __future__ import annotations

import gc
import json
import logging
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from telemetry_records import build_record

from llmroute.cli._app import run
from llmroute.decide import Router
from llmroute.telemetry.store import open_store

REGISTRY = """\
encoder:
  kind: openai
  base_url: {url}
  model: embed
  dimensions: 4
providers:
  echo: {{kind: echo}}
models:
  small: {{provider: echo, model: echo-small}}
routes:
  - {{name: chat, target: small, examples: [hello there]}}
  - {{name: code, target: small, examples: [write a function]}}
default: {{target: small{default}}}
"""
# an artifact the router cannot load: it fails once its encoder was built and called
MISSING_ROUTER = (
    ", difficulty: {router: no-such-router, strong: small, weak: small, threshold: 0.5}"
)


@pytest.fixture
def logging_kept() -> Iterator[None]:
    """`serve` run in-process configures logging (`dictConfig`: handlers on llmroute's and
    uvicorn's loggers writing to this test's captured stderr); put back as it was, or the
    next tests in this worker log to a closed stream through handlers not theirs."""
    names = [None, *logging.Logger.manager.loggerDict]
    kept = {}
    for name in names:
        logger = logging.getLogger(name)
        kept[name] = (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
    yield
    for name in [None, *logging.Logger.manager.loggerDict]:
        logger = logging.getLogger(name)
        handlers, level, propagate, disabled = kept.get(name, ([], logging.NOTSET, True, False))
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as served:
        yield served


@pytest.fixture
def workdir(tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    # the examples' vectors are asked of the endpoint, not read from an earlier test's cache
    monkeypatch.setenv("LLMROUTE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "registry.yaml").write_text(REGISTRY.format(url=upstream.url, default=""))
    broken = REGISTRY.format(url=upstream.url, default=MISSING_ROUTER)
    (tmp_path / "broken.yaml").write_text(broken)
    (tmp_path / "prompts.txt").write_text("hello\nwrite code\n")
    rows = [{"text": "hello there", "intent": "chat"}, {"text": "a function", "intent": "code"}]
    (tmp_path / "labelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "cases.yaml").write_text(
        'cases:\n  - prompt: "hello"\n    expect: {model: small}\n'
    )
    (tmp_path / "bad-cases.yaml").write_text("cases: 3\n")
    (tmp_path / "failing-cases.yaml").write_text(
        'cases:\n  - prompt: "hello"\n    expect: {route: nowhere}\n'
    )
    store = open_store(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        store.migrate()
        now = time.time()
        store.write_decisions(
            [build_record(i, ts=now - 60 - i, prompt_mode="full") for i in range(3)]
        )
    finally:
        store.close()
    return tmp_path


COMMANDS = {
    "route": ["route", "-r", "registry.yaml", "hello"],
    "route, an unknown --key": ["route", "-r", "registry.yaml", "--key", "nobody", "hello"],
    "route, an artifact missing": ["route", "-r", "broken.yaml", "hello"],
    "eval": ["eval", "-r", "registry.yaml", "-d", "labelled.jsonl", "--json"],
    "eval --compare": [
        *("eval", "-r", "registry.yaml", "-d", "labelled.jsonl", "--json"),
        *("--compare", "registry.yaml"),
    ],
    "eval --compare, the baseline broken": [
        *("eval", "-r", "registry.yaml", "-d", "labelled.jsonl", "--compare", "broken.yaml"),
    ],
    "eval, an --oos-label that is a route": [
        *("eval", "-r", "registry.yaml", "-d", "labelled.jsonl", "--oos-label", "chat"),
    ],
    "registry test": ["registry", "test", "cases.yaml", "-r", "registry.yaml"],
    "registry test, a bad cases file": [
        "registry",
        "test",
        "bad-cases.yaml",
        "-r",
        "registry.yaml",
    ],
    "registry record": ["registry", "record", "prompts.txt", "-o", "-", "-r", "registry.yaml"],
    "registry diff": [
        *("registry", "diff", "registry.yaml", "registry.yaml", "-d", "prompts.txt"),
    ],
    "serve, its routing cases failing": [
        *("serve", "-r", "registry.yaml", "--port", "0", "--cases", "failing-cases.yaml"),
    ],
    "serve, its port taken": ["serve", "-r", "registry.yaml", "--port", "{taken}"],
    "refresh": [
        *("refresh", "-r", "registry.yaml", "-o", "candidate.yaml"),
        *("--url", "sqlite:///log.db", "--since", "1h"),
    ],
}


@pytest.mark.parametrize("argv", list(COMMANDS.values()), ids=list(COMMANDS))
def test_the_endpoints_connection_is_closed(
    argv: list[str], workdir: Path, capsys: pytest.CaptureFixture[str], logging_kept: None
) -> None:
    with socket.socket() as taken, warnings.catch_warnings(record=True) as seen:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        warnings.simplefilter("always")
        code = run([arg.format(taken=taken.getsockname()[1]) for arg in argv])
        gc.collect()  # what was left open is found here, if not as the command returned
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    assert code in (0, 1, 2), err
    unclosed = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert unclosed == [], err


def test_a_router_closes_the_encoder_it_built_not_one_given(
    workdir: Path, upstream: FakeUpstream
) -> None:
    """A router sharing another's encoder (`refresh`'s candidate, the gateway's next
    version) leaves it open: it is its maker's to close. The endpoint's client port tells
    the connections apart."""
    sent = len(upstream.requests)
    with Router.from_yaml("registry.yaml") as router:
        with Router(router.loaded, encoder=router.encoder) as sharing:
            sharing.decide("write code now")
        router.decide("hello again")
    router.decide("after its close")  # the router stays usable: a new connection
    ports = [r.port for r in upstream.requests[sent:]]
    assert len(ports) >= 3 and len(set(ports[:-1])) == 1 and ports[-1] != ports[0], ports
    router.close()
