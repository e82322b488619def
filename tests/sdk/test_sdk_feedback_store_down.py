"""SDK feedback to a PostgreSQL decision log that does not answer raises a clear
`TelemetryError` naming the store with its password masked, in the error and in the
log lines, also a password holding characters a URL reserves (``#``, ``?``), which
libpq reads as part of the password and the mask left in full. The store is a closed
port on 127.0.0.1 (a free one the system picks, held bound, never listening: each
connection is refused)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmroute import Router
from llmroute.errors import TelemetryError

PASSWORD = "s3#cr?3t-pw"
REGISTRY = """encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {provider: fake, model: m}
routes:
  - {name: chat, examples: [hello there], target: m}
default: {target: m}
"""


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))  # bound, not listening: refused, and ours
        yield held.getsockname()[1]


@pytest.mark.slow  # two waits of the store's 5 s timeout
def test_feedback_to_a_store_that_does_not_answer_masks_its_password(
    closed_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"postgresql://llm:{PASSWORD}@127.0.0.1:{closed_port}/test"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", url)
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY)
    with Router.from_yaml(path) as router, pytest.raises(TelemetryError) as caught:
        router.chat.feedback("no-such-decision", thumbs="down")
    message = str(caught.value)
    masked = f"postgresql://llm:***@127.0.0.1:{closed_port}/test"
    assert message.startswith(f"cannot write feedback: no connection to PostgreSQL at {masked}")
    assert "refused" in message and "\n" not in message
    assert PASSWORD not in message and "cr?3t" not in message
    assert caplog.text and PASSWORD not in caplog.text and "cr?3t" not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://llm:s3cr3t@127.0.0.1:{port}/te%ffst",  # a %-escape that is no UTF-8
        "postgresql://llm:s3cr3t@127.0.0.1:{port}/test?application_name=\udc80",
    ],
    # ids of their own: a lone surrogate in a test's id cannot cross to an xdist worker
    ids=["no-utf8-escape", "lone-surrogate"],
)
def test_feedback_to_a_log_that_could_not_open_says_why_once(
    url: str, closed_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL the driver could not read said a codec's error ("'utf-8' codec can't decode
    byte 0xff in position 2"), and named the URL twice when the store's own error did:
    now the store's error alone, the password masked."""
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", url.format(port=closed_port))
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY)
    with Router.from_yaml(path) as router, pytest.raises(RuntimeError) as caught:
        router.chat.feedback("no-such-decision", thumbs="up")
    message = str(caught.value)
    assert message.startswith(
        "feedback needs the decision log, which could not be opened: invalid PostgreSQL URL "
        f"postgresql://llm:***@127.0.0.1:{closed_port}/"
    )
    assert message.count("postgresql://") == 1 and "s3cr3t" not in message
    assert "codec" not in message
    message.encode("utf-8")  # a lone surrogate written as its escape, as mask_url writes it
