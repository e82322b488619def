"""Which writing systems a text's letters are in, and whether an encoder reads them.

The built-in encoders share BERT's uncased English WordPiece vocabulary: most Chinese
characters become ``[UNK]``, and Cyrillic, Arabic or Hangul words break into pieces of a
letter or two, so the vector of such a text says little about what it asks, yet the
intent head scores it as confidently as any other. `ScriptCheck` lets the intent layer
see that before trusting the vector: it counts the letters of the part of the text the
encoder reads by script, and names the scripts the encoder does not read when they hold
more than half of those letters.

Only letters count (Unicode categories L*): digits, punctuation, symbols, emoji, marks
and whitespace are neutral, so code, numbers and formulas never make a text "unread".
Scripts are told apart by Unicode block (a table of 65,536 entries for the Basic
Multilingual Plane, built once per process; beyond it only the CJK ideograph planes
count, as Han). A letter of a script not named in `SCRIPTS` counts as ``other``, which no
encoder declares: only ``any`` reads it.

Cost: nothing for ASCII text (one flag test); otherwise one UTF-32 encode of at most
`window` characters, a table gather and a count into buffers kept per thread.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["ANY", "BUILTIN_SCRIPTS", "SCRIPTS", "ScriptCheck", "script_table"]

ANY = "any"
"""What an encoder that reads every script declares (no check)."""
BUILTIN_SCRIPTS = ("latin",)
"""What the built-in encoders read: BERT's uncased English WordPiece vocabulary."""

# (name, ranges of code points) in the Basic Multilingual Plane, by Unicode block.
_BLOCKS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    (
        "latin",
        (
            (0x0000, 0x02FF),  # Basic Latin to Spacing Modifier Letters
            (0x1D00, 0x1DBF),  # Phonetic Extensions
            (0x1E00, 0x1EFF),  # Latin Extended Additional
            (0x2070, 0x209F),  # superscript and subscript letters
            (0x2100, 0x214F),  # Letterlike Symbols
            (0x2C60, 0x2C7F),  # Latin Extended-C
            (0xA720, 0xA7FF),  # Latin Extended-D
            (0xAB30, 0xAB6F),  # Latin Extended-E
            (0xFB00, 0xFB06),  # Latin ligatures
            (0xFF21, 0xFF5A),  # full-width Latin letters
        ),
    ),
    ("greek", ((0x0370, 0x03FF), (0x1F00, 0x1FFF))),
    ("cyrillic", ((0x0400, 0x052F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F))),
    ("armenian", ((0x0530, 0x058F), (0xFB13, 0xFB17))),
    ("hebrew", ((0x0590, 0x05FF), (0xFB1D, 0xFB4F))),
    (
        "arabic",
        (
            (0x0600, 0x06FF),
            (0x0750, 0x077F),
            (0x0870, 0x08FF),
            (0xFB50, 0xFDFF),
            (0xFE70, 0xFEFF),
        ),
    ),
    ("syriac", ((0x0700, 0x074F), (0x0860, 0x086F))),
    ("thaana", ((0x0780, 0x07BF),)),
    ("devanagari", ((0x0900, 0x097F), (0xA8E0, 0xA8FF))),
    ("bengali", ((0x0980, 0x09FF),)),
    ("gurmukhi", ((0x0A00, 0x0A7F),)),
    ("gujarati", ((0x0A80, 0x0AFF),)),
    ("oriya", ((0x0B00, 0x0B7F),)),
    ("tamil", ((0x0B80, 0x0BFF),)),
    ("telugu", ((0x0C00, 0x0C7F),)),
    ("kannada", ((0x0C80, 0x0CFF),)),
    ("malayalam", ((0x0D00, 0x0D7F),)),
    ("sinhala", ((0x0D80, 0x0DFF),)),
    ("thai", ((0x0E00, 0x0E7F),)),
    ("lao", ((0x0E80, 0x0EFF),)),
    ("tibetan", ((0x0F00, 0x0FFF),)),
    ("myanmar", ((0x1000, 0x109F), (0xA9E0, 0xA9FF), (0xAA60, 0xAA7F))),
    ("georgian", ((0x10A0, 0x10FF), (0x1C90, 0x1CBF), (0x2D00, 0x2D2F))),
    (
        "hangul",
        (
            (0x1100, 0x11FF),
            (0x3130, 0x318F),
            (0xA960, 0xA97F),
            (0xAC00, 0xD7FF),
            (0xFFA0, 0xFFDC),
        ),
    ),
    ("ethiopic", ((0x1200, 0x139F), (0x2D80, 0x2DDF), (0xAB00, 0xAB2F))),
    ("cherokee", ((0x13A0, 0x13FF), (0xAB70, 0xABBF))),
    ("khmer", ((0x1780, 0x17FF), (0x19E0, 0x19FF))),
    ("mongolian", ((0x1800, 0x18AF),)),
    ("hiragana", ((0x3040, 0x309F),)),
    ("katakana", ((0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))),
    ("bopomofo", ((0x3100, 0x312F), (0x31A0, 0x31BF))),
    (
        "han",
        (
            (0x2E80, 0x2FDF),  # radicals
            (0x3005, 0x3007),  # 々 〆
            (0x3400, 0x4DBF),
            (0x4E00, 0x9FFF),
            (0xF900, 0xFAFF),
        ),
    ),
)

