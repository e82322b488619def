"""Models that declare ``vision: false`` on `llmroute serve` (a real process on 127.0.0.1,
the fake OpenAI upstream behind it), driven by the official ``openai`` and ``anthropic``
clients: a request holding an image skips them for the chain's next model, a text
request does not, and a chain with no model that takes images is a 400 before anything
is sent."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small, vision: false}
  large: {provider: fake, model: up-large, vision: true}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?", "what is in this picture?"]
    target: small
    policy: {fallback: [large]}
default: {target: small}
"""

PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("vision")
    env = {"LLMROUTE_TELEMETRY_URL": "off"}
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, env=env) as served:
        yield served


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def _picture(text: str = "what is in this picture?") -> list[dict[str, object]]:
    content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": PIXEL}}]
    return [{"role": "user", "content": content}]


def test_an_image_skips_the_model_without_vision(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=_picture())
    assert raw.headers["x-llmroute-route"] == "chitchat"
    assert raw.headers["x-llmroute-model"] == "large"
    sent = upstream.requests[before:]
    assert [r.body["model"] for r in sent] == ["up-large"]
    assert sent[0].body["messages"][0]["content"][1]["image_url"]["url"] == PIXEL


def test_a_text_request_stays_on_the_model_without_vision(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi there!"}]
    )
    assert raw.headers["x-llmroute-model"] == "small"


def test_an_image_stream_skips_it_too(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="auto", messages=_picture(), stream=True)
    chunks = list(stream)
    assert chunks and chunks[0].model == "up-large"


def test_an_anthropic_image_block_counts(gateway: Served, upstream: FakeUpstream) -> None:
    before = len(upstream.requests)
    data = PIXEL.split(",", 1)[1]
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as claude:
        raw = claude.messages.with_raw_response.create(
            model="auto",
            max_tokens=32,
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "what is this?"}, block]}
            ],
        )
    assert raw.parse().model == "large"
    assert [r.body["model"] for r in upstream.requests[before:]] == ["up-large"]


def test_no_model_that_takes_images_is_a_400(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="small", messages=_picture())
    assert caught.value.status_code == 400
    assert caught.value.code == "images_not_supported"
    assert "vision: false" in caught.value.message
    assert len(upstream.requests) == before  # nothing sent
