"""A folder that one ``llmroute train`` command wrote, given where another's goes (a
safety detector as a difficulty router, a difficulty router as a reasoning scorer): the
error names what the folder holds and the command whose folder is wanted. It said only
"router.json is missing", and the reader was left to find out why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmroute.difficulty.artifact import read_meta
from llmroute.errors import ConfigError
from llmroute.gates.learned import read_gate_meta
from llmroute.reasoning.artifact import read_scorer_meta
from llmroute.safety.injection import load_detector


def _detector(folder: Path) -> Any:
    return load_detector(folder, encoder_identity=None)


READERS: dict[str, tuple[Callable[[Path], Any], str]] = {
    "router.json": (read_meta, "llmroute train difficulty"),
    "reasoning.json": (read_scorer_meta, "llmroute train reasoning"),
    "gate.json": (read_gate_meta, "llmroute train gate"),
    "detector.json": (_detector, "llmroute train safety"),
}
HOLDS = {
    "router.json": "a difficulty router, from `llmroute train difficulty`",
    "reasoning.json": "a reasoning scorer, from `llmroute train reasoning`",
    "gate.json": "a learned gate, from `llmroute train gate`",
    "detector.json": "a safety detector, from `llmroute train safety`",
}


@pytest.mark.parametrize(
    ("wanted", "held"), [(w, h) for w in sorted(READERS) for h in sorted(READERS) if w != h]
)
def test_another_commands_folder_is_named_for_what_it_holds(
    tmp_path: Path, wanted: str, held: str
) -> None:
    (tmp_path / held).write_text("{}", encoding="utf-8")
    read, command = READERS[wanted]
    with pytest.raises(ConfigError) as caught:
        read(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / wanted}: no "), message
    assert f"{wanted} is missing: the folder holds {HOLDS[held]}" in message, message
    assert f"give a folder written by `{command}`" in message, message


@pytest.mark.parametrize("wanted", sorted(READERS))
def test_an_empty_folder_says_which_command_writes_one(tmp_path: Path, wanted: str) -> None:
    read, command = READERS[wanted]
    with pytest.raises(ConfigError) as caught:
        read(tmp_path)
    assert f"({wanted} is missing; train one with `{command}`)" in str(caught.value)


# the command that writes each description file, as its argv before --data and -o
TRAINS = {
    "router.json": ["train", "difficulty"],
    "reasoning.json": ["train", "reasoning"],
    "gate.json": ["train", "gate"],
    "detector.json": ["train", "safety"],
}


@pytest.mark.parametrize(
    ("writes", "held"), [(w, h) for w in sorted(TRAINS) for h in sorted(TRAINS) if w != h]
)
def test_training_into_another_commands_folder_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], writes: str, held: str
) -> None:
    """`train safety -o` a difficulty router's folder said "note: replacing what it holds"
    and wrote its arrays.npz over the router's, whose router.json stayed: the folder then
    held neither artifact whole (the router failed to load as a "corrupt router
    artifact"), and the trained router was lost."""
    from llmroute.cli._app import run

    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / held).write_text("{}", encoding="utf-8")
    (folder / "arrays.npz").write_bytes(b"kept")
    data = tmp_path / "no-such-data.jsonl"  # refused before the data is read
    assert run([*TRAINS[writes], "--data", str(data), "-o", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"-o {folder} holds {HOLDS[held]}" in err, err
    assert "no-such-data" not in err and "Traceback" not in err, err
    assert sorted(p.name for p in folder.iterdir()) == sorted([held, "arrays.npz"])
    assert (folder / "arrays.npz").read_bytes() == b"kept"


@pytest.mark.parametrize("kind", sorted(READERS))
def test_a_folder_name_the_file_system_refuses_is_a_config_error(tmp_path: Path, kind: str) -> None:
    """A name past the file system's 255 bytes (a registry's `reasoning.scorer` written
    as a megabyte): `Path.is_dir` raised OSError, a traceback out of `registry check`
    and `serve` (found by benchmarks/fuzz_registry.py)."""
    read, command = READERS[kind]
    with pytest.raises(ConfigError) as info:
        read(tmp_path / ("x" * 300))
    assert info.value.message.startswith("cannot read the "), info.value
    assert info.value.message.endswith(f": File name too long (a folder written by `{command}`)")