SCRIPTS: tuple[str, ...] = tuple(name for name, _ in _BLOCKS)
"""The script names an encoder (or `encoder.scripts` in a registry) may declare."""

_OTHER = len(SCRIPTS) + 1  # a letter of no listed script; index 0 is "not a letter"
_NAMES = ("", *SCRIPTS, "other")
_HAN = SCRIPTS.index("han") + 1
_BMP = 0x10000
_ASTRAL_HAN = 0x20000  # CJK Unified Ideographs Extension B onwards, to the end of plane 3
_END = 0x40000  # the table's last entry (0) stands for every code point from here on


@functools.cache
def script_table() -> npt.NDArray[np.uint8]:
    """Script index (0: not a letter, 1..: `SCRIPTS`, then ``other``) of every code point
    below U+40001: the Basic Multilingual Plane by block and category, plane 1 as no
    letter (emoji, symbols, historic scripts), planes 2 and 3 as Han, and one last entry
    (0) for all beyond, where `np.take(..., mode="clip")` puts them."""
    table = np.zeros(_END + 1, dtype=np.uint8)
    owner = np.full(_BMP, _OTHER, dtype=np.uint8)
    for index, (_, ranges) in enumerate(_BLOCKS, start=1):
        for first, last in ranges:
            owner[first : last + 1] = index
    letter = np.fromiter(
        (unicodedata.category(chr(cp))[0] == "L" for cp in range(_BMP)), dtype=bool, count=_BMP
    )
    table[:_BMP] = np.where(letter, owner, 0)
    table[_ASTRAL_HAN:_END] = _HAN
    table.flags.writeable = False
    return table


def _char_class(members: npt.NDArray[np.bool_], *, negate: bool = False) -> str:
    """A regular-expression class matching the code points where `members` is true (with
    `negate`, every other character, those beyond the table included)."""
    idx = np.flatnonzero(members)
    if not idx.size:
        return r"[\s\S]" if negate else "(?!)"
    breaks = np.flatnonzero(np.diff(idx) != 1)
    firsts = np.concatenate(([idx[0]], idx[breaks + 1]))
    lasts = np.concatenate((idx[breaks], [idx[-1]]))
    parts = [
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in zip(firsts.tolist(), lasts.tolist(), strict=True)
    ]
    return ("[^" if negate else "[") + "".join(parts) + "]"


@functools.cache
def _runs(unread_at: tuple[bool, ...]) -> re.Pattern[str]:
    """A run of letters not read (`unread_at`: by script index) and whatever follows up
    to the next letter read; compiled once per process when first needed (~20 ms: only
    the safety layer's windows mostly in scripts not read ask)."""
    at = script_table()[:_END]
    unread = np.asarray(unread_at)[at]
    read = (at != 0) & ~unread
    return re.compile(_char_class(unread) + _char_class(read, negate=True) + "*")


