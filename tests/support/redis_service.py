"""Where the tests' Redis is: 127.0.0.1:6379 unless ``$LLMROUTE_TEST_REDIS_URL`` says."""

from __future__ import annotations

import os

REDIS_URL = os.environ.get("LLMROUTE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
