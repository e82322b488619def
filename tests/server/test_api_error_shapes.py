"""What the router itself answers (a method an endpoint does not take, a path it does
not serve) comes in the error shape of the API the client speaks: Anthropic's under
``/v1/messages``, whose clients (the `anthropic` SDK) read no other, OpenAI's elsewhere.
A real gateway on 127.0.0.1 with an echo model."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
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


UNDER_V1 = "under /v1: an OpenAI client's base_url ends in /v1"
V1_ONCE = "/v1 once: a client that adds /v1 itself, as Anthropic's do, takes a base_url without it"


@pytest.mark.parametrize(
    ("method", "path", "said"),
    [
        ("POST", "/chat/completions", f"POST /v1/chat/completions is ({UNDER_V1})"),
        ("POST", "/embeddings", f"POST /v1/embeddings is ({UNDER_V1})"),
        ("GET", "/models", f"GET /v1/models is ({UNDER_V1})"),
        ("POST", "/responses/", f"POST /v1/responses is (no trailing /; {UNDER_V1})"),
        ("GET", "/v1/v1/models", f"GET /v1/models is ({V1_ONCE})"),
    ],
)
def test_a_path_missing_or_doubling_its_v1_is_a_404_naming_the_path(
    gateway: Served, method: str, path: str, said: str
) -> None:
    """A client set up for LiteLLM's proxy, which serves its API at the root too, calls
    /chat/completions; one of Anthropic's, given a base_url ending in /v1, calls
    /v1/v1/messages. Each is told the path to call, not a bare 'not an endpoint'."""
    response = httpx.request(method, f"{gateway.url}{path}", json={}, timeout=10)
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json()["error"]["message"] == (
        f"{method} {path} is not an endpoint of this gateway; {said}"
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/nothing"), ("GET", "/chat/completions"), ("POST", "/v1/v1/nothing"), ("POST", "/")],
)
def test_a_path_served_neither_way_gets_no_v1_hint(gateway: Served, method: str, path: str) -> None:
    """/v1/chat/completions does not take GET (a 405 there): no path is named."""
    response = httpx.request(method, f"{gateway.url}{path}", json={}, timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        f"{method} {path} is not an endpoint of this gateway"
    )


def test_an_openai_client_without_v1_in_its_base_url_is_told_to_add_it(gateway: Served) -> None:
    with openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi"}]
            )
        assert f"POST /v1/chat/completions is ({UNDER_V1})" in caught.value.message


def test_an_anthropic_client_with_v1_in_its_base_url_is_told_to_drop_it(gateway: Served) -> None:
    with anthropic.Anthropic(
        base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0
    ) as client:
        with pytest.raises(anthropic.NotFoundError) as caught:
            client.messages.create(
                model="auto", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            )
        error = caught.value.body["error"]  # type: ignore[index]
        assert error["type"] == "not_found_error"
        assert f"POST /v1/messages is ({V1_ONCE})" in error["message"]
