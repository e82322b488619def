"""Suite-wide settings: offline, and one shared cache so the ONNX export and example
embeddings are computed once per machine, not once per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".pytest_cache" / "llmroute"

os.environ.setdefault("LLMROUTE_CACHE_DIR", str(CACHE))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Fake upstream servers (real HTTP servers on 127.0.0.1) shared by several test folders.
sys.path.insert(0, str(ROOT / "tests" / "support"))
