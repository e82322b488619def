"""A text holding an unpaired UTF-16 surrogate (a lone ``"\\ud800"`` parsed from JSON, or
an undecodable byte Python kept as ``surrogateescape``) has no UTF-8 form: the Python
API says so with `UnencodableText` (a `ValueError`), not the tokenizer's `TypeError`."""

from __future__ import annotations

import pytest

from llmroute import LlmrouteError, Router, UnencodableText
from llmroute.registry import parse_registry

REGISTRY = """
encoder: builtin:static
providers:
  local: {kind: openai, base_url: http://127.0.0.1:9/v1}
models:
  small: {provider: local, model: small}
  large: {provider: local, model: large}
routes:
  - {name: code, examples: [write a python function, fix this bug], target: large}
default: {target: small}
"""


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(parse_registry(REGISTRY))


def test_decide_names_the_surrogate(router: Router) -> None:
    with pytest.raises(UnencodableText, match=r"not valid Unicode.*U\+D800") as info:
        router.decide("write a python \ud800 function")
    assert isinstance(info.value, ValueError) and isinstance(info.value, LlmrouteError)
    body = {"messages": [{"role": "user", "content": "fix this bug \udcff"}]}
    with pytest.raises(UnencodableText, match=r"U\+DCFF"):
        router.decide(body)


def test_decide_many_says_which_text(router: Router) -> None:
    with pytest.raises(UnencodableText, match="text 2 of 3"):
        router.decide_many(["write a python function", "bad \udc80", "hello"])


def test_a_surrogate_pair_is_ordinary_text(router: Router) -> None:
    assert router.decide("write a python function \U0001f600").route == "code"
