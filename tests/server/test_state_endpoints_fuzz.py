"""Whatever a client sends to the endpoints that keep state — stored responses,
conversations, files, batches, feedback — and to the read endpoints (models, key,
dashboard data), with any method, id, query string or body (JSON, not JSON, multipart),
`llmroute serve` answers with a success or a 4xx in OpenAI's error format: never a 500
or a traceback. The ids include real ones (a kept response, a conversation, a file, a
batch), so requests get past the lookups. A real gateway on 127.0.0.1 with a client
key; the state in memory, then in Redis; a bounded number of requests."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_upstream import fake_upstream
from gateway_proc import Served, serve_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_service import REDIS_URL, delete_namespace

KEY = "sk-fuzz-0123456789"
REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small, price: {input: 1, output: 1}}
  embed: {provider: fake, model: up-embed, kind: embedding}
routes:
  - {name: chitchat, examples: ["hi there!", "how are you today?"], target: small}
default: {target: small}
stored_responses: %(store)s
batches: %(store)s
auth:
  keys:
    - {name: fuzz, sha256: "%(sha)s", admin: true, budget: {usd: 100, period: day}}
"""

BATCH_LINE = (
    b'{"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", '
    b'"body": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}}\n'
)
_ANY_ID = ["x", "resp_x", "conv_x", "file-x", "batch_x", "..", "%2e%2e", "a" * 600, "%00", "ü"]
_PATHS = [
    "/v1/responses/{0}",
    "/v1/responses/{0}/input_items",
    "/v1/responses/{0}/cancel",
    "/v1/responses/{0}/{1}",
    "/v1/conversations",
    "/v1/conversations/{0}",
    "/v1/conversations/{0}/items",
    "/v1/conversations/{0}/items/{1}",
    "/v1/files",
    "/v1/files/{0}",
    "/v1/files/{0}/content",
    "/v1/batches",
    "/v1/batches/{0}",
    "/v1/batches/{0}/cancel",
    "/v1/batches/{0}/{1}",
    "/v1/feedback",
    "/v1/models",
    "/v1/models/{0}",
    "/v1/key",
    "/dashboard/data",
]
_FIELDS = [
    "model", "input", "items", "metadata", "limit", "after", "order", "include", "id",
    "purpose", "file", "endpoint", "input_file_id", "completion_window", "decision_id",
    "rating", "score", "comment", "role", "content", "type", "text", "custom_id", "url",
    "body", "method", "previous_response_id", "conversation", "store", "background",
]  # fmt: skip
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        ["", "auto", "small", "24h", "batch", "user", "message", "/v1/chat/completions", "a" * 3000]
    ),
    st.text(max_size=8),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_FIELDS), inner, max_size=4)
    ),
    max_leaves=20,
)
_query = st.dictionaries(
    st.sampled_from(["limit", "after", "order", "include", "include[]", "since", "purpose"]),
    st.one_of(
        st.sampled_from(
            ["", "0", "-1", "1", "1h", "desc", "asc", "nan", "1e400", "9" * 30, "²", "１"]
        ),
        st.text(max_size=6),
    ),
    max_size=3,
)
_raw = st.sampled_from(
    [
        b"",
        b"{",
        b"null",
        b"[]",
        b'"x"',
        b"1",
        b"\xff\xfe",
        b'{"limit": NaN}',
        b'{"model": Infinity}',
    ]
)
_multipart = st.fixed_dictionaries(
    {
        "field": st.sampled_from(["file", "x"]),
        "name": st.sampled_from(["a.jsonl", "", "x" * 300]),
        "data": st.sampled_from([b"", b"{}\n", b"\xff", b"[1]\n", BATCH_LINE]),
        "purpose": st.sampled_from(["batch", "", "assistants"]),
    }
)
_bodies = st.one_of(
    st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=6).map(lambda b: ("json", b)),
    _raw.map(lambda b: ("raw", b)),
    _multipart.map(lambda b: ("multipart", b)),
)


