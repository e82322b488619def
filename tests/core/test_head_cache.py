"""The intent head's on-disk cache when several processes load one registry at once
(the workers of ``serve --workers`` reload together)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from llmroute import assemble
from llmroute.scoring.heads import LinearHead


def test_a_head_being_trained_is_waited_for_not_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loads that start together train the head once; the others read it from the cache
    (each worker trained the same head side by side: minutes of CPU at hundreds of routes)."""
    rng = np.random.default_rng(0)
    n_classes = 40
    labels = rng.integers(0, n_classes, 3000)
    vectors = rng.normal(size=(3000, 64)).astype(np.float32)
    texts = [f"text {i}" for i in range(3000)]
    trained: list[int] = []
    train = LinearHead.train

    def counted(*args: object, **kwargs: object) -> LinearHead:
        trained.append(1)
        return train(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LinearHead, "train", counted)
    start = threading.Barrier(3)
    heads: list[LinearHead] = []

    def load() -> None:
        start.wait()
        heads.append(
            assemble._linear_head("fake", texts, labels, vectors, n_classes, tmp_path / "heads")
        )

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(trained) == 1
    assert len(heads) == 3
    for head in heads[1:]:
        np.testing.assert_array_equal(head.model.weights, heads[0].model.weights)
