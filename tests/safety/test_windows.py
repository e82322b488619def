from __future__ import annotations

import itertools
import random

import pytest
from scripts_text import document
from tokenizers import Tokenizer

from llmroute.encoders.static import DATA_DIR
from llmroute.safety.windows import SLACK, character_weights, window_spans, windows


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


# ---------------------------------------------------------------- windows the encoder reads

_BUDGET = 254  # MiniLM's 256 positions less [CLS] and [SEP]; the static encoder keeps 256


@pytest.fixture(scope="module")
def wordpiece() -> Tokenizer:
    tok = Tokenizer.from_file(str(DATA_DIR / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def _tokens(tok: Tokenizer, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize("lang", ["zh", "ja", "ko", "ru", "ar", "el", "hi", "en"])
def test_every_window_of_any_script_fits_what_the_encoder_reads(
    wordpiece: Tokenizer, lang: str
) -> None:
    """1000 characters of Chinese are ~1000 WordPiece tokens and the encoders keep ~254:
    a window is cut by what its characters cost, so the encoder reads all of it."""
    text = document(lang, 6000)
    found, unscanned = windows(text, 1000, 750, 1000)
    assert not unscanned
    counts = [_tokens(wordpiece, w) for w in found]
    assert max(counts) <= _BUDGET, counts
    assert min(counts[:-1]) >= _BUDGET // 2, counts  # not needlessly small either
    spans, _ = window_spans(text, 1000, 750, 1000)
    assert [text[a:b] for a, b in spans] == found
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(b <= a_end for (_, a_end), (b, _) in itertools.pairwise(spans))  # no gap


def test_latin_text_with_a_few_other_characters_is_cut_as_by_characters() -> None:
    """English with emoji, a Greek letter, a few CJK characters, Word's private-use bullets
    or U+FFFD is cut exactly where the same text in ASCII is (the shipped detector's
    windows and numbers stay as they were), and a long Chinese run in it is not."""
    base = _text(3000, seed=7)
    words = base.split(" ")
    for index, stray in zip(
        range(5, len(words), 97), itertools.cycle(["🔓", "Σ", "越狱", "\uf0a7", "\ufffd", "π"])
    ):
        words[index] = stray + words[index]
    text = " ".join(words)
    ascii_twin = "".join(c if c.isascii() else "x" for c in text)
    assert windows(text, 1000, 750, 16)[0] == [
        text[a:b] for a, b in window_spans(ascii_twin, 1000, 750, 16)[0]
    ]
    with_chinese = text[:2000] + document("zh", 700) + text[2000:]
    sizes = [len(w) for w in windows(with_chinese, 1000, 750, 16)[0]]
    assert min(sizes) < 400  # the windows over the Chinese run are shorter


@pytest.mark.parametrize("seed", range(6))
def test_windows_of_mixed_scripts_cover_the_text_and_count_at_most_their_size(seed: int) -> None:
    """Runs of English, Chinese, Korean, Russian, emoji and unpaired surrogates, cut with
    small and default sizes: no gap, no empty window, each counts at most its size."""
    rng = random.Random(seed)
    pieces = [
        document(rng.choice(["zh", "ko", "ru", "en"]), rng.randint(1, 400), seed) for _ in range(30)
    ]
    pieces += ["🔓", "\ud800", "  ", "\u3000"]
    rng.shuffle(pieces)
    text = "".join(pieces)
    weights = character_weights(text)
    assert weights is not None
    counted = [0, *itertools.accumulate(int(w) for w in weights)]
    for size, stride in ((100, 50), (333, 250), (1000, 750)):
        spans, unscanned = window_spans(text, size, stride, 10_000)
        assert not unscanned and all(b > a for a, b in spans)
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        assert all(a0 < a1 <= b0 for (a0, b0), (a1, _) in itertools.pairwise(spans))
        assert all(counted[b] - counted[a] <= size + size // SLACK for a, b in spans)
        assert windows(text, size, stride, 10_000)[0] == [text[a:b] for a, b in spans]
