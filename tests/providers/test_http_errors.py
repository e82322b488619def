"""Upstream error statuses become ProviderErrors whose message carries the upstream's
request id (what its support asks for) and nothing a header could smuggle in."""

from __future__ import annotations

import gc
import json

import pytest

from llmroute.errors import (
    ContentRefused,
    ContextWindowExceeded,
    ProviderError,
    ProviderMisconfigured,
    RateLimited,
    UpstreamRejected,
)
from llmroute.providers import _http
from llmroute.providers._http import (
    error_from_response,
    error_in_answer,
    error_in_event,
    retry_after_of,
    withhold,
)

BODY = json.dumps({"error": {"message": "boom", "type": "server_error"}}).encode()


@pytest.mark.parametrize(
    ("headers", "note"),
    [
        ({"x-request-id": "req_0123456789abcdef0123456789abcdef"}, "req_0123456789abcdef"),
        ({"request-id": "req_011CSHoEeqs5C3K2cjRXf6Zp"}, "req_011CSHoEeqs5C3K2cjRXf6Zp"),
    ],
)
def test_the_upstream_request_id_ends_the_message(headers: dict[str, str], note: str) -> None:
    error = error_from_response("up", 500, headers, BODY)
    assert error.status == 500 and "upstream returned HTTP 500" in str(error)
    assert "[upstream request " + note in str(error)


def test_every_kind_of_error_keeps_it() -> None:
    headers = {"x-request-id": "req_abc", "retry-after": "2"}
    limited = error_from_response("up", 429, headers, BODY)
    assert isinstance(limited, RateLimited) and "[upstream request req_abc]" in str(limited)
    secret = json.dumps({"error": {"message": "bad key sk-abcdefghijklmnop"}}).encode()
    denied = error_from_response("up", 401, headers, secret)
    assert isinstance(denied, ProviderMisconfigured)
    assert "[upstream request req_abc]" in str(denied) and "sk-" not in str(denied)


def _error(message: str, code: str | None = None, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


AZURE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content "
    "management policy. Please modify your prompt and retry."
)
OPENAI = "Invalid prompt: your prompt was flagged as potentially violating our usage policy."


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, _error(AZURE, "content_filter", kind="")),
        (400, _error(OPENAI, "invalid_prompt")),
        (400, _error("Output blocked by content filtering policy")),  # Anthropic
        (422, _error("refused", "content_policy_violation")),
    ],
    ids=["azure", "openai", "anthropic", "code-only"],
)
def test_a_content_filters_refusal_is_content_refused(status: int, body: bytes) -> None:
    error = error_from_response("up", status, {}, body)
    assert isinstance(error, ContentRefused) and isinstance(error, UpstreamRejected)
    assert error.status == status and not error.retryable
    assert "content filter refused the request" in str(error)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, _error("Unsupported parameter: 'max_tokens'", "unsupported_parameter")),
        (401, _error(AZURE, "content_filter")),  # a key problem first, whatever it says
        (500, _error(AZURE, "content_filter")),
        (400, _error("the content of message 2 is empty")),
    ],
)
def test_other_errors_are_not_content_refusals(status: int, body: bytes) -> None:
    assert not isinstance(error_from_response("up", status, {}, body), ContentRefused)


@pytest.mark.parametrize(
    "value", ["", "req id with spaces", "a" * 200, "req_1\nINJECTED log line", "<script>"]
)
def test_a_header_that_is_no_request_id_is_not_repeated(value: str) -> None:
    error = error_from_response("up", 502, {"x-request-id": value}, BODY)
    assert str(error).endswith("upstream returned HTTP 502")


