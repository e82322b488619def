"""Truncation of token ids and the character pre-cut that bounds tokenising cost."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute.encoders.static import DATA_DIR
from llmroute.encoders.tokenize import CHARS_PER_TOKEN, WordPiece
from llmroute.errors import UnencodableText

TOKENIZER = DATA_DIR / "tokenizer.json"


FULL = WordPiece(TOKENIZER, 10**6, "head")


def full_ids(text: str) -> list[int]:
    return FULL.encode([text])[0]


@pytest.mark.parametrize("repeat", [1, 50, 4000])
def test_modes_keep_the_right_tokens(repeat: int) -> None:
    text = " ".join(f"word{i} alpha beta" for i in range(repeat))
    ids = full_ids(text)
    head = WordPiece(TOKENIZER, 10, "head").encode([text])[0]
    tail = WordPiece(TOKENIZER, 10, "tail").encode([text])[0]
    both = WordPiece(TOKENIZER, 11, "head_tail").encode([text])[0]
    assert head == ids[:10]
    assert tail == ids[-10:]
    assert both == (ids[:6] + ids[-5:] if len(ids) > 11 else ids)


def test_lowercases_like_the_tokenizer_file() -> None:
    assert full_ids("HELLO World") == full_ids("hello world")


def test_precut_is_exact_for_long_words() -> None:
    # 60-char "words" make few tokens per character: the window must widen, not lose tokens
    word = "x" * 60
    text = " ".join([word] * 5_000)
    wp = WordPiece(TOKENIZER, 200, "tail")
    assert wp.encode([text])[0] == full_ids(" ".join([word] * 300))[-200:]
    assert len(text) > 200 * CHARS_PER_TOKEN


@pytest.mark.parametrize("mode", ["head", "tail", "head_tail"])
def test_megabyte_text_tokenises_fast(mode: str) -> None:
    wp = WordPiece(TOKENIZER, 256, mode)  # type: ignore[arg-type]
    text = "a" * 1_000_000  # one giant word: the worst case for the window
    started = time.perf_counter()
    wp.encode([text])
    wp.encode(["ok " * 400_000])
    assert time.perf_counter() - started < 1.0  # ~0.1 s measured


_WORDS = st.sampled_from(
    ["the", "router", "Ünïcode", "x" * 40, "def", "f(x):", "42", "东京", "a-b", "\n", "  "]
)


@settings(max_examples=60, deadline=None)
@given(words=st.lists(_WORDS, min_size=0, max_size=120), budget=st.integers(1, 12))
def test_precut_equals_truncating_the_full_tokenisation(words: list[str], budget: int) -> None:
    text = " ".join(words)
    ids = full_ids(text)
    head = budget - budget // 2
    expected = {
        "head": ids[:budget],
        "tail": ids[-budget:],
        "head_tail": ids if len(ids) <= budget else ids[:head] + ids[len(ids) - (budget - head) :],
    }
    for mode, want in expected.items():
        assert _WP[mode, budget].encode([text])[0] == want, mode


class _Cache(dict[tuple[str, int], WordPiece]):
    def __missing__(self, key: tuple[str, int]) -> WordPiece:
        self[key] = WordPiece(TOKENIZER, key[1], key[0])  # type: ignore[arg-type]
        return self[key]


_WP = _Cache()


def test_shared_tokeniser_reuses_the_last_call_per_thread() -> None:
    import threading

    from llmroute.encoders.tokenize import shared_wordpiece

    wp = shared_wordpiece(TOKENIZER, 64, "head")
    assert shared_wordpiece(TOKENIZER, 64, "head") is wp
    assert shared_wordpiece(TOKENIZER, 32, "head") is not wp
    first = wp.encode(["merge two sorted lists", "hello"])
    again = wp.encode(("merge two sorted lists", "hello"))  # equal texts: the memo
    assert again is first
    other = wp.encode(["merge two sorted lists", "goodbye"])
    assert other is not first and other[1] != first[1]
    assert wp.encode(["hello"])[0] == first[1] == full_ids("hello")
    seen: list[list[list[int]]] = []
    worker = threading.Thread(target=lambda: seen.append(wp.encode(["hello"])))
    worker.start()
    worker.join()
    assert seen[0] == [full_ids("hello")]


def test_an_unpaired_surrogate_is_named_not_a_tokenizer_type_error() -> None:
    piece = WordPiece(TOKENIZER, 64, "head")
    with pytest.raises(UnencodableText, match=r"not valid Unicode.*U\+D800"):
        piece.encode(["hello \ud800 world"])
    with pytest.raises(UnencodableText, match=r"text 2 of 2 .*U\+DCFF"):
        piece.encode(["fine", "undecodable byte \udcff"])
    long_text = "word " * 5_000 + "\udc80"  # past the character window: the slow path
    with pytest.raises(UnencodableText):
        WordPiece(TOKENIZER, 64, "tail").encode([long_text])
    assert piece.encode(["an emoji \U0001f600 is a pair, not a surrogate"])[0]
