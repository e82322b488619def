"""The distilled static encoder: shipped data, semantics and speed."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from llmroute.encoders import Encoder, load_builtin
from llmroute.encoders.static import DATA_DIR, META_FILE, TABLE_FILE
from llmroute.errors import ConfigError


def test_shipped_data_is_small_and_matches_its_digest() -> None:
    total = sum(p.stat().st_size for p in DATA_DIR.iterdir())
    assert total <= 20 * 1024 * 1024
    meta = json.loads((DATA_DIR / META_FILE).read_text())
    table = np.load(DATA_DIR / TABLE_FILE)
    assert table.dtype == np.float16 and table.shape[1] == 256
    assert hashlib.sha256(table.tobytes()).hexdigest() == meta["sha256"]
    assert "Apache" in (DATA_DIR / "NOTICE").read_text()


def test_basics(static: Encoder) -> None:
    out = static.encode(["", "book a flight to paris", "   "])
    assert out.shape == (3, 256) and out.dtype == np.float32
    assert not out[0].any() and not out[2].any()
    assert np.isclose(np.linalg.norm(out[1]), 1.0, atol=1e-5)
    assert static.identity.startswith("builtin:static@")


def test_semantic_neighbours_are_closer(static: Encoder) -> None:
    a, b, c = static.encode(
        [
            "what is the weather forecast for tomorrow",
            "will it rain tomorrow",
            "transfer money to my savings account",
        ]
    )
    assert a @ b > a @ c + 0.1


def test_batch_equals_singles(static: Encoder) -> None:
    texts = ["hello world", "", "a much longer sentence about databases and indexes", "x"]
    batch = static.encode(texts)
    singles = np.vstack([static.encode([t]) for t in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-6)


def test_batch_one_is_microseconds(static: Encoder) -> None:
    text = "How do I reset my online banking password after too many attempts?"
    for _ in range(50):
        static.encode([text])
    times = []
    for _ in range(300):
        started = time.perf_counter()
        static.encode([text])
        times.append(time.perf_counter() - started)
    assert float(np.median(times)) < 1e-3  # ~70 µs measured; loose for a shared machine


@pytest.mark.parametrize(
    ("setting", "value"),
    [("max_tokens", "256"), ("max_tokens", 3.5), ("max_tokens", True), ("threads", "2")],
)
def test_a_setting_of_the_wrong_type_is_a_config_error_naming_it(
    setting: str, value: object
) -> None:
    """``load_builtin(max_tokens="256")`` (a value read from the environment unconverted)
    raised a bare TypeError from inside the encoder; 3.5 or True passed for the static
    encoder only."""
    with pytest.raises(ConfigError, match=rf"^{setting} must be an integer, not {value!r}$"):
        load_builtin("static", **{setting: value})


def test_settings_of_other_integer_and_path_types_are_taken(tmp_path: Path) -> None:
    """numpy's integers and a string path are what they say."""
    encoder = load_builtin("static", max_tokens=np.int64(64), cache_dir=str(tmp_path))
    assert encoder.identity.endswith(";max_tokens=64;truncate=head")
    assert encoder is load_builtin("static", max_tokens=64)
    with pytest.raises(ConfigError, match="cache_dir must be a path, not 5"):
        load_builtin("static", cache_dir=5)  # type: ignore[arg-type]