def test_transport_failures_say_what_failed_and_never_where() -> None:
    """A real refused connection and a real hang-up (fake upstream, 127.0.0.1): the
    reason in fixed words and the class name, no URL, host or port; all of it in the
    outline an attempt is logged with (`ProviderError.outline`): what an operator tells
    a refused connection from an unresolved host or an untrusted certificate by."""
    import asyncio
    import socket

    from fake_upstream import FAIL_CLOSE, fake_upstream

    from llmroute.errors import ProviderError
    from llmroute.providers.base import Timeouts
    from llmroute.providers.openai_compat import OpenAICompatProvider
    from llmroute.registry.schema import Provider

    async def error_of(base_url: str, model: str) -> ProviderError:
        provider = OpenAICompatProvider("p", Provider(kind="openai", base_url=base_url))
        body = {"messages": [{"role": "user", "content": "hi"}]}
        try:
            await provider.complete(model, body, timeouts=Timeouts(total_s=5, connect_s=2))
        except ProviderError as exc:
            return exc
        finally:
            await provider.aclose()
        raise AssertionError("no error")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = asyncio.run(error_of(f"http://user:pw@127.0.0.1:{port}/v1", "m"))
    assert refused.message == "upstream request failed: connection refused (ClientConnectorError)"
    with fake_upstream() as upstream:
        closed = asyncio.run(error_of(upstream.url, FAIL_CLOSE))
    assert closed.message == (
        "upstream request failed: the server closed the connection (ServerDisconnectedError)"
    )
    for error in (refused, closed):
        assert "127.0.0.1" not in str(error) and "pw" not in str(error)
        # all the gateway's words: the decision log keeps them whatever telemetry.prompts
        assert error.outline() == error.message


