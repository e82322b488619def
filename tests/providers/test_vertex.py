"""`VertexProvider` against a fake Vertex AI and a fake Google token endpoint on
127.0.0.1 (real HTTP): the URL and body Vertex takes, tokens from a service account key
(signed JWT, checked by the fake) renewed before they expire and once on a 401, a
token from the environment, and Google's errors mapped like every provider's."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.auth")

from fake_vertex import PROJECT, REGION, FakeVertex, fake_vertex, without_metadata_server

from llmroute import sse
from llmroute.errors import (
    ConfigError,
    ContextWindowExceeded,
    ProviderError,
    ProviderMisconfigured,
    ProviderTimeout,
    RateLimited,
    UpstreamRejected,
)
from llmroute.providers._http import withhold
from llmroute.providers.base import Timeouts
from llmroute.providers.build import build_http
from llmroute.providers.google_auth import FAILED_REFRESH_HOLD_S, AdcTokens
from llmroute.providers.vertex import VertexProvider
from llmroute.registry.schema import Provider
from llmroute.sse import chunk_of
from llmroute.untrusted_json import loads

TIMEOUTS = Timeouts(connect_s=2.0, total_s=10.0)
CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}
MODEL = "claude-sonnet-4-5@20250929"


@pytest.fixture(scope="module", autouse=True)
def _no_metadata_server() -> Iterator[None]:
    with without_metadata_server():
        yield


@pytest.fixture
def fake() -> Iterator[FakeVertex]:
    with fake_vertex() as server:
        yield server


class Clock:
    """Seconds since the epoch, moved on by the test."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        import time

        return time.time() + self.skew


def spec(fake: FakeVertex, **more: Any) -> Provider:
    return Provider(kind="vertex", base_url=fake.base_url, **more)


@pytest.fixture(autouse=True)
def _credentials(fake: FakeVertex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Application Default Credentials: a service account whose token_uri is the fake."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(fake.credentials_file(tmp_path)))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))


def adc(fake: FakeVertex, clock: Clock | None = None) -> VertexProvider:
    tokens = AdcTokens("vertex", clock=clock or Clock())
    return VertexProvider("vertex", spec(fake), environ={}, tokens=tokens)


def run(provider: VertexProvider, coro: Any) -> Any:
    async def go() -> Any:
        try:
            return await coro
        finally:
            await provider.aclose()

    return asyncio.run(go())


async def collect(provider: VertexProvider, model: str, body: dict[str, Any]) -> list[Any]:
    events = [e async for e in provider.stream(model, body, timeouts=TIMEOUTS)]
    return [json.loads(e[6:]) for e in events if e != b"data: [DONE]\n\n"]


def test_a_chat_goes_to_raw_predict_of_the_model_with_vertex_s_body(
    fake: FakeVertex, tmp_path: Path
) -> None:
    provider = adc(fake)
    answer = run(provider, provider.complete(MODEL, CHAT, timeouts=TIMEOUTS))
    assert answer["choices"][0]["message"]["content"] == "echo: hello"
    assert answer["usage"]["completion_tokens"] == 7
    sent = fake.predicted[-1]
    assert (sent.project, sent.region, sent.model, sent.method) == (
        PROJECT,
        REGION,
        MODEL,
        "rawPredict",
    )
    assert sent.token == fake.issued[0]
    assert "model" not in sent.body and sent.body["anthropic_version"] == "vertex-2023-10-16"
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]}
    ]


def test_a_chat_clients_inference_geo_is_not_sent_to_vertex(fake: FakeVertex) -> None:
    """Anthropic's data residency is its own API's field: Vertex AI refuses fields it
    does not know (the region is in the URL)."""
    provider = adc(fake)
    run(provider, provider.complete(MODEL, {**CHAT, "inference_geo": "us"}, timeouts=TIMEOUTS))
    assert "inference_geo" not in fake.predicted[-1].body
    provider = adc(fake)
    run(provider, collect(provider, MODEL, {**CHAT, "inference_geo": "us"}))
    assert "inference_geo" not in fake.predicted[-1].body


