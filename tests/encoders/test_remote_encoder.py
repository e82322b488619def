"""RemoteEncoder against a real OpenAI-style HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from llmroute.encoders import FakeEncoder, RemoteEncoder
from llmroute.errors import ConfigError, EncoderError

KEY = "sk-test-SECRET-0123456789"


@dataclass
class ServerState:
    mode: str = "ok"
    batches: list[list[str]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)


def make_handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    fake = FakeEncoder(dim=8)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.bodies.append(body)
            state.batches.append(body["input"])
            state.auth.append(self.headers.get("Authorization"))
            if state.mode == "slow":
                time.sleep(1.0)
            if state.mode == "401":
                return self._send(401, json.dumps({"error": f"bad key {KEY}"}).encode())
            if state.mode == "echo":  # a proxy repeating the credentials it got
                said = f"bad credentials {self.headers.get('Authorization')}"
                return self._send(400, json.dumps({"error": said}).encode())
            if state.mode == "500":
                return self._send(500, b'{"error": "boom"}')
            if state.mode == "garbage":
                return self._send(200, b"<html>not json")
            if self.path != "/v1/embeddings":
                return self._send(404, b"{}")
            vectors = fake.encode(body["input"]) * 3.0  # not normalised on purpose
            data = [
                {"object": "embedding", "index": i, "embedding": v.tolist()}
                for i, v in reversed(list(enumerate(vectors)))
            ]
            self._send(200, json.dumps({"data": data, "model": body["model"]}).encode())

    return Handler


@pytest.fixture()
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture()
def encoder(
    server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch
) -> Iterator[RemoteEncoder]:
    monkeypatch.setenv("TEST_EMBED_KEY", KEY)
    enc = RemoteEncoder(
        server[0],
        "text-embedding-3-small",
        api_key_env="TEST_EMBED_KEY",
        headers={"X-Team": "router"},
        batch_size=2,
        timeout=0.3,
    )
    yield enc
    enc.close()


def test_batches_normalises_and_orders(
    encoder: RemoteEncoder, server: tuple[str, ServerState]
) -> None:
    _, state = server
    texts = ["a b", "c d", "e f", "g h", "i j"]
    out = encoder.encode(texts)
    assert [len(b) for b in state.batches] == [2, 2, 1]
    np.testing.assert_allclose(out, FakeEncoder(dim=8).encode(texts), atol=1e-6)
    assert state.auth == [f"Bearer {KEY}"] * 3
    assert encoder.dim == 8
    assert encoder.identity == f"{'openai:' + server[0]}#text-embedding-3-small"


def test_repeated_texts_are_not_sent_twice(
    encoder: RemoteEncoder, server: tuple[str, ServerState]
) -> None:
    _, state = server
    encoder.encode(["same", "same", "other"])
    encoder.encode(["other", "same", ""])
    assert sorted(t for b in state.batches for t in b) == ["other", "same"]
    assert not encoder.encode([""]).any()


def test_dimensions_are_forwarded(server: tuple[str, ServerState]) -> None:
    url, state = server
    enc = RemoteEncoder(url, "m", dimensions=8)
    assert enc.dim == 8 and enc.identity.endswith("#m@8")
    enc.encode(["x"])
    assert state.bodies[0]["dimensions"] == 8 and state.auth == [None]


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("401", "HTTP 401"),
        ("500", "HTTP 500"),
        ("garbage", "malformed JSON"),
        ("slow", "timed out"),
    ],
)
def test_failures_raise_encoder_error_without_the_key(
    encoder: RemoteEncoder, server: tuple[str, ServerState], mode: str, match: str
) -> None:
    server[1].mode = mode
    with pytest.raises(EncoderError, match=match) as info:
        encoder.encode(["hello"])
    assert "/v1/embeddings" in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(encoder)
    assert info.value.__cause__ is None  # httpx objects (with headers) not chained


def test_a_base_urls_password_is_in_no_message(server: tuple[str, ServerState]) -> None:
    """``user:password@`` goes as ``Authorization: Basic``: the URL the messages name had
    the password in clear, and a server echoing the header gave it away in base64."""
    import base64

    url, state = server
    password = "pw-" + os.urandom(4).hex()
    basic = base64.b64encode(f"svc:{password}".encode()).decode()
    enc = RemoteEncoder(url.replace("http://", f"http://svc:{password}@"), "m")
    state.mode = "echo"
    with pytest.raises(EncoderError, match="HTTP 400") as info:
        enc.encode(["hello"])
    enc.close()
    assert state.auth == [f"Basic {basic}"]  # sent, and echoed back
    for shown in (str(info.value), repr(enc)):
        assert password not in shown and basic not in shown, shown
    assert "/v1/embeddings" in str(info.value) and "bad credentials Basic ***" in str(info.value)


def test_a_password_holding_an_at_sign_is_in_no_message_nor_identity(
    server: tuple[str, ServerState],
) -> None:
    """httpx reads the userinfo up to the last ``@`` (``svc:pw@rest`` sends the password
    ``pw@rest``); the messages, the repr and the identity (written into artifacts) cut it
    at the first, so they showed the password's tail (``***@rest@127.0.0.1``)."""
    import base64

    url, state = server
    tail = "tail-" + os.urandom(4).hex()
    basic = base64.b64encode(f"svc:pw@{tail}".encode()).decode()
    enc = RemoteEncoder(url.replace("http://", f"http://svc:pw@{tail}@"), "m")
    state.mode = "echo"
    with pytest.raises(EncoderError, match="HTTP 400") as info:
        enc.encode(["hello"])
    enc.close()
    assert state.auth == [f"Basic {basic}"]  # httpx sent the whole password
    for shown in (str(info.value), repr(enc), enc.identity):
        assert tail not in shown, shown
    assert enc.identity == f"openai:{url}#m"
    assert f"//***@{url.removeprefix('http://')}/embeddings" in str(info.value)