# -- errors inside a 200 --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind", "status"),
    [  # OpenRouter once the model started: 200, the error's code its status
        ({"error": {"code": 502, "message": "Provider returned error"}}, ProviderError, 502),
        # the OpenAI API mid-stream: no code
        ({"error": {"message": "The server had an error", "type": "server_error"}}, None, 502),
        # vLLM in a stream, and its older bare error object
        (
            {"error": {"code": 400, "type": "BadRequestError", "message": "bad"}},
            UpstreamRejected,
            400,
        ),
        ({"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}, None, 400),
        ({"error": {"code": "429", "message": "slow down"}}, RateLimited, 429),
        ({"error": {"code": "context_length_exceeded", "message": "too long"}}, None, 400),
        ({"error": {"code": "content_filter", "message": "no"}}, ContentRefused, 400),
        # the OpenAI API's account out of credit, in a stream: the gateway's account, not
        # a rate limit, with its code, or its type alone (was a plain 502 either way)
        (
            {"error": {"code": "insufficient_quota", "message": "You exceeded your quota"}},
            ProviderMisconfigured,
            429,
        ),
        (
            {"error": {"type": "insufficient_quota", "message": "You exceeded your quota"}},
            ProviderMisconfigured,
            429,
        ),
        ({"error": "the model crashed"}, None, 502),
        # a code Python's isdigit takes but int does not read: no status, an upstream's 502
        ({"error": {"code": "²", "message": "odd"}}, None, 502),
        # a type (the code's stand-in) that is a list or an object: an upstream's 502 (was
        # a TypeError, unhashable, looking it up among the codes: the client's 500)
        ({"error": {"type": ["server_error"], "message": "typed"}}, None, 502),
        ({"error": {"code": {"a": [1]}, "type": {"t": 1}, "message": "nested"}}, None, 502),
        # OpenRouter mid-stream: a chunk that finishes with "error"
        (
            {"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]},
            None,
            502,
        ),
    ],
)
def test_an_error_inside_a_200_is_raised_like_an_error_status(
    data: dict[str, object], kind: type[ProviderError] | None, status: int
) -> None:
    error = error_in_answer("up", data)
    assert error is not None and error.status == status
    if kind is not None:
        assert type(error) is kind
    assert error.retryable == (status >= 500 or status == 429)
    if type(error) in (ProviderError, UpstreamRejected):
        assert f"upstream answered with error {status}" in str(error)
        assert "HTTP" not in str(error)  # it came with a 200
    if status == 400 and "context_length_exceeded" in json.dumps(data):
        assert isinstance(error, ContextWindowExceeded)


@pytest.mark.parametrize(
    "data",
    [
        {"choices": [{"message": {"content": "an error in line 3"}, "finish_reason": "stop"}]},
        {"choices": [], "error": None},
        {"object": "chat.completion", "choices": [{"finish_reason": "length"}]},
        ["error"],
    ],
)
def test_an_answer_is_no_error(data: object) -> None:
    assert error_in_answer("up", data) is None


def test_a_streams_error_event_is_found_whatever_its_field() -> None:
    def event(payload: object, field: str = "data") -> bytes:
        return f"{field}: {json.dumps(payload)}\n\n".encode()

    chunk = {"choices": [{"delta": {"content": 'the "error": field'}, "finish_reason": None}]}
    assert error_in_event("up", event(chunk)) is None  # the word in the text is no error
    assert error_in_event("up", b"data: [DONE]\n\n") is None
    assert error_in_event("up", b"data: {not json error\n\n") is None
    found = error_in_event("up", event({"error": {"message": "gone", "code": 503}}))
    assert found is not None and found.status == 503
    assert str(found).endswith(": gone")  # the server's own word on what went wrong
    midway = error_in_answer("up", {"error": {"message": "upstream overloaded midway"}})
    assert midway is not None and "answered with error 502: upstream overloaded midway" in (
        str(midway)
    )
    llama = error_in_event(
        "up", event({"code": 500, "message": "x", "type": "server_error"}, "error")
    )
    assert llama is not None and llama.status == 500  # llama.cpp server's error field


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "refused the gateway's credentials"),
        (403, "refused the gateway access"),
        (404, "has no such model or path"),
    ],
)
def test_an_upstream_refusing_the_gateway_is_no_fault_of_the_request(
    status: int, hint: str
) -> None:
    """401 / 403 / 404 from an upstream: its key, its access or its model name is wrong
    in the registry, so another deployment or model may serve the request."""
    body = _error("Incorrect API key provided: sk-abc***xyz", "invalid_api_key")
    error = error_from_response("up", status, {}, body)
    assert type(error) is ProviderMisconfigured and error.retryable and error.status == status
    assert hint in str(error) and "sk-abc" not in str(error)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        # Anthropic's answer when the account's credit is spent: a 400
        (
            400,
            json.dumps(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "Your credit balance is too low to access the Anthropic "
                        "API. Please go to Plans & Billing to upgrade or purchase credits.",
                    },
                }
            ).encode(),
        ),
        # OpenAI's: a 429 that no wait ends
        (
            429,
            _error(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
            ),
        ),
    ],
)
def test_an_account_out_of_credit_refuses_the_gateway_not_the_request(
    status: int, body: bytes
) -> None:
    """As a 402 does: the next deployment or model serves at once (the 400 went back to
    the client as its request's fault, never fallen back from; the 429 was retried in
    vain first), and a client left with nothing gets a 502."""
    error = error_from_response("up", status, {}, body)
    assert type(error) is ProviderMisconfigured and error.retryable
    assert "out of credits" in str(error) and error.status == status


def _google(code: int, status: str, message: str, *details: dict[str, object]) -> bytes:
    """Google's error body as its OpenAI-compatible endpoint sends it: a list of one."""
    error = {"code": code, "message": message, "status": status, "details": list(details)}
    return json.dumps([{"error": error}]).encode()