def test_a_stream_goes_to_stream_raw_predict_and_reads_anthropic_s_events(
    fake: FakeVertex, tmp_path: Path
) -> None:
    provider = adc(fake)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    chunks = run(provider, collect(provider, f"{MODEL}?thinking=1", body))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    thought = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
    )
    assert (text, thought) == ("echo: hello", "Let me think.")
    assert chunks[-1]["usage"]["completion_tokens"] == 7
    assert fake.predicted[-1].method == "streamRawPredict"


def test_each_chunk_is_handed_to_the_meter_not_parsed_again(
    fake: FakeVertex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Anthropic's: the stream's meter (`chunk_of`) takes the object each translated
    chunk was written from, and parses none of them back."""
    parses: list[bytes] = []
    monkeypatch.setattr(sse, "loads", lambda text, **kw: parses.append(text) or loads(text, **kw))
    provider = adc(fake)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}

    async def read() -> list[tuple[bytes, dict[str, Any] | None]]:
        return [(e, chunk_of(e)) async for e in provider.stream(MODEL, body, timeouts=TIMEOUTS)]

    events = run(provider, read())
    assert parses == [] and len(events) > 3
    assert [chunk for _, chunk in events[:-1]] == [json.loads(e[6:]) for e, _ in events[:-1]]


def test_an_expiring_token_is_renewed_once_for_many_requests_at_once(
    fake: FakeVertex, tmp_path: Path
) -> None:
    clock = Clock()
    provider = adc(fake, clock)

    async def go() -> list[Any]:
        await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)
        clock.skew = 3600 - 200  # within the margin before the hour's end
        return await asyncio.gather(
            *(provider.complete(MODEL, CHAT, timeouts=TIMEOUTS) for _ in range(20))
        )

    answers = run(provider, go())
    assert len(answers) == 20
    assert fake.issued == ["ya29.fake-1", "ya29.fake-2"]
    assert [p.token for p in fake.predicted] == ["ya29.fake-1"] + ["ya29.fake-2"] * 20


def test_a_fresh_token_is_reused(fake: FakeVertex, tmp_path: Path) -> None:
    provider = adc(fake)

    async def go() -> None:
        for _ in range(3):
            await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)

    run(provider, go())
    assert fake.issued == ["ya29.fake-1"]


def test_a_token_handed_out_with_minutes_left_is_reused(fake: FakeVertex, tmp_path: Path) -> None:
    """Google's metadata server hands out its cached token until 4 minutes before it
    expires (google-auth renews 3m45s before): one with 4.5 minutes left, as it gives
    then, serves the requests that follow rather than each asking for a token again."""
    fake.expires_in = 270
    provider = adc(fake)

    async def go() -> None:
        for _ in range(3):
            await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)

    run(provider, go())
    assert fake.issued == ["ya29.fake-1"]


def test_a_401_renews_the_token_and_sends_once_more(fake: FakeVertex, tmp_path: Path) -> None:
    provider = adc(fake)

    async def go() -> Any:
        await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)
        fake.revoked.add("ya29.fake-1")  # revoked before its expiry
        chat = await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)
        fake.revoked.add("ya29.fake-2")
        stream = await collect(provider, MODEL, {**CHAT, "stream": True})
        return chat, stream

    chat, stream = run(provider, go())
    assert chat["choices"][0]["message"]["content"] == "echo: hello"
    assert stream[-1]["choices"][0]["finish_reason"] == "stop"
    assert fake.issued == ["ya29.fake-1", "ya29.fake-2", "ya29.fake-3"]
    assert [p.token for p in fake.predicted] == [
        "ya29.fake-1",
        "ya29.fake-1",
        "ya29.fake-2",
        "ya29.fake-2",
        "ya29.fake-3",
    ]


def test_a_second_401_is_the_gateway_s_credentials_refused(
    fake: FakeVertex, tmp_path: Path
) -> None:
    provider = adc(fake)
    fake.revoked.update(f"ya29.fake-{n}" for n in range(1, 10))
    with pytest.raises(ProviderMisconfigured) as caught:
        run(provider, provider.complete(MODEL, CHAT, timeouts=TIMEOUTS))
    assert caught.value.status == 401
    assert len(fake.predicted) == 2 and len(fake.issued) == 2
    assert "ya29" not in str(caught.value)


def test_a_token_from_the_environment_is_sent_and_a_401_not_retried(fake: FakeVertex) -> None:
    fake.static_tokens.add("ya29.sidecar-token")
    provider = build_http(
        "vertex", spec(fake, api_key_env="VERTEX_TOKEN"), {"VERTEX_TOKEN": "ya29.sidecar-token"}
    )
    assert isinstance(provider, VertexProvider)
    answer = run(provider, provider.complete(MODEL, CHAT, timeouts=TIMEOUTS))
    assert answer["choices"][0]["message"]["content"] == "echo: hello"
    assert fake.predicted[-1].token == "ya29.sidecar-token" and fake.issued == []
    stale = build_http("vertex", spec(fake, api_key_env="VERTEX_TOKEN"), {"VERTEX_TOKEN": "old"})
    assert isinstance(stale, VertexProvider)
    with pytest.raises(ProviderMisconfigured) as caught:
        run(stale, stale.complete(MODEL, CHAT, timeouts=TIMEOUTS))
    assert caught.value.status == 401 and len(fake.predicted) == 2


def test_a_refused_service_account_is_a_clear_error_without_key_material(
    fake: FakeVertex, tmp_path: Path
) -> None:
    fake.refuse_tokens = True
    provider = adc(fake)
    with pytest.raises(ProviderMisconfigured) as caught:
        run(provider, provider.complete(MODEL, CHAT, timeouts=TIMEOUTS))
    said = str(caught.value)
    assert "Google refused to issue an access token (invalid_grant)" in said
    assert caught.value.status == 401 and fake.predicted == []
    assert "PRIVATE KEY" not in said and "eyJ" not in said  # no key, no signed assertion


@pytest.mark.parametrize("tail", ["\n", "\x01"], ids=["line-break", "control"])
def test_a_google_token_holding_a_control_character_is_a_clear_error_never_shown(
    fake: FakeVertex, tail: str
) -> None:
    """A token no HTTP header carries (Google's credentials handed it out so): checked
    where it is got, as a credential variable is, it is the provider's misconfiguration,
    named, never shown. Each request raised aiohttp's ValueError ("Forbidden control
    character detected in headers"), a bug's 500, and a probe took the token for good."""
    fake.token_tail = tail
    provider = adc(fake)
    asks = (
        lambda: provider.authenticate(timeouts=TIMEOUTS),
        lambda: provider.complete(MODEL, CHAT, timeouts=TIMEOUTS),
    )
    for ask in asks:
        with pytest.raises(ProviderMisconfigured) as caught:
            run(provider, ask())
        said = str(caught.value)
        assert "Google's credentials gave an Authorization that holds a control character" in said
        assert caught.value.code == "google_credentials" and caught.value.status == 401
        assert "ya29" not in said and repr(tail) in said
    assert fake.predicted == []


def test_a_quota_project_no_header_carries_is_named_too(
    fake: FakeVertex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """google-auth sends the quota project (GOOGLE_CLOUD_QUOTA_PROJECT, or the
    credentials file's) as x-goog-user-project: a line break read with it is the
    credentials' misconfiguration too, the header named."""
    monkeypatch.setenv("GOOGLE_CLOUD_QUOTA_PROJECT", f"{PROJECT}\n")
    provider = adc(fake)
    with pytest.raises(ProviderMisconfigured, match="gave an x-goog-user-project that holds"):
        run(provider, provider.complete(MODEL, CHAT, timeouts=TIMEOUTS))
    assert fake.predicted == []


def test_a_refused_refresh_is_the_answer_for_a_few_seconds(fake: FakeVertex) -> None:
    """Broken credentials cost one call to the token endpoint (and one thread) every
    few seconds, not one a request; past the hold, a refresh is tried again."""
    fake.refuse_tokens = True
    clock = Clock()
    provider = adc(fake, clock)

    async def asks(n: int) -> None:
        for _ in range(n):
            with pytest.raises(ProviderMisconfigured, match="invalid_grant"):
                await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)

    async def go() -> None:
        try:
            await asks(5)
            assert fake.token_asks == 1
            clock.skew += FAILED_REFRESH_HOLD_S + 1
            fake.refuse_tokens = False
            answer = await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)
            assert answer["choices"] and fake.token_asks == 2
        finally:
            await provider.aclose()

    asyncio.run(go())


def test_requests_joining_one_failed_refresh_each_get_their_own_error(fake: FakeVertex) -> None:
    """Requests waiting on the same refresh get one raised object each, as those failed by
    a held failure do: the SDK names each call's decision on its error (`decision_id`),
    and a shared object kept the first call's, so the second reported the first's row."""
    fake.refuse_tokens = True
    provider = adc(fake)

    async def one() -> BaseException:
        with pytest.raises(ProviderMisconfigured, match="invalid_grant") as caught:
            await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)
        return caught.value

    async def go() -> list[BaseException]:
        try:
            return list(await asyncio.gather(*(one() for _ in range(3))))
        finally:
            await provider.aclose()

    errors = asyncio.run(go())
    assert fake.token_asks == 1  # they did join one refresh
    assert len({id(e) for e in errors}) == 3