class ScriptCheck:
    """Whether most letters of what an encoder reads of a text are in scripts it does
    not read.

    `reads` names the scripts the encoder reads (from `SCRIPTS`); `window` is how many
    characters it can read at most, taken where `truncate` keeps them (``head``: the
    first, ``tail``: the last, ``head_tail``: half at each end). A text is unread when
    the letters of the other scripts are more than half of all its letters there.

    Cost per text: none for ASCII text when Latin is read (a flag test); else one regex
    search for a letter not read (no match: done, the common case for accented Latin);
    only a text holding such letters is counted: a UTF-32 encode, a gather into a buffer
    kept per thread and a `bincount`.
    """

    def __init__(self, reads: Iterable[str], *, window: int, truncate: str = "head") -> None:
        known = frozenset(reads)
        unknown = known - set(SCRIPTS)
        if unknown:
            raise ValueError(f"unknown scripts {sorted(unknown)}; known: {', '.join(SCRIPTS)}")
        if window < 1:
            raise ValueError(f"window must be positive, not {window}")
        if truncate not in ("head", "tail", "head_tail"):
            raise ValueError(f"truncate must be head, tail or head_tail, not {truncate!r}")
        self.reads = tuple(s for s in SCRIPTS if s in known)
        self.window = window
        self.truncate = truncate
        self._table = script_table()
        unread = np.ones(len(_NAMES), dtype=bool)
        unread[0] = False
        for name in known:
            unread[_NAMES.index(name)] = False
        self._unread_at = tuple(unread.tolist())
        self._ascii_read = not unread[1]
        self._finder = re.compile(_char_class(unread[self._table[:_END]]))
        self._local = threading.local()

    def _pieces(self, text: str) -> tuple[str, ...]:
        window = self.window
        if len(text) <= window:
            return (text,)
        if self.truncate == "head":
            return (text[:window],)
        if self.truncate == "tail":
            return (text[-window:],)
        half = window // 2
        return (text[: window - half], text[-half:]) if half else (text[:window],)

    def _buffer(self) -> npt.NDArray[np.uint8]:
        buf: npt.NDArray[np.uint8] | None = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = np.empty(self.window, dtype=np.uint8)
        return buf

    def counts(self, text: str) -> dict[str, int]:
        """Letters per script (``other`` for none of `SCRIPTS`) in what the encoder
        reads of `text`; scripts without letters are left out."""
        counts = self._counts(self._pieces(text))
        return {_NAMES[i]: int(n) for i, n in enumerate(counts.tolist()) if i and n}

    def _letters(self, text: str) -> list[int] | None:
        """`_counts` of what the encoder reads of `text`, None when none of it is a letter
        the encoder does not read (one regex search: the common case for accented
        Latin). The thread's last answer is kept with the text it is for (a reference:
        a long prompt lives until the thread's next non-ASCII one)."""
        local = self._local
        if getattr(local, "text", None) is text:
            counts: list[int] | None = local.counts
            return counts
        pieces = self._pieces(text)
        found = any(self._finder.search(piece) for piece in pieces)
        counts = self._counts(pieces).tolist() if found else None
        local.text, local.counts = text, counts
        return counts

    def _counts(self, pieces: Sequence[str]) -> npt.NDArray[np.intp]:
        counts = np.zeros(len(_NAMES), dtype=np.intp)
        buf = self._buffer()
        for piece in pieces:
            codes = np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            out = buf[: codes.size]
            np.take(self._table, codes, out=out, mode="clip")
            counts += np.bincount(out, minlength=len(_NAMES))
        return counts

    def unread(self, text: str, *, enough: int | None = None) -> str | None:
        """None when the encoder reads at least half of the letters of what it reads of
        `text` (or there are none), or, with `enough`, at least that many of them
        whatever their share (enough English to hold an instruction, for the safety
        layer); else the scripts it does not read, with their shares of those letters,
        largest first (at most two named): ``"Han 87%"``, ``"Hiragana 40%, Han 35%"``.

        The last text counted in a thread is remembered (by identity), so the layers
        that ask about the same request text count its letters once."""
        if self._ascii_read and text.isascii():  # O(1) in CPython
            return None
        counts = self._letters(text)
        if counts is None:
            return None
        letters = sum(counts) - counts[0]
        unread = [(n, i) for i, n in enumerate(counts) if n and self._unread_at[i]]
        n_unread = sum(n for n, _ in unread)
        if 2 * n_unread <= letters or (enough is not None and letters - n_unread >= enough):
            return None
        unread.sort(key=lambda pair: -pair[0])  # stable: SCRIPTS order breaks ties
        shares = (f"{_NAMES[i].capitalize()} {100 * n / letters:.0f}%" for n, i in unread[:2])
        return ", ".join(shares)

    def read_part(self, text: str, *, least: int) -> str | None:
        """What the encoder reads of `text` with each run of letters it does not read (and
        the neutral characters up to the next letter it reads) cut to a space, when that
        holds at least `least` letters it reads; else None. For the safety layer: the
        English of a window mostly in other scripts, as the classifier can read it (the
        vector of the whole window is made of unknown tokens).

        Uses the count `unread` kept for the same text: ask it first."""
        pieces = self._pieces(text)
        counts = self._letters(text)
        if counts is None:  # every letter is read: nothing to cut
            read = sum(ch.isalpha() for piece in pieces for ch in piece)
            return " ".join(pieces) if read >= least else None
        read = sum(n for i, n in enumerate(counts) if i and not self._unread_at[i])
        if read < least:
            return None
        runs = _runs(self._unread_at)
        return " ".join(runs.sub(" ", piece).strip() for piece in pieces)