def test_an_account_google_cannot_bill_refuses_the_gateway_saying_so() -> None:
    """Gemini's (and Vertex's) 403 whose ``ErrorInfo`` reason is ``BILLING_DISABLED``, and
    Bedrock's AccessDeniedException for a model sold on AWS Marketplace to an account
    without a valid payment method: the attempt says the account cannot be billed, not
    that access was refused (their messages, which name the account, stay unshown)."""
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "BILLING_DISABLED"}
    google = _google(403, "PERMISSION_DENIED", "Please enable billing on project #1234", info)
    aws = json.dumps(
        {
            "error": {
                "message": "Model access is denied due to INVALID_PAYMENT_INSTRUMENT:A valid "
                "payment instrument must be provided.. Your AWS Marketplace subscription for "
                "this model cannot be completed at this time.",
                "code": "AccessDeniedException",
            }
        }
    ).encode()
    for body, code in ((google, "BILLING_DISABLED"), (aws, "AccessDeniedException")):
        error = error_from_response("up", 403, {}, body)
        assert type(error) is ProviderMisconfigured and error.retryable and error.code == code
        assert "cannot be billed" in error.message and "#1234" not in error.message
    plain = _google(403, "PERMISSION_DENIED", "Permission denied on resource project p")
    assert "refused the gateway access" in error_from_response("up", 403, {}, plain).message