def test_a_token_still_valid_is_sent_while_its_renewal_fails(
    fake: FakeVertex, caplog: pytest.LogCaptureFixture
) -> None:
    """A refresh that fails within the margin before the token ends (the token endpoint
    down a moment) leaves the token in hand, which Google still takes: the requests go
    on with it, not fail for the hold; the refresh is tried again after the hold."""
    clock = Clock()
    provider = adc(fake, clock)

    async def go() -> None:
        try:
            await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)
            fake.refuse_tokens = True
            clock.skew = 3600 - 200  # within the margin, 200 s before the token ends
            for _ in range(3):
                await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)
            assert fake.token_asks == 2  # one failed renewal, then the hold
            fake.refuse_tokens = False
            clock.skew += FAILED_REFRESH_HOLD_S + 1
            await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)
        finally:
            await provider.aclose()

    asyncio.run(go())
    assert fake.issued == ["ya29.fake-1", "ya29.fake-2"]
    assert [p.token for p in fake.predicted] == ["ya29.fake-1"] * 4 + ["ya29.fake-2"]
    said = [r.getMessage() for r in caplog.records if r.name == "llmroute.providers.google_auth"]
    assert len(said) == 1 and "invalid_grant" in said[0] and "ya29" not in said[0]


def test_a_token_endpoint_that_does_not_answer_in_time_is_a_timeout(fake: FakeVertex) -> None:
    """A request waits for a token no longer than its own time limit; the refresh goes
    on in its thread, and the next request is served by the token it got."""
    fake.token_delay_s = 1.0
    provider = adc(fake)

    async def go() -> Any:
        with pytest.raises(ProviderTimeout, match=r"no Google access token within 0\.2s"):
            await provider.complete(MODEL, CHAT, timeouts=Timeouts(total_s=0.2))
        return await provider.complete(MODEL, CHAT, timeouts=TIMEOUTS)

    answer = run(provider, go())
    assert answer["choices"][0]["message"]["content"] == "echo: hello"
    assert fake.issued == ["ya29.fake-1"]
    assert [p.token for p in fake.predicted] == ["ya29.fake-1"]


