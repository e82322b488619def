"""A base URL's ``user:password@`` is sent as ``Authorization: Basic base64(user:password)``.
The password was withheld from the upstream messages errors repeat (the client's error
JSON, the log), but not the Basic value made of it: an upstream (a proxy) echoing the
header it got gave the password away in base64. Against a real HTTP server on
127.0.0.1 that echoes the ``Authorization`` header, or the pair it decoded, in its
error body. Each test takes fresh credentials: what is withheld is for the process."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmroute.errors import ProviderError
from llmroute.providers.base import Timeouts
from llmroute.providers.openai_compat import OpenAICompatProvider
from llmroute.registry.schema import Provider

TIMEOUTS = Timeouts(total_s=5.0, connect_s=2.0)


class _Echoing(BaseHTTPRequestHandler):
    """Answers every POST 400 with an OpenAI-style error repeating the credentials it
    got, as the path asks: ``/header`` the Authorization header whole, ``/pair`` the
    ``user:password`` it decodes from it."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        header = self.headers.get("authorization", "")
        if "/pair/" in self.path:
            said = base64.b64decode(header.removeprefix("Basic ")).decode()
            message = f"user {said} is not allowed to use this model"
        else:
            message = f"request with Authorization: {header} refused by proxy"
        body = json.dumps({"error": {"message": message, "type": "invalid_request"}}).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echoing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _refused(base_url: str, *, stream: bool = False) -> ProviderError:
    """The error of a call through `base_url` (the upstream answers 400)."""

    async def run() -> ProviderError:
        provider = OpenAICompatProvider("proxy", Provider(kind="openai", base_url=base_url))
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
        try:
            if stream:
                async for _ in provider.stream("m", body, timeouts=TIMEOUTS):
                    pass
            else:
                await provider.complete("m", body, timeouts=TIMEOUTS)
        except ProviderError as exc:
            return exc
        finally:
            await provider.aclose()
        raise AssertionError("no ProviderError")

    return asyncio.run(run())


@pytest.mark.parametrize("stream", [False, True])
def test_an_echoed_basic_header_is_withheld(port: int, stream: bool) -> None:
    password = "pw" + secrets.token_hex(4)
    basic = base64.b64encode(f"svc:{password}".encode()).decode()
    error = _refused(f"http://svc:{password}@127.0.0.1:{port}/header/v1", stream=stream)
    assert basic not in str(error) and password not in str(error)
    assert "request with Authorization: [redacted] refused by proxy" in str(error)


def test_an_echoed_user_password_pair_is_withheld_whole(port: int) -> None:
    password = "pw" + secrets.token_hex(4)
    error = _refused(f"http://svc:{password}@127.0.0.1:{port}/pair/v1")
    assert password not in str(error)
    assert "user [redacted] is not allowed" in str(error)


def test_a_token_sent_as_the_user_alone_is_withheld(port: int) -> None:
    """``https://TOKEN@host``: no password, the user is the credential."""
    token = "t" + secrets.token_hex(6)
    error = _refused(f"http://{token}@127.0.0.1:{port}/pair/v1")
    assert token not in str(error) and "user [redacted]: is not allowed" in str(error)
