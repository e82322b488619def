"""``model`` in the SDK takes the registry's aliases as the gateway does (docs/sdk.md
names them): an exact alias of a route pins it, a glob of ``auto`` routes, an alias of
an embedding model is `ModelNotFound` ``model_not_chat``. Echo models, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmroute import Router
from llmroute.errors import ModelNotFound

REGISTRY = """encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small: {provider: echo, model: echo-small}
  large: {provider: echo, model: echo-large}
  embed: {provider: echo, model: echo-embed, kind: embedding}
routes:
  - {name: code, examples: ["debug this SQL query"], target: large}
  - {name: chitchat, examples: ["hi there, how are you?"], target: small}
default: {target: small}
aliases: {gpt-4o-mini: code, "claude-*": auto, text-embedding-3-small: embed}
telemetry: {enabled: false}
"""
HI = [{"role": "user", "content": "hi there, how are you?"}]


def test_model_takes_the_registrys_aliases(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY)
    with Router.from_yaml(path) as router:
        pinned = router.chat.completions.create(model="gpt-4o-mini", messages=HI)
        routed = router.chat.completions.create(model="claude-sonnet-4-5", messages=HI)
        with pytest.raises(ModelNotFound) as caught:
            router.chat.completions.create(model="text-embedding-3-small", messages=HI)
    info = pinned.llmroute  # type: ignore[attr-defined]
    assert (info["route"], info["model"], info["layer"]) == ("code", "large", "pinned")
    info = routed.llmroute  # type: ignore[attr-defined]
    assert (info["route"], info["model"], info["layer"]) == ("chitchat", "small", "intent")
    assert (caught.value.param, caught.value.code) == ("model", "model_not_chat")