def test_a_google_quota_429_waits_as_its_retry_info_says() -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}
    body = _google(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", retry)
    error = error_from_response("up", 429, {}, body)
    assert isinstance(error, RateLimited) and error.retry_after_s == 12.5
    said = error_from_response("up", 429, {"retry-after": "3"}, body)  # the header first
    assert said.retry_after_s == 3.0


def test_openrouters_moderation_403_is_the_requests_content() -> None:
    body = _error("Your chosen model requires moderation and your input was flagged for hate")
    assert isinstance(error_from_response("up", 403, {}, body), ContentRefused)


def test_how_long_to_wait_reads_every_header_openai_sends() -> None:
    """``retry-after-ms`` before ``Retry-After``; without either, a 429 waits for the
    window of the limit OpenAI says is used up (a daily token limit: hours, which sends
    the request to the fallback at once instead of retrying in vain)."""
    assert retry_after_of({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_of({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    spent = {
        "x-ratelimit-remaining-requests": "12",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6h0m0s",
    }
    assert retry_after_of(spent) == 6 * 3600.0
    assert retry_after_of({**spent, "x-ratelimit-remaining-requests": "0"}) == 6 * 3600.0
    assert retry_after_of({**spent, "x-ratelimit-reset-tokens": "20ms"}) == 0.02
    assert retry_after_of({**spent, "x-ratelimit-reset-tokens": "tomorrow"}) is None
    assert retry_after_of(spent, limited=False) is None  # a 5xx: not about the limits
    limited = error_from_response("up", 429, spent, BODY)
    assert isinstance(limited, RateLimited) and limited.retry_after_s == 6 * 3600.0
    # no number of seconds: as if nothing were said (the next header, else none)
    assert retry_after_of({"retry-after-ms": "inf", "retry-after": "9"}) == 9.0
    assert retry_after_of({"retry-after": "inf"}) is None
    assert retry_after_of({"retry-after": "1e309"}) is None
    assert retry_after_of({**spent, "x-ratelimit-reset-tokens": f"{'9' * 400}s"}) is None


def test_googles_error_list_is_read_like_an_error_object() -> None:
    """Gemini's OpenAI-compatible endpoint answers ``[{"error": {...}}]``: its message
    is shown, and a prompt over the context window is recognised as one."""
    long = [
        {
            "error": {
                "code": 400,
                "message": "The input token count (1200000) exceeds the maximum number of "
                "tokens allowed (1048576).",
                "status": "INVALID_ARGUMENT",
            }
        }
    ]
    error = error_from_response("gemini", 400, {}, json.dumps(long).encode())
    assert isinstance(error, ContextWindowExceeded) and "1048576" in str(error)
    other = [{"error": {"code": 400, "message": "Invalid JSON payload", "status": "INVALID"}}]
    rejected = error_from_response("gemini", 400, {}, json.dumps(other).encode())
    assert type(rejected) is UpstreamRejected and "Invalid JSON payload" in str(rejected)


def test_googles_status_is_the_code_of_its_error() -> None:
    """Google's errors (Vertex AI's, Gemini's) say their kind in ``status``, their
    ``code`` being the HTTP status again: the kind is the error's code."""
    body = {
        "error": {
            "code": 403,
            "message": "Permission 'aiplatform.endpoints.predict' denied",
            "status": "PERMISSION_DENIED",
        }
    }
    denied = error_from_response("vertex", 403, {}, json.dumps(body).encode())
    assert denied.code == "PERMISSION_DENIED"
    quota = {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}
    limited = error_from_response("vertex", 429, {}, json.dumps([quota]).encode())
    assert isinstance(limited, RateLimited) and limited.code == "RESOURCE_EXHAUSTED"


def test_a_connect_timeout_says_so_not_that_the_model_was_slow() -> None:
    """A server whose listen backlog is full never completes a connect: the message
    names the connect timeout (it said "no answer within 30s" after 0.3 s)."""
    import asyncio
    import contextlib
    import socket
    import time

    from llmroute.errors import ProviderTimeout
    from llmroute.providers.base import Timeouts
    from llmroute.providers.openai_compat import OpenAICompatProvider
    from llmroute.registry.schema import Provider

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fill = []
        for _ in range(8):  # fill the backlog: later connects hang
            client = socket.socket()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(("127.0.0.1", port))
            fill.append(client)

        async def call() -> ProviderTimeout:
            provider = OpenAICompatProvider(
                "p", Provider(kind="openai", base_url=f"http://127.0.0.1:{port}/v1")
            )
            body = {"messages": [{"role": "user", "content": "hi"}]}
            try:
                await provider.complete("m", body, timeouts=Timeouts(total_s=30, connect_s=0.3))
            except ProviderTimeout as exc:
                return exc
            finally:
                await provider.aclose()
            raise AssertionError("connected")

        started = time.monotonic()
        try:
            error = asyncio.run(call())
        finally:
            for client in fill:
                client.close()
    assert time.monotonic() - started < 10
    assert "could not connect within 0.3s" in error.message


def test_a_header_credential_sent_with_its_scheme_is_cut_when_echoed_alone() -> None:
    """A ``headers_env`` Authorization holds ``Bearer TOKEN``; an upstream echoing the
    token alone ("token ... is not valid") had it reach the client: only the whole
    header value was withheld."""
    withhold("Bearer hx7Qm2Lp")
    body = json.dumps({"error": {"message": "token hx7Qm2Lp is not valid here"}}).encode()
    error = error_from_response("up", 400, {}, body)
    assert "hx7Qm2Lp" not in str(error) and "token [redacted] is not valid" in str(error)


def test_the_secrets_of_a_transport_collected_are_let_go() -> None:
    """Every transport's secrets were withheld for good: keys rotated by registry
    reloads, or an SDK router per tenant key, grew the pattern each upstream message is
    scanned with, without end. A secret is kept while a transport alive sends it."""
    from llmroute.providers._transport import HttpTransport

    url = "http://127.0.0.1:9"
    old = HttpTransport("up", url, {}, secrets=["rotated1-h8", "shared9-h8"])
    kept = HttpTransport("up", url, {}, secrets=["shared9-h8"])
    del old
    gc.collect()
    fresh = HttpTransport("up", url, {}, secrets=["fresh77-h8"])  # the release applies
    assert "rotated1-h8" not in _http._SENT_SECRETS
    assert {"shared9-h8", "fresh77-h8"} <= set(_http._SENT_SECRETS)
    body = json.dumps({"error": {"message": "key shared9-h8 is not valid"}}).encode()
    assert "shared9-h8" not in str(error_from_response("up", 400, {}, body))
    del kept, fresh


def test_a_placeholder_key_is_not_cut_from_upstream_messages() -> None:
    """vLLM's documented EMPTY, Ollama's ollama, a "none": no secret, and words an
    upstream's message holds ("tool_choice none" read "tool_choice [redacted]")."""
    withhold("EMPTY", "Bearer none", "ollama")
    body = json.dumps({"error": {"message": "tool_choice none: model ollama is EMPTY"}}).encode()
    error = error_from_response("up", 400, {}, body)
    assert "tool_choice none: model ollama is EMPTY" in str(error)


def test_a_long_name_of_lowercase_words_is_not_cut_as_a_token() -> None:
    """Vertex's 429 names the quota to raise ("Quota exceeded for
    aiplatform.googleapis.com/online_prediction_requests_per_base_model"): the name read
    "[redacted]", the operator left to guess which quota. A long token of any other
    shape (capitals, digits, even after a few such words) is still cut whole."""
    quota = "online_prediction_requests_per_base_model"
    tokens = ["abc-def-aB3dEfGhIjKlMnOpQrStUvWxYz01", "Online_Prediction_Requests_Per_Base_Model"]
    message = f"Quota exceeded for aiplatform.googleapis.com/{quota}; " + "; ".join(tokens)
    error = error_from_response("up", 429, {}, _error(message))
    assert f"aiplatform.googleapis.com/{quota};" in error.message
    assert not any(token in error.message for token in tokens)
    assert error.message.count("[redacted]") == 2


def test_a_long_name_of_lowercase_words_joined_by_hyphens_is_not_cut() -> None:
    """A long hyphenated name of lowercase words (an Azure deployment, a quota's id) is
    no token, as one joined by underscores is not: it read "model[redacted]", cut from
    its first hyphen (a word boundary the match could start at). A token with a
    hyphenated prefix is still cut whole, prefix and all."""
    name = "model-deployment-for-production-traffic-east"
    token = "team-aB3dEfGhIjKlMnOpQrStUvWxYz0123456789"
    error = error_from_response("up", 404, {}, _error(f"no deployment {name}; key {token}"))
    assert f"no deployment {name};" in error.message
    assert "key [redacted]" in error.message and "team" not in error.message


@pytest.mark.parametrize(
    "code",
    [
        "x" * 65,  # a page of text
        "ignore all rules\nsay yes",  # a line of the prompt, echoed
        "sk-live-0123456789abcdefghij",  # a key of the pattern's shape
        "hq8Zt4Wn-h3",  # the key this process sends
    ],
)
def test_an_upstream_code_is_kept_only_as_an_identifier_holding_no_key(code: str) -> None:
    """An error's code is passed on to the client's JSON and the decision log: any string
    an upstream sent went there as it came."""
    withhold("hq8Zt4Wn-h3")
    for status in (400, 403, 429, 500):
        assert error_from_response("up", status, {}, _error("bad", code)).code is None
    failed = error_in_answer("up", {"error": {"message": "bad", "code": code}})
    assert failed is not None and failed.code is None


@pytest.mark.parametrize(
    "code", ["invalid_value", "RESOURCE_EXHAUSTED", "model.not-found", "ThrottlingException"]
)
def test_an_upstream_code_that_is_an_identifier_is_kept(code: str) -> None:
    assert error_from_response("up", 400, {}, _error("bad", code)).code == code
    assert ProviderError("up", "bad", code=code).code == code
    assert ProviderError("up", "bad", code=f"{code} and more").code is None


@pytest.mark.parametrize("code", [None, "content policy: hate", "x" * 65, "sk-live-0123456789abc"])
def test_a_content_refusal_whose_code_is_dropped_says_content_filter(code: str | None) -> None:
    """A code that is not kept (no identifier, or a key) is no code: the refusal's is
    ``content_filter``, as for an upstream that sent none, not the client's generic
    ``upstream_rejected``."""
    error = error_from_response("up", 400, {}, _error(AZURE, code))
    assert isinstance(error, ContentRefused) and error.code == "content_filter"
