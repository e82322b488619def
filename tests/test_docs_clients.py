"""The docs' Python blocks that call the gateway through an OpenAI or Anthropic client
(README.md, docs/gateway.md, docs/local.md), run against one `llmroute serve` of the
echo registry: the rest of the docs' checks are tests/test_docs.py, which takes seconds;
this starts a gateway and imports both client libraries."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docs_blocks as docs
import pytest
from docs_blocks import Block
from gateway_proc import Served, serve_text

ROOT = docs.ROOT
PYTHON_BLOCKS = docs.all_blocks("python")

# Python blocks that call the gateway through an OpenAI or Anthropic `client` run against
# one `llmroute serve` of the echo registry (with stored responses, for the Responses and
# Conversations blocks); `client` is bound for the blocks that go on from an earlier one.
CLIENT_BLOCKS = [b for b in PYTHON_BLOCKS if re.search(r"\bclient\.", b.text)]
ECHO_GATEWAY = (ROOT / "examples" / "echo.yaml").read_text() + "\nstored_responses: {}\n"
# what the batches block uploads: a line in the shape gateway.md gives
BATCH_LINE = {
    "custom_id": "1",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
}


@pytest.fixture(scope="module")
def echo_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_text(ECHO_GATEWAY, tmp_path_factory.mktemp("docs-gateway")) as served:
        yield served


class _FastTime:
    """`time` for the blocks' polling loops, waiting 50 ms where they say seconds."""

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, 0.05))


@pytest.mark.slow
@pytest.mark.parametrize("block", CLIENT_BLOCKS, ids=[b.where for b in CLIENT_BLOCKS])
def test_python_client_block_runs(
    block: Block, echo_gateway: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openai import OpenAI

    monkeypatch.chdir(tmp_path)
    (tmp_path / "requests.jsonl").write_text(json.dumps(BATCH_LINE) + "\n")
    client = OpenAI(base_url=f"{echo_gateway.url}/v1", api_key="unused", max_retries=0)
    namespace: dict[str, Any] = {"client": client, "time": _FastTime}
    code = block.text.replace("http://127.0.0.1:8000", echo_gateway.url)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # the batches block opens its upload as OpenAI's examples do, unclosed
            warnings.simplefilter("ignore", ResourceWarning)
            exec(compile(code, block.where, "exec"), namespace)
            namespace.clear()
            gc.collect()
    except Exception as exc:
        pytest.fail(f"{block.where}: {type(exc).__name__}: {exc}", pytrace=False)
    finally:
        client.close()


def test_client_blocks_are_found() -> None:
    pages = {b.page for b in CLIENT_BLOCKS}
    assert {"README.md", "docs/gateway.md"} <= pages and len(CLIENT_BLOCKS) >= 8
