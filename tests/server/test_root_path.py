"""`llmroute serve --root-path /llm` behind a proxy that passes the path prefix on
(``proxy_pass http://gateway;`` without the trailing ``/``, an ingress without a
rewrite): the gateway is asked ``/llm/v1/...`` and serves it as ``/v1/...``, and still
serves paths without the prefix (a kubelet's health check). Every check that reads the
path reads it without the prefix: the paths answered to anyone, the admin paths where
Basic credentials count, the API paths a key's limits count, the browser checks; a path
with the prefix twice, or a ``..`` after it, is not served."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from batch_runs import batch_ended
from fake_upstream import FakeUpstream
from gateway_proc import ECHO_ONLY, Served, serve_refused, serve_text, wait_for
from prefix_proxy import prefix_proxy
from rate_windows import clear_of_a_minute_end

from llmroute.server.app import create_app
from llmroute.server.root_path import GATEWAY_SEGMENTS, STRIPPED, paths_as_asked
from llmroute.server.settings import ServeSettings

TEAM = "team-key-0123456789abcdef"
OPS = "ops-key-0123456789abcdef"
LIMITED = "limited-key-0123456789abcdef"
KEYS = {
    "LLMROUTE_TEST_TEAM_KEY": TEAM,
    "LLMROUTE_TEST_OPS_KEY": OPS,
    "LLMROUTE_TEST_LIMITED_KEY": LIMITED,
}

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  vectors: {provider: fake, model: up-embed, kind: embedding}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
batches: {}
auth:
  keys:
    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY}
    - {name: ops, key_env: LLMROUTE_TEST_OPS_KEY, admin: true}
    - {name: limited, key_env: LLMROUTE_TEST_LIMITED_KEY, rpm: 2}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("root_path")
    env = {**KEYS, "LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp / 'decisions.db'}"}
    text = REGISTRY % {"url": upstream.url}
    with serve_text(text, tmp, ["--root-path", "/llm"], env) as served:
        yield served


@pytest.fixture(scope="module")
def proxied(gateway: Served) -> Iterator[str]:
    """The proxy that keeps the prefix: ``http://127.0.0.1:PORT/llm``."""
    with prefix_proxy(gateway.url, keep=True) as url:
        yield url


def _asked(gateway: Served, method: str, path: str) -> bool:
    """Whether the access log shows `path` asked of the gateway itself, whole."""
    return f'"{method} {path} HTTP/1.1"' in gateway.log_text()


def test_the_openai_client_chats_and_streams_through_a_proxy_that_keeps_the_prefix(
    gateway: Served, proxied: str
) -> None:
    with openai.OpenAI(base_url=f"{proxied}/v1", api_key=TEAM, max_retries=0) as client:
        answer = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hello there, proxy"}]
        )
        assert "hello there, proxy" in (answer.choices[0].message.content or "")
        stream = client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "how are you today, stream"}],
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert "how are you today, stream" in text
        assert "auto" in {model.id for model in client.models.list()}
    # the proxy passed the prefix on: the gateway was asked the path whole
    wait_for("the access lines", lambda: _asked(gateway, "GET", "/llm/v1/models"), 10)
    assert _asked(gateway, "POST", "/llm/v1/chat/completions"), gateway.log_text()


def test_paths_without_the_prefix_are_served_too(gateway: Served) -> None:
    for path in ("/health", "/ready", "/llm/health", "/llm/ready"):
        assert httpx.get(f"{gateway.url}{path}", timeout=10).status_code == 200, path
    bearer = {"Authorization": f"Bearer {TEAM}"}
    for path in ("/v1/models", "/llm/v1/models"):
        answer = httpx.get(f"{gateway.url}{path}", headers=bearer, timeout=10)
        assert answer.status_code == 200, (path, answer.text)
        assert "auto" in {m["id"] for m in answer.json()["data"]}
    # nothing else: a prefix not followed by '/' is not the prefix
    assert httpx.get(f"{gateway.url}/llmx/v1/models", headers=bearer, timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "said"),
    [
        ("POST", "/v1/chat/completions/", "; POST {p}/v1/chat/completions is (no trailing /)"),
        ("GET", "/v1/models/", "; GET {p}/v1/models is (no trailing /)"),
        ("POST", "/v1/responses/", "; POST {p}/v1/responses is (no trailing /)"),
        ("POST", "/v1/vector_stores", ""),
    ],
)
def test_a_404_names_the_path_the_client_called_with_the_prefix(
    gateway: Served, proxied: str, method: str, path: str, said: str
) -> None:
    """Through the proxy the client called /llm/...: the 404 names that path, and the
    path to call instead with the prefix (without it, the proxy's own 404). Asked of the
    gateway without the prefix, they are named without it."""
    bearer = {"Authorization": f"Bearer {TEAM}"}
    for base, prefix in ((proxied, "/llm"), (gateway.url, "")):
        answer = httpx.request(method, f"{base}{path}", headers=bearer, json={}, timeout=10)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["message"] == (
            f"{method} {prefix}{path} is not an endpoint of this gateway" + said.format(p=prefix)
        )
    wrong = httpx.get(f"{proxied}/v1/chat/completions", headers=bearer, timeout=10)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["message"].startswith("GET /llm/v1/chat/completions: ")


