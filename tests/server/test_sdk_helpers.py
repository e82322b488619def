"""The official `openai` client's helper methods against the gateway, where they broke:
its chat stream helper joining an Anthropic model's streamed thinking, a path the
gateway does not serve, and its retries of a 429 that no retry can change."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx2
import openai
import pytest
from fake_anthropic import THOUGHT, FakeAnthropic, sign
from gateway_proc import Served

USER_KEY = "sk-sdk-user-31415926"
CAPPED_KEY = "sk-sdk-capped-27182818"
REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small, price: {input: 1, output: 2}}
  thinker: {provider: claude, model: "claude-x?thinking=1"}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
auth:
  keys:
    - {name: user, sha256: "USER_SHA"}
    - {name: capped, sha256: "CAPPED_SHA", budget: {usd: 0.000001, period: day}}
""".replace("USER_SHA", hashlib.sha256(USER_KEY.encode()).hexdigest()).replace(
    "CAPPED_SHA", hashlib.sha256(CAPPED_KEY.encode()).hexdigest()
)
HI = [{"role": "user", "content": "hi there"}]


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=USER_KEY, max_retries=0) as c:
        yield c


def test_the_chat_stream_helper_joins_an_anthropic_models_thinking(
    client: openai.OpenAI, claude: FakeAnthropic
) -> None:
    """``chat.completions.stream`` joins every list of a delta by its entries' ``index``
    (it raised on the second ``thinking_blocks`` piece without one); the block it joins
    goes back to Anthropic as it was signed, without the index."""
    with client.chat.completions.stream(model="thinker", messages=HI) as stream:  # type: ignore[arg-type]
        text = "".join(e.delta for e in stream if e.type == "content.delta")
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert text == message.content == "echo: hi there"
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == THOUGHT
    signed = {"type": "thinking", "thinking": THOUGHT, "signature": sign(THOUGHT)}
    assert extra["thinking_blocks"] == [{"index": 0, **signed}]
    again = [*HI, message.model_dump(exclude_none=True), {"role": "user", "content": "and?"}]
    client.chat.completions.create(model="thinker", messages=again)  # type: ignore[arg-type]
    assert claude.last.body["messages"][1]["content"][0] == signed


def test_a_path_the_gateway_does_not_serve_is_named_in_the_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.vector_stores.create(name="docs")
    assert "POST /v1/vector_stores is not an endpoint of this gateway" in missing.value.message
    with pytest.raises(openai.APIStatusError) as refused:
        client.models.delete("small")
    assert refused.value.status_code == 405
    assert "DELETE /v1/models/small: the method is not allowed" in refused.value.message


def test_a_spent_budget_is_not_retried_by_the_client(gateway: Served) -> None:
    """The 429 of a key that has spent its budget says ``x-should-retry: false``: the
    client raises at once instead of retrying twice (with backoff) what cannot succeed."""
    sent: list[httpx2.Request] = []
    hooks = {"request": [sent.append]}
    with (
        httpx2.Client(event_hooks=hooks) as http,
        openai.OpenAI(
            base_url=f"{gateway.url}/v1", api_key=CAPPED_KEY, max_retries=2, http_client=http
        ) as capped,
    ):
        capped.chat.completions.create(model="small", messages=HI)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as caught:
            capped.chat.completions.create(model="small", messages=HI)  # type: ignore[arg-type]
    assert caught.value.code == "insufficient_quota"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(sent) == 2  # the answer that spent the budget, then one refusal
