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

import numpy as np
import numpy.typing as npt

__all__ = ["DENSE", "HANGUL", "SLACK", "SNAP_CHARS", "character_weights", "windows"]

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
``size + size // SLACK``: ten Greek letters, CJK characters or Cyrillic words' letters
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
_TABLE_SIZE = 0x32400  # to the end of CJK Extension H; above it (tags, PUA planes): 1


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
    weights = _WEIGHTS[np.minimum(points, _TABLE_SIZE - 1)]
    return None if int(weights.max()) == 1 else weights


def _snap(text: str, position: int, reach: int) -> int:
    """The index just after the last whitespace in ``text[position - reach : position]``
    (so a window starting or ending there does not cut a word), else `position`."""
    for index in range(position - 1, max(position - reach, 0) - 1, -1):
        if text[index].isspace():
            return index + 1
    return position


def windows(text: str, size: int, stride: int, max_windows: int) -> tuple[list[str], bool]:
    """Cut `text` into windows of at most `size` characters, starting every `stride`;
    where characters of other scripts make a window count more than its size
    (`character_weights`, `SLACK`), it is cut to count at most `size`, and the next
    starts `stride` counts after it.

    A text that counts at most `size` (or is at most `size` characters counting at most
    ``size + size // SLACK``) is one window (itself). Window starts and ends move
    back to just after a whitespace when one lies within ``min(40, size // 4)``
    characters. Returns the windows (at most `max_windows`) and whether text after the
    last one was left unscanned. ValueError unless ``0 < stride <= size`` and
    ``max_windows >= 1``.
    """
    if size <= 0 or stride <= 0 or stride > size or max_windows < 1:
        raise ValueError(
            f"need 0 < stride <= size and max_windows >= 1, got size={size}, "
            f"stride={stride}, max_windows={max_windows}"
        )
    length = len(text)
    weights = character_weights(text) if length * HANGUL > size else None
    if weights is None:
        return ([text], False) if length <= size else _cut(text, size, stride, max_windows)
    counted = np.zeros(length + 1, dtype=np.int64)  # counted[i]: the count of text[:i]
    np.cumsum(weights, out=counted[1:])
    if counted[-1] <= size or (length <= size and counted[-1] <= size + size // SLACK):
        return [text], False
    return _cut(text, size, stride, max_windows, counted)


def _cut(
    text: str,
    size: int,
    stride: int,
    max_windows: int,
    counted: npt.NDArray[np.int64] | None = None,
) -> tuple[list[str], bool]:
    length = len(text)
    reach = min(SNAP_CHARS, size // 4)
    most = size + size // SLACK

    def ahead(position: int, count: int) -> int:
        """The furthest index whose text from `position` counts at most `count`."""
        assert counted is not None
        found = np.searchsorted(counted, counted[position] + count, side="right")
        return int(found) - 1

    out: list[str] = []
    end = 0
    start = 0
    while len(out) < max_windows:
        begin = _snap(text, start, reach) if start else 0
        end = min(begin + size, length)
        step = start + stride
        if counted is not None and counted[end] - counted[begin] > most:
            end = max(ahead(begin, size), begin + 1)
            step = ahead(start, stride)
        if end < length:
            # a window of dense text is fewer characters: never snap it away
            end = _snap(text, end, min(reach, (end - begin) // 4))
        out.append(text[begin:end])
        if end >= length:
            return out, False
        start = max(min(step, end), begin + 1)  # never leave a gap
    return out, end < length