def test_a_missing_credentials_file_says_what_to_set(
    fake: FakeVertex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    provider = adc(fake)
    with pytest.raises(ProviderMisconfigured, match="GOOGLE_APPLICATION_CREDENTIALS"):
        run(provider, provider.complete(MODEL, CHAT, timeouts=TIMEOUTS))
    assert fake.predicted == []


def test_without_a_token_variable_the_token_comes_from_adc(fake: FakeVertex) -> None:
    provider = build_http("vertex", spec(fake), {})
    assert isinstance(provider, VertexProvider)
    run(provider, provider.complete(MODEL, CHAT, timeouts=TIMEOUTS))
    assert fake.predicted[-1].token == "ya29.fake-1"


@pytest.mark.parametrize(
    ("fault", "error", "status", "said"),
    [
        ("gstatus=429", RateLimited, 429, "Quota exceeded"),
        ("gstatus=400", ContextWindowExceeded, 400, "context window"),
        ("context=1", ContextWindowExceeded, 400, "prompt is too long"),
        ("gstatus=403", ProviderMisconfigured, 403, "roles/aiplatform.user"),
        ("gstatus=404", ProviderMisconfigured, 404, "not found"),
        ("gstatus=503", ProviderError, 503, "HTTP 503"),
        ("status=529", ProviderError, 529, "overloaded"),
    ],
)
def test_google_s_and_anthropic_s_errors_map_as_for_other_providers(
    fake: FakeVertex,
    tmp_path: Path,
    fault: str,
    error: type[ProviderError],
    status: int,
    said: str,
) -> None:
    provider = adc(fake)
    with pytest.raises(error) as caught:
        run(provider, provider.complete(f"{MODEL}?{fault}", CHAT, timeouts=TIMEOUTS))
    assert type(caught.value) is error
    assert caught.value.status == status and said in caught.value.message
    assert len(fake.predicted) == 1  # none is sent twice by the provider
    assert caught.value.retryable == (error is not ContextWindowExceeded)


def test_google_s_status_is_the_error_code(fake: FakeVertex, tmp_path: Path) -> None:
    provider = adc(fake)
    with pytest.raises(RateLimited) as caught:
        run(provider, provider.complete(f"{MODEL}?gstatus=429", CHAT, timeouts=TIMEOUTS))
    assert caught.value.code == "RESOURCE_EXHAUSTED"


def test_a_project_without_billing_refuses_the_gateway_saying_so(
    fake: FakeVertex, tmp_path: Path
) -> None:
    """Vertex's 403 ``PERMISSION_DENIED`` whose reason is ``BILLING_DISABLED``: the
    gateway's account (to the next deployment or model at once), its attempt saying the
    account cannot be billed and to link a billing account, streamed or not; it said to
    check the account's role and Model Garden. Google's message (it names the project)
    is not repeated."""
    provider = adc(fake)
    model = f"{MODEL}?billing=1"
    with pytest.raises(ProviderMisconfigured) as said:
        run(provider, provider.complete(model, CHAT, timeouts=TIMEOUTS))
    provider = adc(fake)
    with pytest.raises(ProviderMisconfigured) as streamed:
        run(provider, collect(provider, model, {**CHAT, "stream": True}))
    for error in (said.value, streamed.value):
        assert error.status == 403 and error.code == "BILLING_DISABLED" and error.retryable
        assert "cannot be billed" in error.message and "billing account" in error.message
        assert "roles/aiplatform.user" not in error.message
        assert "123456789012" not in error.message


@pytest.mark.parametrize(
    ("fault", "hint"),
    [("billing=1", "active billing account"), ("gstatus=404", "its @version")],
)
def test_what_to_check_stays_in_the_attempt_the_decision_log_keeps(
    fake: FakeVertex, tmp_path: Path, fault: str, hint: str
) -> None:
    """The attempt's outline (what the decision log keeps with ``telemetry.prompts``
    other than ``full``, without Google's words) still says why the gateway was refused
    and what to check in Google Cloud, and its request id: the hint follows Google's
    message, which the outline leaves out, and the request id."""
    provider = adc(fake)
    with pytest.raises(ProviderMisconfigured) as said:
        run(provider, provider.complete(f"{MODEL}?{fault}", CHAT, timeouts=TIMEOUTS))
    outline = said.value.outline()
    assert hint in said.value.message and hint in outline
    assert outline.count("(") == outline.count(")")
    noted = "[upstream request req_fake]" in said.value.message  # the fake's, for billing
    assert noted is ("[upstream request req_fake]" in outline)  # for Google's support
    if fault == "billing=1":
        assert "no valid payment method" in outline
    else:
        assert "no such model or path" in outline and "code NOT_FOUND" in outline


def test_a_quota_429_waits_as_google_s_retry_info_says(fake: FakeVertex, tmp_path: Path) -> None:
    """A 429 ``RESOURCE_EXHAUSTED`` without ``Retry-After`` but with Google's
    ``RetryInfo`` (``"retryDelay": "37s"``) waits that long (`retries.max_retry_after_s`
    decides whether it is waited out); it had no wait."""
    provider = adc(fake)
    with pytest.raises(RateLimited) as caught:
        run(
            provider,
            provider.complete(f"{MODEL}?gstatus=429&retry_delay=37", CHAT, timeouts=TIMEOUTS),
        )
    assert caught.value.retry_after_s == 37.0 and caught.value.code == "RESOURCE_EXHAUSTED"


def test_a_stream_refused_is_mapped_before_any_event(fake: FakeVertex, tmp_path: Path) -> None:
    provider = adc(fake)
    with pytest.raises(ProviderMisconfigured, match="Model Garden"):
        run(provider, collect(provider, f"{MODEL}?gstatus=404", {**CHAT, "stream": True}))


def test_vertex_needs_the_extra_only_without_a_token_variable(
    fake: FakeVertex, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real = builtins.__import__

    def no_google(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("google.auth"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_google)
    with pytest.raises(ConfigError, match=r"pip install 'llmroute\[vertex\]'"):
        build_http("vertex", spec(fake), {})
    assert isinstance(build_http("vertex", spec(fake, api_key_env="T"), {}), VertexProvider)


def test_a_google_token_echoed_by_the_upstream_is_cut_from_its_message(
    fake: FakeVertex, tmp_path: Path
) -> None:
    """The access tokens Application Default Credentials issue were not withheld (only
    a key from the environment was): an upstream repeating the token it got gave it to
    the client and the logs."""
    provider = adc(fake)
    with pytest.raises(UpstreamRejected) as caught:
        run(provider, provider.complete(f"{MODEL}?echo_token=1", CHAT, timeouts=TIMEOUTS))
    assert fake.issued == ["ya29.fake-1"]
    assert "ya29" not in caught.value.message and "[redacted]" in caught.value.message


def test_a_renewed_token_s_predecessor_is_let_go_when_no_request_holds_it(
    fake: FakeVertex, tmp_path: Path
) -> None:
    """Tokens are withheld as a transport's keys are: while something sends them. An
    hourly token withheld for good would grow the pattern every message is scanned with."""
    from llmroute.providers import _http

    clock = Clock()
    provider = adc(fake, clock)

    async def twice(vertex: VertexProvider) -> None:
        await vertex.complete(MODEL, CHAT, timeouts=TIMEOUTS)
        clock.skew = 3600.0  # the first token is within its renewal margin
        await vertex.complete(MODEL, CHAT, timeouts=TIMEOUTS)

    run(provider, twice(provider))
    gc.collect()
    withhold()  # applies what finalizers gave back
    assert fake.issued == ["ya29.fake-1", "ya29.fake-2"]
    assert "ya29.fake-2" in _http._SENT_SECRETS
    assert "ya29.fake-1" not in _http._SENT_SECRETS
    del provider
    gc.collect()
    withhold()
    assert "ya29.fake-2" not in _http._SENT_SECRETS