@pytest.mark.parametrize("userinfo", ["tok", "u:p"])
def test_short_base_url_credentials_are_in_no_message(userinfo: str) -> None:
    """Credentials under four characters were left in the URL the messages name (the
    length floor keeps a short user from being cut out of a server's words)."""
    enc = RemoteEncoder(f"http://{userinfo}@127.0.0.1:9/v1", "m", timeout=0.5)
    with pytest.raises(EncoderError, match=r"unreachable|timed out") as info:
        enc.encode(["hello"])
    enc.close()
    for shown in (str(info.value), repr(enc)):
        assert f"{userinfo}@" not in shown and "//***@127.0.0.1:9/v1" in shown, shown


def test_unreachable_server_is_an_encoder_error() -> None:
    enc = RemoteEncoder("http://127.0.0.1:9/v1", "m", timeout=0.5)
    with pytest.raises(EncoderError, match=r"unreachable|timed out"):
        enc.encode(["hello"])


def test_a_closed_encoder_opens_its_client_again(
    encoder: RemoteEncoder, server: tuple[str, ServerState]
) -> None:
    """Its router's close() closes it, and the router stays usable: a call after it
    raised httpx's RuntimeError ("the client has been closed")."""
    encoder.encode(["before"])
    encoder.close()
    out = encoder.encode(["after", "before"])
    np.testing.assert_allclose(out, FakeEncoder(dim=8).encode(["after", "before"]), atol=1e-6)
    assert server[1].batches == [["before"], ["after"]]


def test_a_call_imports_nothing(
    encoder: RemoteEncoder, server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx is imported with the client, not again on each call (an import statement
    a request, on the encoder's hot path): with `import httpx` made to fail after the
    encoder is built, calls are still answered, and their failures still caught."""
    closed = RemoteEncoder("http://127.0.0.1:9/v1", "m", timeout=0.5)
    monkeypatch.setitem(sys.modules, "httpx", None)  # `import httpx` now raises
    assert encoder.encode(["hello", "world"]).shape == (2, 8)
    server[1].mode = "slow"
    with pytest.raises(EncoderError, match="timed out"):
        encoder.encode(["a new text"])
    with pytest.raises(EncoderError, match=r"unreachable|timed out"):
        closed.encode(["hello"])
    closed.close()


def test_missing_key_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ConfigError, match="NOPE_KEY"):
        RemoteEncoder("http://127.0.0.1:9/v1", "m", api_key_env="NOPE_KEY")


@pytest.mark.parametrize("given", ["api_key_env", "header"])
def test_a_key_and_a_base_urls_credentials_together_are_refused(
    server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """httpx sends a URL's ``user:password@`` as Basic in place of the client's
    ``Authorization``: the key configured went unused without a word (the server saw
    the URL's credentials alone)."""
    url, state = server
    monkeypatch.setenv("TEST_EMBED_KEY", KEY)
    with_user = url.replace("http://", "http://svc:pw-1234@")
    more: dict[str, Any] = (
        {"api_key_env": "TEST_EMBED_KEY"}
        if given == "api_key_env"
        else {"headers": {"authorization": f"Bearer {KEY}"}}
    )
    with pytest.raises(ConfigError, match="credentials") as info:
        RemoteEncoder(with_user, "m", **more)
    assert KEY not in str(info.value) and "pw-1234" not in str(info.value)
    assert state.auth == []
    RemoteEncoder(url, "m", **more).close()  # either alone is fine
    RemoteEncoder(with_user, "m").close()
