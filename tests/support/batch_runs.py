"""Running a batch through a gateway with the official client, as a user would."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
from openai.types import Batch

__all__ = ["batch_ended", "one_failed_line"]


def batch_ended(client: openai.OpenAI, batch_id: str, timeout_s: float) -> Batch:
    """The batch once it is ``completed`` or ``failed``, polled every 0.1 s; fails the
    test past `timeout_s`, naming the batch as it was last read."""
    deadline = time.monotonic() + timeout_s
    while (batch := client.batches.retrieve(batch_id)).status not in ("completed", "failed"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
    return batch


def one_failed_line(url: str, line: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """The one answer in the error file of a batch of `line` alone, sent to the gateway at
    `url` for `endpoint` (the line is expected to fail)."""
    with openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0) as client:
        upload = client.files.create(file=("b.jsonl", json.dumps(line).encode()), purpose="batch")
        created = client.batches.create(
            input_file_id=upload.id, endpoint=endpoint, completion_window="24h"
        )
        batch = batch_ended(client, created.id, 20)
        assert batch.error_file_id is not None, batch
        (answer,) = map(json.loads, client.files.content(batch.error_file_id).text.splitlines())
    return dict(answer)
