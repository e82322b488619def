"""Suite-wide settings: offline, and one shared cache so the ONNX export and example
embeddings are computed once per machine, not once per test."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".pytest_cache" / "llmroute"

os.environ.setdefault("LLMROUTE_CACHE_DIR", str(CACHE))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Gateways started by tests log decisions to a scratch SQLite file, never to the
# default ./llmroute-telemetry.db in the checkout; tests of the log set their own URL.
_TELEMETRY = Path(tempfile.mkdtemp(prefix="llmroute-test-telemetry-"))
os.environ.setdefault("LLMROUTE_TELEMETRY_URL", f"sqlite:///{_TELEMETRY / 'decisions.db'}")
atexit.register(shutil.rmtree, _TELEMETRY, ignore_errors=True)

# Fake upstream servers (real HTTP servers on 127.0.0.1) shared by several test folders.
sys.path.insert(0, str(ROOT / "tests" / "support"))
