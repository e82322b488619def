"""What the router itself answers (a method an endpoint does not take, a path it does
not serve) comes in the error shape of the API the client speaks: Anthropic's under
``/v1/messages``, whose clients (the `anthropic` SDK) read no other, OpenAI's elsewhere.
A real gateway on 127.0.0.1 with an echo model."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from gateway_proc import ECHO_ONLY, Served, serve_text


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_text(ECHO_ONLY, tmp_path_factory.mktemp("shapes")) as served:
        yield served


@pytest.mark.parametrize(
    ("method", "path", "status", "kind"),
    [
        ("GET", "/v1/messages", 405, "invalid_request_error"),
        ("DELETE", "/v1/messages", 405, "invalid_request_error"),
        ("GET", "/v1/messages/count_tokens", 405, "invalid_request_error"),
        ("POST", "/v1/messages/batches", 404, "not_found_error"),
    ],
)
def test_the_messages_api_answers_a_wrong_method_or_path_in_its_own_shape(
    gateway: Served, method: str, path: str, status: int, kind: str
) -> None:
    response = httpx.request(method, f"{gateway.url}{path}", timeout=10)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert body["error"]["message"] and "param" not in body["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/chat/completions", 405), ("POST", "/v1/nothing", 404)],
)
def test_elsewhere_they_come_in_openais_shape(
    gateway: Served, method: str, path: str, status: int
) -> None:
    response = httpx.request(method, f"{gateway.url}{path}", timeout=10)
    assert response.status_code == status
    error = response.json()["error"]
    assert error.keys() == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


def test_the_log_holds_no_traceback(gateway: Served) -> None:
    assert "Traceback" not in gateway.log_text()


@pytest.mark.parametrize(
    ("method", "path", "served"),
    [
        ("POST", "/v1/chat/completions/", "POST /v1/chat/completions"),
        ("GET", "/v1/files/", "GET /v1/files"),
        ("GET", "/health/", "GET /health"),
        ("POST", "/v1/responses/", "POST /v1/responses"),
        ("POST", "/v1/conversations/", "POST /v1/conversations"),
        ("GET", "/v1/models/", "GET /v1/models"),  # not 'the model '' does not exist'
    ],
)
def test_a_stray_trailing_slash_is_a_404_naming_the_path_not_a_redirect(
    gateway: Served, method: str, path: str, served: str
) -> None:
    """Starlette answered 307 with an absolute ``Location`` built from the request's own
    ``Host``: behind a proxy, the gateway's internal address without the proxy's prefix,
    and to curl an empty answer."""
    response = httpx.request(method, f"{gateway.url}{path}", json={}, timeout=10)
    assert response.status_code == 404 and "location" not in response.headers
    message = response.json()["error"]["message"]
    assert message == (
        f"{method} {path} is not an endpoint of this gateway; {served} is (no trailing /)"
    )


def test_a_trailing_slash_under_messages_is_a_404_in_anthropics_shape(gateway: Served) -> None:
    response = httpx.post(f"{gateway.url}/v1/messages/", json={}, timeout=10)
    assert response.status_code == 404 and "location" not in response.headers
    error = response.json()["error"]
    assert error["type"] == "not_found_error"
    assert "POST /v1/messages is (no trailing /)" in error["message"]


def test_a_path_not_served_either_way_gets_no_hint(gateway: Served) -> None:
    response = httpx.post(f"{gateway.url}/v1/nothing/", json={}, timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        "POST /v1/nothing/ is not an endpoint of this gateway"
    )


def test_a_trailing_slash_names_no_path_the_method_is_not_served_on(gateway: Served) -> None:
    """GET /v1/chat/completions/ was told 'GET /v1/chat/completions is', a 405: the hint
    names a path only where the request's own method is served."""
    response = httpx.get(f"{gateway.url}/v1/chat/completions/", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        "GET /v1/chat/completions/ is not an endpoint of this gateway"
    )