_HI = [{"role": "user", "content": "hello there"}]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "hint"),
    [
        ("GET", "/v1/models/nope", None, 404, "GET {p}/v1/models lists what you may use"),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "nope", "messages": _HI},
            404,
            "(GET {p}/v1/models lists them)",
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "vectors", "messages": _HI},
            404,
            "use POST {p}/v1/embeddings",
        ),
        (
            "POST",
            "/v1/messages",
            {"model": "nope", "max_tokens": 5, "messages": _HI},
            404,
            "(GET {p}/v1/models lists them)",
        ),
        ("POST", "/v1/batches/batch_x/stop", {}, 404, "POST {p}/v1/batches/batch_x/stop is"),
    ],
)
def test_every_hint_names_the_path_the_client_calls_with_the_prefix(
    gateway: Served,
    proxied: str,
    method: str,
    path: str,
    body: dict[str, object] | None,
    status: int,
    hint: str,
) -> None:
    """A message naming a call to make (its own path, the models list, the embeddings
    endpoint) names it as the client reaches it: with the prefix through the proxy,
    without it asked directly."""
    bearer = {"Authorization": f"Bearer {TEAM}", "anthropic-version": "2023-06-01"}
    for base, prefix in ((proxied, "/llm"), (gateway.url, "")):
        answer = httpx.request(method, f"{base}{path}", headers=bearer, json=body, timeout=10)
        assert answer.status_code == status, answer.text
        assert hint.format(p=prefix) in answer.json()["error"]["message"], answer.text


def test_the_key_and_dashboard_hints_name_the_path_with_the_prefix(proxied: str) -> None:
    def said(path: str, **sent: object) -> str:
        answer = httpx.get(f"{proxied}{path}", timeout=10, **sent)  # type: ignore[arg-type]
        message: str = answer.json()["error"]["message"]
        return message

    assert "/llm/dashboard needs an admin key" in said("/dashboard")
    assert "may not read /llm/metrics" in said("/metrics", auth=("me", TEAM))
    assert "count only on /llm/dashboard and /llm/metrics" in said("/v1/models", auth=("a", OPS))
    assert (
        said("/dashboard/nope.js", auth=("a", OPS))
        == "no such dashboard file: /llm/dashboard/nope.js"
    )


def _linked(page: httpx.Response) -> list[str]:
    """The URLs the page asks for: its stylesheet, its script and its data."""
    found = re.findall(r'(?:href|src|content)="([^"]*(?:app\.css|app\.js|data))"', page.text)
    assert len(found) == 3, found
    return [str(page.url.join(link)) for link in found]


@pytest.mark.parametrize("page", ["dashboard", "dashboard/"])
def test_the_dashboard_loads_its_data_under_the_prefix(
    gateway: Served, proxied: str, page: str
) -> None:
    login = ("admin", OPS)  # a browser's Basic login: any user name, the key as password
    with openai.OpenAI(base_url=f"{proxied}/v1", api_key=TEAM, max_retries=0) as client:
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": f"hello there, {page}"}]
        )
    answer = httpx.get(f"{proxied}/{page}", auth=login, timeout=10)
    assert answer.status_code == 200, answer.text
    for url in _linked(answer):
        assert url.startswith(f"{proxied}/dashboard/"), url
        fetched = httpx.get(url, params={"since": "15m"}, auth=login, timeout=10)
        assert fetched.status_code == 200, (url, fetched.text)

    def logged() -> bool:
        data = httpx.get(f"{proxied}/dashboard/data", params={"since": "15m"}, auth=login)
        assert data.status_code == 200, data.text
        return bool(data.json()["summary"]["requests"])

    wait_for("a logged decision on the dashboard under the prefix", logged, 20, gateway.log)
    assert _asked(gateway, "GET", "/llm/dashboard/data?since=15m"), gateway.log_text()


