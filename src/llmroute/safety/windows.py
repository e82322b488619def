"""Overlapping character windows over a long text, for checks that read a bounded span.

A classifier trained on prompts of a few hundred characters sees an attack hidden in the
middle of a long document only if the document is cut into prompt-sized pieces. Windows
overlap (``size - stride`` characters) so a short instruction that straddles a cut is
still read whole by one of them, and their edges move to a nearby whitespace so words
are not cut. At most `max_windows` are returned: the bool says whether text was left
unscanned (the caller decides what that means: flag, or log and pass).
"""

from __future__ import annotations

__all__ = ["SNAP_CHARS", "windows"]

SNAP_CHARS = 40
"""A window edge moves to a whitespace at most this many characters before it."""


def _snap(text: str, position: int, reach: int) -> int:
    """The index just after the last whitespace in ``text[position - reach : position]``
    (so a window starting or ending there does not cut a word), else `position`."""
    for index in range(position - 1, max(position - reach, 0) - 1, -1):
        if text[index].isspace():
            return index + 1
    return position


def windows(text: str, size: int, stride: int, max_windows: int) -> tuple[list[str], bool]:
    """Cut `text` into windows of at most `size` characters, starting every `stride`.

    A text of at most `size` characters is one window (itself). Window starts and ends
    move back to just after a whitespace when one lies within ``min(40, size // 4)``
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
    if length <= size:
        return [text], False
    reach = min(SNAP_CHARS, size // 4)
    out: list[str] = []
    end = 0
    start = 0
    while len(out) < max_windows:
        begin = _snap(text, start, reach) if start else 0
        end = min(begin + size, length)
        if end < length:
            end = _snap(text, end, reach)
        out.append(text[begin:end])
        if end >= length:
            return out, False
        start = max(min(start + stride, end), begin + 1)  # never leave a gap
    return out, end < length
