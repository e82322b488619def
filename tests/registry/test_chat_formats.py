"""A llamacpp provider's ``chat_format``, checked at load: a name llama-cpp-python does
not know was a 502 on every request (each counted by the breaker). No llama-cpp-python
needed: as in the provider's tests, a stand-in module takes its place in
``sys.modules``, here with the registry of chat handlers llama-cpp-python keeps."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from registry_helpers import assert_points_at, one_error

from llmroute.errors import ConfigError
from llmroute.providers.llamacpp import _Key, _load
from llmroute.registry import parse_registry
from llmroute.registry.lint import lint

REGISTRY = """\
encoder: builtin:static
providers:
  local: {kind: llamacpp, chat_format: %s}
models:
  gemma: {provider: local, model: gemma.gguf}
routes:
  - {name: r, examples: [hello], target: gemma}
default: {target: gemma}
"""
# what the stand-in llama-cpp-python knows: not vicuna, and a format of its own
INSTALLED = ("chatml", "gemma", "llama-3", "my-format")


def _handler(**_: Any) -> None:
    """A chat handler, never called here."""


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """llama-cpp-python, as far as a registry's load asks it: the chat handlers its
    ``llama_chat_format`` registers, in the singleton registry that keeps them."""
    package = types.ModuleType("llama_cpp")
    formats = types.ModuleType("llama_cpp.llama_chat_format")

    class LlamaChatCompletionHandlerRegistry:
        _chat_handlers = dict.fromkeys(INSTALLED, _handler)

    formats.LlamaChatCompletionHandlerRegistry = LlamaChatCompletionHandlerRegistry  # type: ignore[attr-defined]
    package.llama_chat_format = formats  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", package)
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_chat_format", formats)
    return package


@pytest.fixture
def not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now raises


@pytest.mark.usefixtures("installed")
def test_a_chat_format_llama_cpp_does_not_know_is_refused_at_its_line() -> None:
    error = one_error(REGISTRY % "chatm")
    assert_points_at(error, 3, "providers.local.chat_format", "(did you mean 'chatml'?)")
    assert "unknown chat format 'chatm'" in error.message
    assert "chatml, gemma, llama-3, my-format" in error.message  # the installed one's names


@pytest.mark.usefixtures("installed")
def test_the_installed_llama_cpp_decides() -> None:
    """Its own names load, those it lacks are refused, whatever the list kept here says."""
    parse_registry(REGISTRY % "my-format")
    parse_registry(REGISTRY % "gemma")
    assert_points_at(one_error(REGISTRY % "vicuna"), 3, "providers.local.chat_format")


@pytest.mark.parametrize("name", ["chat_template.default", "chat_template.tool_use"])
@pytest.mark.usefixtures("installed")
def test_a_template_of_the_gguf_is_left_to_the_file(name: str) -> None:
    registry = parse_registry(REGISTRY % name).registry
    assert registry.providers["local"].chat_format == name
    assert not [w for w in lint(registry) if "chat_format" in w]


@pytest.mark.usefixtures("not_installed")
def test_without_llama_cpp_an_unknown_name_is_a_warning() -> None:
    """CI checks a registry where the local extra is not: a newer llama-cpp-python may
    know the name, so it loads, and `registry check` says it is none of those known."""
    registry = parse_registry(REGISTRY % "chatm").registry
    (warning,) = [w for w in lint(registry) if "chat_format" in w]
    assert warning.startswith(
        "providers.local.chat_format: unknown chat format 'chatm' (did you mean 'chatml'?); "
    )
    assert "llama-cpp-python is not installed here" in warning
    for known in ("chatml", "vicuna", "functionary-v2", "chat_template.default"):
        assert not [w for w in lint(parse_registry(REGISTRY % known).registry) if "chat" in w]


class _Llama:
    """A loaded model whose GGUF carries one template (llama-cpp-python's handlers made
    from its metadata are in ``_chat_handlers``)."""

    closed = 0

    def __init__(self, **_: Any) -> None:
        self._chat_handlers = {"chat_template.default": _handler}
        self.metadata = {"tokenizer.chat_template": "{{ messages }}"}

    def close(self) -> None:
        _Llama.closed += 1


def test_a_template_the_gguf_does_not_carry_fails_the_load(
    installed: types.ModuleType, tmp_path: Path
) -> None:
    installed.Llama = _Llama  # type: ignore[attr-defined]
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    loaded = _load(_Key(str(gguf), 256, 1, "chat_template.default"))
    assert isinstance(loaded, _Llama)
    with pytest.raises(ConfigError) as caught:
        _load(_Key(str(gguf), 256, 1, "chat_template.tool_use"))
    assert caught.value.message == (
        "chat_format 'chat_template.tool_use': the GGUF carries no such template; it carries "
        f"chat_template.default ({gguf})"
    )
    assert _Llama.closed == 1  # the context it loaded is freed