def _status(gateway: Served, path: str, headers: dict[str, str]) -> int:
    """The status of GET `path` asked exactly as written (httpx would resolve ``..``)."""
    where = urlsplit(gateway.url)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_paths_answered_to_anyone_and_the_admin_paths_are_read_without_the_prefix(
    gateway: Served,
) -> None:
    url = gateway.url
    for path in ("/llm/health", "/llm/ready"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 200, path
    assert httpx.get(f"{url}/llm/favicon.ico", timeout=10).status_code == 404  # not 401
    # the API: a key needed, as a Bearer; a browser's Basic login does not count there
    refused = httpx.get(f"{url}/llm/v1/models", timeout=10)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    basic = httpx.get(f"{url}/llm/v1/models", auth=("admin", OPS), timeout=10)
    assert basic.status_code == 401, basic.text
    assert "Basic credentials count only on /llm/dashboard" in basic.json()["error"]["message"]
    # the admin paths: Basic counts, an admin key is needed
    for path in ("/llm/dashboard", "/llm/metrics"):
        asked = httpx.get(f"{url}{path}", timeout=10)
        assert asked.status_code == 401, (path, asked.text)
        assert asked.headers["www-authenticate"] == 'Basic realm="llmroute"'
        assert httpx.get(f"{url}{path}", auth=("me", TEAM), timeout=10).status_code == 403
        assert httpx.get(f"{url}{path}", auth=("me", OPS), timeout=10).status_code == 200
    # what the checks saw is what the routes match: no second prefix, no '..', taken off
    team = {"Authorization": f"Bearer {TEAM}"}
    for path in (
        "/llm/llm/dashboard",
        "/llm/llm/metrics",
        "/llm/llm/v1/models",
        "/llm/../dashboard",
        "/llm/%2E%2E/dashboard",
        "/llm/../llm/dashboard",
    ):
        assert _status(gateway, path, team) == 404, path


def test_a_keys_limits_count_under_the_prefix(gateway: Served) -> None:
    limited = {"Authorization": f"Bearer {LIMITED}"}
    clear_of_a_minute_end()
    for path in ("/v1/models", "/llm/v1/models"):  # rpm: 2
        assert httpx.get(f"{gateway.url}{path}", headers=limited, timeout=10).status_code == 200
    third = httpx.get(f"{gateway.url}/llm/v1/models", headers=limited, timeout=10)
    assert third.status_code == 429, third.text


def test_the_browser_checks_hold_under_the_prefix(gateway: Served) -> None:
    form = httpx.post(
        f"{gateway.url}/llm/v1/chat/completions",
        content=b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}',
        headers={
            "content-type": "text/plain",
            "origin": "https://elsewhere.example",
            "sec-fetch-site": "cross-site",
            "sec-fetch-mode": "no-cors",
        },
        timeout=10,
    )
    assert form.status_code == 403 and form.json()["error"]["code"] == "cross_origin_forbidden"
    rebound = {"host": "rebound.example:8000", "authorization": f"Bearer {TEAM}"}
    models = httpx.get(f"{gateway.url}/llm/v1/models", headers=rebound, timeout=10)
    assert models.status_code == 400 and models.json()["error"]["code"] == "invalid_host"
    assert httpx.get(f"{gateway.url}/llm/health", headers=rebound, timeout=10).status_code == 200


