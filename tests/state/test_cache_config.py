"""The registry's ``cache`` section: defaults, and mistakes named by file, line and field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmroute.errors import ConfigError
from llmroute.registry import load_registry, parse_registry

BASE = """encoder: builtin:static
providers:
  up: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  small: {provider: up, model: small}
routes:
  - {name: chat, examples: ["hello there"], target: small}
default: {target: small}
"""


def test_no_section_means_no_cache_and_an_empty_one_means_memory() -> None:
    assert parse_registry(BASE).registry.cache is None
    cache = parse_registry(BASE + "cache: {}\n").registry.cache
    assert cache is not None and cache.url == "memory" and cache.ttl_s == 600
    routes = parse_registry(BASE + "cache: {routes: [chat, default, pinned]}\n").registry.cache
    assert routes is not None and routes.routes == ("chat", "default", "pinned")
    assert routes.semantic is None  # the lookup by meaning is asked for, never assumed
    semantic = parse_registry(BASE + "cache: {semantic: {}}\n").registry.cache
    assert semantic is not None and semantic.semantic is not None
    assert semantic.semantic.threshold == 0.97


@pytest.mark.parametrize(
    ("section", "line", "field", "message"),
    [
        ("cache:\n  url: memcached://h:1\n", 10, "cache.url", "must be 'memory' or a redis://"),
        ("cache:\n  routes: [chta]\n", 10, "cache.routes[0]", "unknown route 'chta'"),
        ("cache:\n  ttl_s: 0\n", 10, "cache.ttl_s", "greater than 0"),
        ("cache:\n  tll_s: 5\n", 10, "cache.tll_s", "ttl_s"),
        (
            "cache:\n  semantic:\n    threshold: 1.5\n",
            11,
            "cache.semantic.threshold",
            "less than or equal to 1",
        ),
        (
            "cache:\n  semantic: {max_chars: 1000}\n",
            10,
            "cache.semantic.max_chars",
            "more than the encoder sees for sure (254 characters",
        ),
    ],
)
def test_mistakes_name_file_line_and_field(
    tmp_path: Path, section: str, line: int, field: str, message: str
) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(BASE + section)
    with pytest.raises(ConfigError) as caught:
        load_registry(path)
    text = str(caught.value)
    assert f"registry.yaml:{line}" in text and field in text and message in text


def test_serve_refuses_a_cache_url_it_cannot_use_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(BASE + "cache: {}\ntelemetry: {enabled: false}\n")
    env = {**os.environ, "LLMROUTE_CACHE_URL": "memcached://u:s3cret@h:1"}
    command = [str(Path(sys.executable).parent / "llmroute"), "serve", "--registry", str(path)]
    done = subprocess.run(
        [*command, "--port", "9"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    out = done.stdout + done.stderr
    assert "LLMROUTE_CACHE_URL=memcached://u:***@h:1: must be 'memory'" in out
    assert "Traceback" not in out and "s3cret" not in out
