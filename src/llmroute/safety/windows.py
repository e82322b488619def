"""Overlapping windows over a long text, for checks that read a bounded span.

A classifier trained on prompts of a few hundred characters sees an attack hidden in the
middle of a long document only if the document is cut into prompt-sized pieces. Windows
overlap (``size - stride``) so a short instruction that straddles a cut is still read
whole by one of them, and their edges move to a nearby whitespace so words are not cut.
At most `max_windows` are returned: the bool says whether text was left unscanned (the
caller decides what that means: flag, or log and pass).

A window is read by an encoder that keeps its first ~254 WordPiece tokens. 1000
characters of English are ~210 tokens, but 1000 of Chinese ~1000 and of Russian or
Arabic ~820: the encoder read their first ~290 or ~315 characters and the rest of the
window only reached the n-gram features. So sizes count characters by what they cost
(`character_weights`): a Latin character, a digit, punctuation, a symbol or an emoji
counts 1; a character of another script (Cyrillic, Greek, Arabic, Hebrew, Indic, Thai,
CJK, kana) counts 4, Hangul 8. A window that counts more than its size (a few stray
characters of another script are let through: `SLACK`) is cut shorter, to at most
`size`, and the next starts `stride` counts later. Latin-script text is cut exactly as
by characters.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

__all__ = [
    "DENSE",
    "HANGUL",
    "SLACK",
    "SNAP_CHARS",
    "character_weights",
    "window_spans",
    "windows",
]

SNAP_CHARS = 40
"""A window edge moves to a whitespace at most this many characters before it."""

DENSE = 4
"""What a character of a script the WordPiece vocabulary spells a token at a time counts
for: 0.95-1.0 tokens a non-space character in Cyrillic, Greek, Arabic and Hebrew, 1.0 in
Chinese and Japanese (Latin-script English: ~0.22). 1000 counts of it are at most ~250
tokens, what the encoders read."""
HANGUL = 8
"""Hangul counts more: WordPiece splits each syllable into its jamo (1.65-2 tokens)."""
SLACK = 32
"""A window of `size` characters is kept as it is while it counts at most
``size + size // SLACK``: ten characters of another script
among 1000 Latin ones (a name, a quoted word, a math symbol) cost the encoder ten tokens,
not a shorter window."""

_ONE: tuple[tuple[int, int], ...] = (
    (0x0000, 0x0370),  # ASCII, Latin-1, Latin Extended A/B, IPA, combining marks
    (0x1AB0, 0x1B00),  # combining marks extended
    (0x1D00, 0x1F00),  # phonetic extensions, combining supplement, Latin Extended Additional
    (0x2000, 0x2C80),  # punctuation, super/subscripts, currency, symbols, arrows, Latin Ext C
    (0xA720, 0xA800),  # Latin Extended D
    (0xAB30, 0xAB70),  # Latin Extended E
    (0xE000, 0xF900),  # private use (Word's bullets): dropped by the tokenizer
    (0xFB00, 0xFB07),  # Latin ligatures
    (0xFE00, 0xFE10),  # variation selectors: dropped
    (0xFE20, 0xFE30),  # combining half marks
    (0xFEFF, 0xFF00),  # byte-order mark: dropped
    (0xFFF9, 0xFFFE),  # annotation marks, object and replacement characters (U+FFFD: dropped)
    (0x1F000, 0x1FB00),  # emoji and pictographs: at most one [UNK] each
)
_HANGUL: tuple[tuple[int, int], ...] = (
    (0x1100, 0x1200),  # jamo
    (0x3130, 0x3190),  # compatibility jamo
    (0xA960, 0xA980),  # jamo extended A
    (0xAC00, 0xD800),  # syllables, jamo extended B
)
_TABLE_SIZE = 0x32400  # to the end of CJK Extension H; above it (tags, PUA planes): 1,
# the table's last entry, which `take(mode="clip")` gives them


def _weight_table() -> npt.NDArray[np.uint8]:
    table = np.full(_TABLE_SIZE, DENSE, dtype=np.uint8)
    for start, stop in _ONE:
        table[start:stop] = 1
    for start, stop in _HANGUL:
        table[start:stop] = HANGUL
    table[-1] = 1
    return table


_WEIGHTS = _weight_table()


def character_weights(text: str) -> npt.NDArray[np.uint8] | None:
    """Each character's count (1, `DENSE` or `HANGUL`), or None when every character
    counts 1 (any ASCII text, without looking at it)."""
    if text.isascii():
        return None
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    weights = _WEIGHTS.take(points, mode="clip")
    return None if int(weights.max()) == 1 else weights


def _surely_at_most(text: str, most: int) -> bool:
    """Whether `text` surely counts at most `most`, from its length and UTF-8 size alone
    (a character that counts more than 1 takes two bytes or more): English with a curly
    quote costs an encode, not the table."""
    if text.isascii():
        return len(text) <= most
    extra = len(text.encode("utf-8", "surrogatepass")) - len(text)
    return len(text) + (HANGUL - 1) * extra <= most


_TO_LAST_SPACE = re.compile(r".*\s", re.DOTALL)  # \s is str.isspace()


def _snap(text: str, position: int, reach: int) -> int:
    """The index just after the last whitespace in ``text[position - reach : position]``
    (so a window starting or ending there does not cut a word), else `position`."""
    found = _TO_LAST_SPACE.match(text, max(position - reach, 0), position)
    return position if found is None else found.end()


def window_spans(
    text: str, size: int, stride: int, max_windows: int
) -> tuple[list[tuple[int, int]], bool]:
    """Cut `text` into windows of at most `size` characters, starting every `stride`;
    where characters of other scripts make a window count more than its size
    (`character_weights`, `SLACK`), it is cut to count at most `size`, and the next
    starts `stride` counts after it.

    A text that counts at most `size` (or is at most `size` characters counting at most
    ``size + size // SLACK``) is one window (itself). Window starts and ends move
    back to just after a whitespace when one lies within ``min(40, size // 4)``
    characters. Returns the windows (at most `max_windows`) and whether text after the
    last one was left unscanned. ValueError unless ``0 < stride <= size`` and
    ``max_windows >= 1``. `windows` gives their text.
    """
    if size <= 0 or stride <= 0 or stride > size or max_windows < 1:
        raise ValueError(
            f"need 0 < stride <= size and max_windows >= 1, got size={size}, "
            f"stride={stride}, max_windows={max_windows}"
        )
    length = len(text)
    most = size + size // SLACK
    if length <= size and _surely_at_most(text, most):
        return [(0, len(text))], False
    weights = character_weights(text)
    if weights is None:
        return ([(0, length)], False) if length <= size else _cut(text, size, stride, max_windows)
    if length <= size and int(weights.sum(dtype=np.int64)) <= most:
        return [(0, len(text))], False
    counted = np.zeros(length + 1, dtype=np.int64)  # counted[i]: the count of text[:i]
    np.cumsum(weights, out=counted[1:])
    if counted[-1] <= size:
        return [(0, len(text))], False
    return _cut(text, size, stride, max_windows, counted)


def _cut(
    text: str,
    size: int,
    stride: int,
    max_windows: int,
    counted: npt.NDArray[np.int64] | None = None,
) -> tuple[list[tuple[int, int]], bool]:
    length = len(text)
    reach = min(SNAP_CHARS, size // 4)
    most = size + size // SLACK

    def ahead(position: int, count: int) -> int:
        """The furthest index whose text from `position` counts at most `count`."""
        assert counted is not None
        return int(counted.searchsorted(counted[position] + count, side="right")) - 1

    out: list[tuple[int, int]] = []
    end = 0
    start = 0
    while len(out) < max_windows:
        back = reach if counted is None else min(reach, (ahead(start, size) - start) // 4)
        begin = _snap(text, start, back) if start else 0  # dense text: a shorter reach
        end = min(begin + size, length)
        step = start + stride
        if counted is not None and counted[end] - counted[begin] > most:
            end = max(ahead(begin, size), begin + 1)
            step = ahead(start, stride)
        if end < length:
            # a window of dense text is fewer characters: never snap it away
            end = _snap(text, end, min(reach, (end - begin) // 4))
        out.append((begin, end))
        if end >= length:
            return out, False
        start = max(min(step, end), begin + 1, start + 1)  # never leave a gap, go on
    return out, end < length


def windows(text: str, size: int, stride: int, max_windows: int) -> tuple[list[str], bool]:
    """The text of the `window_spans` of `text`, and whether text was left unscanned."""
    spans, unscanned = window_spans(text, size, stride, max_windows)
    if len(spans) == 1 and spans[0] == (0, len(text)):
        return [text], unscanned
    return [text[begin:end] for begin, end in spans], unscanned