@pytest.fixture(scope="module", params=["memory", "redis"])
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, Served]]:
    """A gateway keeping its responses, conversations, files and batches in memory, then
    in Redis (a namespace of its own, deleted afterwards)."""
    store = "{}"
    namespace = f"llmroute-test-{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        request.getfixturevalue("_redis_available")
        store = f'{{url: "{REDIS_URL}", namespace: {namespace}}}'
    tmp = tmp_path_factory.mktemp("state-fuzz")
    with fake_upstream() as up:
        sha = hashlib.sha256(KEY.encode()).hexdigest()
        text = REGISTRY % {"url": up.url, "sha": sha, "store": store}
        with (
            serve_text(text, tmp, env={"LLMROUTE_TELEMETRY_URL": "off"}) as served,
            httpx.Client(
                base_url=served.url, timeout=20, headers={"authorization": f"Bearer {KEY}"}
            ) as http,
        ):
            yield http, served
    if request.param == "redis":
        delete_namespace(namespace)


@pytest.fixture(scope="module")
def real_ids(client: tuple[httpx.Client, Served]) -> list[str]:
    """A kept response, a conversation, an uploaded file and a batch of it."""
    http, _ = client
    response = http.post("/v1/responses", json={"model": "auto", "input": "hi"}).json()
    conversation = http.post("/v1/conversations", json={}).json()
    upload = http.post(
        "/v1/files", files={"file": ("b.jsonl", BATCH_LINE)}, data={"purpose": "batch"}
    ).json()
    batch = http.post(
        "/v1/batches",
        json={
            "input_file_id": upload["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    ).json()
    return [response["id"], conversation["id"], upload["id"], batch["id"]]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PUT"])
@pytest.mark.parametrize("path", _PATHS)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ids=st.lists(st.integers(min_value=0, max_value=len(_ANY_ID) + 3), min_size=2, max_size=2),
    query=_query,
    body=_bodies,
)
def test_no_request_to_a_state_endpoint_is_a_500(
    client: tuple[httpx.Client, Served],
    real_ids: list[str],
    path: str,
    method: str,
    ids: list[int],
    query: dict[str, str],
    body: tuple[str, Any],
) -> None:
    http, _ = client
    known = real_ids + _ANY_ID
    url = path.format(*(known[i] for i in ids))
    sent: dict[str, Any] = {"params": query}
    kind, payload = body
    if method in ("POST", "PUT"):
        if kind == "json":
            sent["json"] = payload
        elif kind == "raw":
            sent["content"] = payload
        else:
            sent["files"] = {payload["field"]: (payload["name"], payload["data"])}
            sent["data"] = {"purpose": payload["purpose"]}
    response = http.request(method, url, **sent)
    what = (method, url, query, body, response.status_code, response.text[:300])
    assert response.status_code < 500 or response.status_code == 503, what
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and "Traceback" not in error["message"], what


def test_digits_other_than_ascii_are_a_400_not_a_500(client: tuple[httpx.Client, Served]) -> None:
    """``"²".isdigit()`` is true but ``int("²")`` raises: a files or batches list with
    ``limit=²``, or an upload whose form says ``expires_after[seconds]=²``, was a 500.
    Full-width and Arabic-Indic digits (which `int` reads) are refused alike: the
    parameters are ASCII numbers, as OpenAI takes them."""
    http, _ = client
    for limit in ("²", "１", "٣"):
        for path in ("/v1/files", "/v1/batches"):
            response = http.get(path, params={"limit": limit})
            assert response.status_code == 400, (path, limit, response.text[:300])
            assert response.json()["error"]["param"] == "limit"
    for seconds in ("²", "３６００"):
        response = http.post(
            "/v1/files",
            files={"file": ("b.jsonl", BATCH_LINE)},
            data={
                "purpose": "batch",
                "expires_after[anchor]": "created_at",
                "expires_after[seconds]": seconds,
            },
        )
        assert response.status_code == 400, (seconds, response.text[:300])
        assert response.json()["error"]["param"] == "expires_after"
    kept = http.post(
        "/v1/files",
        files={"file": ("b.jsonl", BATCH_LINE)},
        data={
            "purpose": "batch",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "3600",
        },
    )
    assert kept.status_code == 200, kept.text[:300]


def test_the_fuzzed_gateway_logged_no_traceback(
    client: tuple[httpx.Client, Served], real_ids: list[str]
) -> None:
    """Runs after the fuzz (same module): nothing it sent made the gateway log a
    traceback, and the key never appears in the log."""
    _, served = client
    text = served.log_text()
    assert "Traceback" not in text
    assert KEY not in text
