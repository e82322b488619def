"""CachedEncoder: each fixed text is encoded once, across calls and processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from llmroute.encoders import CachedEncoder, FakeEncoder


def test_second_call_does_not_hit_inner(tmp_path: Path) -> None:
    inner = FakeEncoder(dim=32)
    cached = CachedEncoder(inner, tmp_path, batch_size=2)
    texts = ["alpha", "beta", "gamma", "alpha"]
    first = cached.encode(texts)
    assert inner.texts_encoded == 3 and inner.calls == 2  # deduplicated, batches of 2
    second = cached.encode(texts[::-1])
    assert inner.texts_encoded == 3
    np.testing.assert_array_equal(second, first[::-1])
    np.testing.assert_allclose(first, FakeEncoder(dim=32).encode(texts), atol=1e-7)
    assert cached.identity == inner.identity and cached.dim == 32 and len(cached) == 3


def test_only_missing_texts_are_encoded(tmp_path: Path) -> None:
    inner = FakeEncoder(dim=16)
    cached = CachedEncoder(inner, tmp_path)
    cached.encode(["a", "b"])
    cached.encode(["b", "c", "d"])
    assert inner.texts_encoded == 4


def test_survives_a_new_process(tmp_path: Path) -> None:
    CachedEncoder(FakeEncoder(dim=16), tmp_path).encode(["one", "two", "three"])
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from llmroute.encoders import CachedEncoder, FakeEncoder
        inner = FakeEncoder(dim=16)
        out = CachedEncoder(inner, Path({str(tmp_path)!r})).encode(["three", "one"])
        assert inner.calls == 0, inner.calls
        print(out.shape)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "(2, 16)" in done.stdout


def test_identities_do_not_mix_and_shards_merge(tmp_path: Path) -> None:
    small, big = FakeEncoder(dim=8), FakeEncoder(dim=12)
    for i in range(20):  # one shard per call
        CachedEncoder(small, tmp_path).encode([f"text {i}"])
    assert CachedEncoder(big, tmp_path).encode(["text 1"]).shape == (1, 12)
    merged = CachedEncoder(small, tmp_path)  # more than 16 shards: merged on open
    shards = list(
        next(p for p in tmp_path.iterdir() if "8" in (p / "identity.txt").read_text()).glob(
            "shard-*.npz"
        )
    )
    assert len(shards) < 20  # merged once the 17th shard appeared
    calls = small.calls
    merged.encode([f"text {i}" for i in range(20)])
    assert small.calls == calls


def test_concurrent_writers_see_each_other(tmp_path: Path) -> None:
    inner = FakeEncoder(dim=8)
    first, second = CachedEncoder(inner, tmp_path), CachedEncoder(inner, tmp_path)
    first.encode(["shared"])
    calls = inner.calls
    second.encode(["shared"])  # rescans the directory on a miss
    assert inner.calls == calls


def test_a_corrupt_shard_is_dropped_and_its_texts_embedded_again(tmp_path: Path) -> None:
    """A shard cut short (a full disk, a copy interrupted) made every training and
    benchmark command fail with a zipfile traceback until someone found and deleted it."""
    CachedEncoder(FakeEncoder(dim=16), tmp_path).encode(["one", "two"])
    (shard,) = list(tmp_path.glob("*/shard-*.npz"))
    shard.write_bytes(shard.read_bytes()[:100])
    inner = FakeEncoder(dim=16)
    again = CachedEncoder(inner, tmp_path).encode(["one", "two"])
    assert inner.texts_encoded == 2 and not shard.exists()
    np.testing.assert_allclose(again, FakeEncoder(dim=16).encode(["one", "two"]), atol=1e-7)