def test_the_environment_variable_reaches_every_worker(tmp_path: Path) -> None:
    env = {"LLMROUTE_ROOT_PATH": "/llm"}
    with serve_text(ECHO_ONLY, tmp_path, ["--workers", "2"], env) as served:
        for _ in range(4):  # whichever worker answers
            assert httpx.get(f"{served.url}/llm/v1/models", timeout=10).status_code == 200
            assert httpx.get(f"{served.url}/v1/models", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("option", "env"),
    [
        *((["--root-path", value], {}) for value in ("llm", "/llm/", "/", "/llm?x=1", "/l#m")),
        *((["--root-path", value], {}) for value in ("/a//b", "/a/../b", "/l m", "/l%6Dm")),
        *((["--root-path", value], {}) for value in ("/v1", "/dashboard/x", "/health", "/l:m")),
        ([], {"LLMROUTE_ROOT_PATH": "llm/"}),
        (["--root-path", "/v2"], {"LLMROUTE_ROOT_PATH": "/llm"}),
    ],
)
def test_a_malformed_root_path_stops_the_start_with_one_line(
    option: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    """The line names where the value came from: the option, else the variable (a
    reader sent to a command line without --root-path would not find it)."""
    done = serve_refused(ECHO_ONLY, tmp_path, option, env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    given = f"--root-path {option[1]!r}" if option else "$LLMROUTE_ROOT_PATH 'llm/'"
    assert lines[0].startswith(f"error: {given}: "), lines
    assert "give a path such as /llm" in lines[0], lines


def test_no_prefix_can_take_a_path_of_the_gateways_own() -> None:
    """`GATEWAY_SEGMENTS` holds the first segment of every route the gateway serves."""
    app = create_app("registry.yaml", ServeSettings(dashboard=True, root_path="/llm"))
    firsts = {route.path.split("/")[1] for route in app.routes}  # type: ignore[attr-defined]
    assert firsts and firsts <= GATEWAY_SEGMENTS, firsts - GATEWAY_SEGMENTS


def test_the_root_path_goes_to_the_workers_through_the_environment() -> None:
    settings = ServeSettings(root_path="/llm/gw")
    assert settings.to_env()["LLMROUTE_ROOT_PATH"] == "/llm/gw"
    assert ServeSettings.from_env(settings.to_env()) == settings
    assert ServeSettings.from_env({}).root_path is None


@pytest.mark.parametrize("value", ["llm", "/llm/", "/v1", "/a b"])
def test_a_malformed_root_path_variable_is_refused_without_the_cli(value: str) -> None:
    """``uvicorn --factory llmroute.server.app:app_from_env`` reads the variable with no
    CLI to check it: a typo must not start a gateway that strips nothing."""
    with pytest.raises(ValueError, match=r"\$LLMROUTE_ROOT_PATH"):
        ServeSettings.from_env({"LLMROUTE_ROOT_PATH": value})


def test_only_the_calls_a_message_names_get_the_prefix() -> None:
    """A method then one of the gateway's paths: not one already prefixed, not a path
    inside a word, nothing when the request did not come through the prefix."""
    through = {STRIPPED: "/llm"}
    said = "use POST /v1/embeddings (GET /v1/models lists them); GET /llm/v1/models; x/v1/y"
    assert paths_as_asked(said, through) == (
        "use POST /llm/v1/embeddings (GET /llm/v1/models lists them); GET /llm/v1/models; x/v1/y"
    )
    assert paths_as_asked("GET /v1x is not GET /metrics.", through) == (
        "GET /v1x is not GET /llm/metrics."
    )
    assert paths_as_asked(said, {}) == said


def test_a_batch_through_the_prefix_takes_and_answers_openais_lines(
    gateway: Served, proxied: str
) -> None:
    """OpenAI's batch lines name the API's relative path (``"url":
    "/v1/chat/completions"``, the batch's ``endpoint`` too), never the gateway's prefix:
    a file written for OpenAI runs as it is through the prefix. Its answer lines hold
    no path (``id``, ``custom_id``, ``response``, ``error``, as OpenAI's); a hint in an
    error answer names the path the client calls, with the prefix, as a live one's."""
    lines = [
        {
            "custom_id": model,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": _HI},
        }
        for model in ("auto", "nope")
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    with openai.OpenAI(base_url=f"{proxied}/v1", api_key=TEAM, max_retries=0) as client:
        upload = client.files.create(file=("b.jsonl", data), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.endpoint == "/v1/chat/completions"
        batch = batch_ended(client, batch.id, 30)
        assert batch.status == "completed", batch
        assert batch.output_file_id is not None and batch.error_file_id is not None, batch
        answered = [
            json.loads(raw)
            for file_id in (batch.output_file_id, batch.error_file_id)
            for raw in client.files.content(file_id).text.splitlines()
        ]
    by_id = {line["custom_id"]: line for line in answered}
    assert all(set(line) == {"id", "custom_id", "response", "error"} for line in answered)
    assert by_id["auto"]["response"]["status_code"] == 200
    refused = by_id["nope"]["response"]
    assert refused["status_code"] == 404
    assert "(GET /llm/v1/models lists them)" in refused["body"]["error"]["message"], refused
