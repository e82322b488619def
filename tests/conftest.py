"""Suite-wide settings: offline, and one shared cache so the ONNX export and example
embeddings are computed once per machine, not once per test. Redis for the tests that
need it: 127.0.0.1:6379 (``$LLMROUTE_TEST_REDIS_URL``), a fresh key namespace per test
(`redis_namespace`), its keys deleted afterwards; without a reachable server those tests
skip, except under ``CI=true``, where they fail."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".pytest_cache" / "llmroute"

os.environ.setdefault("LLMROUTE_CACHE_DIR", str(CACHE))
# numpy's BLAS on one thread in this process and the gateways and commands it starts:
# its threads wait for each other at every small product, and with a worker per core
# (pytest -n auto) they mostly wait for a core (a test's MLP training: 7 s against 93 s
# at load 6). Set before numpy is imported; results are the same.
for _blas in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas, "1")
# Under PYTHONDONTWRITEBYTECODE every gateway and command a test starts compiled the
# sources it imports afresh (`llmroute route`: 1.2 s of CPU, 0.85 s with bytecode kept).
# They keep their bytecode in the test cache: reused, and nothing written in the tree.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(CACHE / "pycache"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Gateways started by tests log decisions to a scratch SQLite file, never to the
# default ./llmroute-telemetry.db in the checkout; tests of the log set their own URL.
_TELEMETRY = Path(tempfile.mkdtemp(prefix="llmroute-test-telemetry-"))
os.environ.setdefault("LLMROUTE_TELEMETRY_URL", f"sqlite:///{_TELEMETRY / 'decisions.db'}")
atexit.register(shutil.rmtree, _TELEMETRY, ignore_errors=True)

# Fake upstream servers (real HTTP servers on 127.0.0.1) shared by several test folders.
sys.path.insert(0, str(ROOT / "tests" / "support"))

from redis_service import REDIS_URL, delete_namespace  # noqa: E402  (tests/support is on the path)
from services import require  # noqa: E402


def _redis_reachable() -> str | None:
    import redis

    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2) as probe:
            probe.ping()
    except (redis.RedisError, OSError) as exc:
        return f"Redis at {REDIS_URL} is unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def _redis_available() -> None:
    require(_redis_reachable())


@pytest.fixture
def redis_namespace(_redis_available: None) -> Iterator[str]:
    """A key namespace of this test's own; its keys are deleted afterwards."""

    namespace = f"llmroute-test-{uuid.uuid4().hex[:12]}"
    yield namespace
    delete_namespace(namespace)


@pytest.fixture
def paused_redis() -> Iterator[str]:
    """The URL of a Redis of this test's own (`private_redis`), for a test that pauses
    its writes (``CLIENT PAUSE ... WRITE``): a pause of the shared one held every other
    test's writes too, in the files running beside it (a limits test's probe, with its
    1 s timeout, read a 1.5 s pause as Redis down)."""
    from private_redis import private_redis

    with private_redis() as url:
        yield url
