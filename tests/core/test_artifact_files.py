from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from llmroute.artifact_files import write_artifact
from llmroute.errors import ConfigError


def test_writes_both_files_readable_by_all(tmp_path: Path) -> None:
    folder = write_artifact(
        tmp_path / "new" / "artifact",
        "arrays.npz",
        {"w": np.arange(3, dtype=np.float32)},
        "meta.json",
        {"b": np.float64(0.5), "a": 1},
        what="test artifact",
        compressed=True,
        default=lambda v: v.item(),
    )
    with np.load(folder / "arrays.npz", allow_pickle=False) as stored:
        assert stored["w"].tolist() == [0.0, 1.0, 2.0]
    text = (folder / "meta.json").read_text()
    assert json.loads(text) == {"a": 1, "b": 0.5} and text.index('"a"') < text.index('"b"')
    for name in ("arrays.npz", "meta.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.npz", "meta.json"]


def test_an_unwritable_folder_is_a_config_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write test artifact") as info:
        write_artifact(
            blocker / "artifact",
            "a.npz",
            {},
            "m.json",
            {},
            what="test artifact",
        )
    assert str(blocker / "artifact") in str(info.value)
