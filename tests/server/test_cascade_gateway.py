"""A cascade through the gateway end to end: `llmroute serve` as a subprocess, the
official `openai` client in front of it, a fake upstream behind it; the first tier
refuses, the second answers, and the decision headers say who served."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import openai
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve_text

REFUSAL = quote("I'm sorry, but I can't help with that.")

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: 'small?reply=%(refusal)s', price: {input: 1, output: 2}}
  large: {provider: fake, model: large, price: {input: 10, output: 20}}
routes:
  - name: tricky
    examples: ["prove this theorem", "solve this puzzle"]
    target: small
    cascade: [small, large]
default: {target: large}
dispatch:
  retries: {attempts: 0}
"""


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[openai.OpenAI, FakeUpstream]]:
    tmp = tmp_path_factory.mktemp("cascade-gateway")
    with (
        fake_upstream() as upstream,
        serve_text(REGISTRY % {"url": upstream.url, "refusal": REFUSAL}, tmp) as served,
    ):
        base = f"{served.url}/v1"
        with openai.OpenAI(base_url=base, api_key="unused", max_retries=0) as c:
            yield c, upstream


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_the_second_tier_answers_and_the_headers_say_so(
    client: tuple[openai.OpenAI, FakeUpstream],
) -> None:
    c, upstream = client
    upstream.requests.clear()
    raw = c.chat.completions.with_raw_response.create(
        model="tricky",
        messages=_messages("solve this puzzle"),  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: solve this puzzle"
    assert raw.headers["x-llmroute-route"] == "tricky"
    assert raw.headers["x-llmroute-model"] == "large"
    assert raw.headers["x-llmroute-decision-id"]
    assert completion.usage is not None and completion.usage.prompt_tokens == 6  # both tiers
    assert [r.body["model"].partition("?")[0] for r in upstream.requests] == ["small", "large"]


def test_a_buffered_stream_serves_the_second_tier(
    client: tuple[openai.OpenAI, FakeUpstream],
) -> None:
    c, _ = client
    stream = c.chat.completions.create(
        model="tricky",
        messages=_messages("solve this puzzle"),  # type: ignore[arg-type]
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.strip() == "echo: solve this puzzle"


def test_the_cascade_header(client: tuple[openai.OpenAI, FakeUpstream]) -> None:
    c, _ = client
    raw = c.chat.completions.with_raw_response.create(
        model="tricky",
        messages=_messages("solve this puzzle"),  # type: ignore[arg-type]
    )
    assert raw.headers["x-llmroute-cascade"] == "small:escalate(heuristic:refusal),large:accept"
