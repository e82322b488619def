"""A cascade through the gateway end to end: `llmroute serve` as a subprocess, the
official `openai` client in front of it, a fake upstream behind it; the first tier
refuses, the second answers, and the decision headers say who served."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve_text
from prometheus_client.parser import text_string_to_metric_families

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


def _spent(c: openai.OpenAI) -> dict[tuple[str, str], float]:
    """Each model's tokens in and out and its cost on route ``tricky``, from /metrics."""
    text = httpx.get(str(c.base_url).replace("/v1/", "/metrics"), timeout=5).text
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "llmroute_tokens_total":
                out[(labels["model"], labels["direction"])] = sample.value
            elif sample.name == "llmroute_cost_usd_total" and labels["route"] == "tricky":
                out[(labels["model"], "usd")] = sample.value
    return out


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


@pytest.mark.parametrize("stream", [False, True])
def test_each_tier_spends_under_its_own_model_in_the_metrics(
    client: tuple[openai.OpenAI, FakeUpstream], stream: bool
) -> None:
    """The tier passed over is paid for (its 3 + 3 tokens): it was counted under the
    model that served, ``large`` (6 + 6 under it, none under ``small``), so a model's
    tokens and cost in the metrics were not what it spent, nor what its budget counts."""
    c, _ = client
    before = _spent(c)
    if stream:
        for _ in c.chat.completions.create(
            model="tricky",
            messages=_messages("solve this puzzle"),  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        ):
            pass
    else:
        c.chat.completions.create(
            model="tricky",
            messages=_messages("solve this puzzle"),  # type: ignore[arg-type]
        )
    after = _spent(c)
    spent = {k: round(after.get(k, 0) - before.get(k, 0), 9) for k in after}
    # prices are per million tokens: small 1 in, 2 out; large 10 in, 20 out
    assert spent == {
        ("small", "in"): 3,
        ("small", "out"): 3,
        ("small", "usd"): 9e-6,
        ("large", "in"): 3,
        ("large", "out"): 3,
        ("large", "usd"): 90e-6,
    }
