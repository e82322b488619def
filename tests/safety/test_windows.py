from __future__ import annotations

import random

import pytest

from llmroute.safety.windows import windows


def _text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(
        "".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 12))) for _ in range(n_words)
    )


def test_short_text_is_one_window() -> None:
    assert windows("hello world", 1000, 750, 16) == (["hello world"], False)
    assert windows("", 1000, 750, 16) == ([""], False)
    text = "x" * 1000
    assert windows(text, 1000, 750, 16) == ([text], False)


@pytest.mark.parametrize("seed", range(5))
def test_windows_cover_the_text_in_order_without_cutting_words(seed: int) -> None:
    text = _text(1500, seed)
    found, unscanned = windows(text, 1000, 750, 100)
    assert not unscanned
    assert all(len(w) <= 1000 for w in found)
    position = 0  # every character lies in some window, windows appear in order
    for window in found:
        start = text.find(window, max(0, position - 1000))
        assert 0 <= start <= position
        position = start + len(window)
    assert position == len(text)
    for window in found[1:]:
        assert text[text.find(window) - 1].isspace()  # starts just after a whitespace


def test_max_windows_and_unscanned_flag() -> None:
    text = _text(4000)
    found, unscanned = windows(text, 1000, 750, 16)
    assert len(found) == 16 and unscanned
    everything, rest = windows(text, 1000, 750, 1000)
    assert not rest and len(everything) > 16


def test_text_without_whitespace_is_cut_at_size() -> None:
    found, unscanned = windows("a" * 2500, 1000, 1000, 16)
    assert [len(w) for w in found] == [1000, 1000, 500] and not unscanned


@pytest.mark.parametrize(
    ("size", "stride", "most"), [(0, 1, 1), (10, 0, 1), (10, 11, 1), (10, 5, 0)]
)
def test_bad_arguments_are_refused(size: int, stride: int, most: int) -> None:
    with pytest.raises(ValueError, match="stride"):
        windows("text", size, stride, most)
