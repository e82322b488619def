"""WordPiece tokenisation with bounded cost and head / tail / head_tail truncation.

A huge prompt must not cost unbounded time, so characters are cut before tokenising:
only a window of ``max_tokens * CHARS_PER_TOKEN`` characters at the kept end(s) is
tokenised, cut at a whitespace so the kept tokens are exactly those of the full text
(BERT pre-tokenisation splits on whitespace). If the window holds too few tokens (long
"words", dense code) it is doubled, up to a fixed bound. Tokenising is ~0.5 µs a
character, so a tight window is what keeps the static encoder fast on long prompts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, cast, get_args

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from llmroute.errors import ConfigError, EncoderError, UnencodableText
from llmroute.untrusted_json import first_surrogate

__all__ = ["CHARS_PER_TOKEN", "Truncate", "WordPiece", "check_truncate", "shared_wordpiece"]

Truncate = Literal["head", "tail", "head_tail"]
CHARS_PER_TOKEN = 6
"""Measured ~4.7 characters a token on MMLU prompts; rarer denser texts widen the window."""
_MAX_WIDEN = 6  # window doubles per try: at most 64x the first window


# Characters BERT pre-tokenisation always splits around (whitespace, ASCII punctuation,
# CJK ideographs): cutting next to one never changes the tokens on the kept side.
_SPLIT = re.compile(r"[\s!-/:-@\[-`{-~\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LOOK = 64  # characters searched for a split point before scanning the whole window


def _head_cut(text: str, chars: int) -> tuple[str, bool]:
    """The first ~`chars` characters, ending at a split point; False if none was found."""
    piece = text[:chars]
    if _SPLIT.match(text, chars):
        return piece, True
    for start in (max(0, chars - _LOOK), 0):
        found = list(_SPLIT.finditer(piece, start))
        if found:
            return piece[: found[-1].end()], True
    return piece, False


def _tail_cut(text: str, chars: int) -> tuple[str, bool]:
    """The last ~`chars` characters, starting at a split point; False if none was found."""
    begin = len(text) - chars
    piece = text[begin:]
    if _SPLIT.match(text, begin - 1):
        return piece, True
    found = _SPLIT.search(piece)
    return (piece[found.start() :], True) if found else (piece, False)


def unencodable(texts: Sequence[str]) -> Exception:
    """Why the tokenizer refused `texts`: `UnencodableText` naming the first unpaired
    surrogate (the only str the tokenizer cannot take), else an `EncoderError`."""
    for n, text in enumerate(texts):
        found = first_surrogate(text)
        if found is not None:
            which = f"text {n + 1} of {len(texts)}" if len(texts) > 1 else "the text"
            return UnencodableText(
                f"{which} is not valid Unicode: it holds an unpaired UTF-16 surrogate, "
                f"U+{ord(found):04X}"
            )
    return EncoderError("the tokenizer refused the text")


def check_truncate(value: str) -> Truncate:
    if value not in get_args(Truncate):
        raise ConfigError(f"truncate must be one of head, tail, head_tail, not {value!r}")
    return cast(Truncate, value)


class WordPiece:
    """Token ids without special tokens, truncated to `budget` ids per text."""

    def __init__(self, tokenizer_json: Path, budget: int, truncate: Truncate) -> None:
        if budget < 1:
            raise ConfigError(f"max_tokens leaves no room for text ({budget} tokens)")
        try:
            tok = Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:  # tokenizers raises a bare Exception on bad files
            raise EncoderError(f"cannot read tokenizer {tokenizer_json}: {exc}") from exc
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self.budget = budget
        self.truncate: Truncate = check_truncate(truncate)
        self.vocab_size = tok.get_vocab_size()
        self._head = budget - budget // 2 if truncate == "head_tail" else budget
        self._memo = threading.local()

    def token_id(self, token: str) -> int:
        found = self._tok.token_to_id(token)
        if found is None:
            raise EncoderError(f"tokenizer has no {token!r}")
        return int(found)

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        try:
            if len(texts) == 1:
                return [self._tok.encode(texts[0], add_special_tokens=False).ids]
            encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        except TypeError as exc:  # the Rust side takes only strings with a UTF-8 form
            raise unencodable(texts) from exc
        return [e.ids for e in encs]

    def _window(self, text: str, chars: int) -> tuple[list[str], bool]:
        """The window(s) to tokenise (two for head_tail) and whether all cuts are exact."""
        if len(text) <= chars:
            return [text], True
        if self.truncate == "head":
            piece, exact = _head_cut(text, chars)
            return [piece], exact
        if self.truncate == "tail":
            piece, exact = _tail_cut(text, chars)
            return [piece], exact
        half = chars // 2 + 1  # each end needs about half the budget
        (head, e1), (tail, e2) = _head_cut(text, half), _tail_cut(text, half)
        return [head, tail], e1 and e2

    def _cut(self, parts: list[list[int]]) -> list[int]:
        if len(parts) == 2:  # head_tail on two windows
            tail = self.budget - self._head
            return parts[0][: self._head] + (parts[1][-tail:] if tail else [])
        ids = parts[0]
        if len(ids) <= self.budget:
            return ids
        if self.truncate == "head":
            return ids[: self.budget]
        if self.truncate == "tail":
            return ids[-self.budget :]
        tail = self.budget - self._head
        return ids[: self._head] + (ids[-tail:] if tail else [])

    def _one_slow(self, text: str) -> list[int]:
        """Widen the window until it holds enough tokens or covers the text."""
        chars = self.budget * CHARS_PER_TOKEN
        for _ in range(_MAX_WIDEN + 1):
            windows, exact = self._window(text, chars)
            parts = self._ids(windows)
            if len(windows) == 1 and len(windows[0]) == len(text):
                return self._cut(parts)
            need = [self._head, self.budget - self._head] if len(parts) == 2 else [self.budget]
            if exact and all(len(p) >= n for p, n in zip(parts, need, strict=True)):
                return self._cut(parts)
            chars *= 2
        return self._cut(parts)  # pathological text (no split point): approximate cut

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Truncated id lists; texts that fit the window in one piece are batched.

        The last call's texts and ids are kept per thread: the encoder and the safety
        layer's token view tokenise the same request one after the other, and the second
        call is a lookup. Callers must not modify the lists returned."""
        last: tuple[tuple[str, ...], list[list[int]]] | None = getattr(self._memo, "last", None)
        if (
            last is not None
            and len(last[0]) == len(texts)
            and all(a is b or a == b for a, b in zip(last[0], texts, strict=True))
        ):
            return last[1]
        out = self._encode(texts)
        self._memo.last = (tuple(texts), out)
        return out

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        chars = self.budget * CHARS_PER_TOKEN
        short = [i for i, t in enumerate(texts) if len(t) <= chars]
        out: list[list[int]] = [[] for _ in texts]
        if short:
            for i, ids in zip(short, self._ids([texts[i] for i in short]), strict=True):
                out[i] = self._cut([ids])
        if len(short) < len(texts):
            for i, text in enumerate(texts):
                if len(text) > chars:
                    out[i] = self._one_slow(text)
        return out

    def encode_array(self, text: str) -> npt.NDArray[np.int64]:
        """Batch-1 fast path as a numpy array."""
        return np.asarray(self.encode([text])[0], dtype=np.int64)


_SHARED: dict[tuple[str, int, str], WordPiece] = {}
_SHARED_LOCK = threading.Lock()


def shared_wordpiece(tokenizer_json: Path, budget: int, truncate: Truncate) -> WordPiece:
    """One `WordPiece` per (file, budget, truncation) in the process, so that components
    tokenising the same text with the same settings share `encode`'s memo."""
    key = (str(Path(tokenizer_json).resolve()), budget, truncate)
    with _SHARED_LOCK:
        found = _SHARED.get(key)
        if found is None:
            found = _SHARED[key] = WordPiece(tokenizer_json, budget, truncate)
        return found
