"""What two questions must share, beyond their meaning, to share a cached answer.

An embedding barely separates a question from its negation or its opposite ("should I
sell" / "should I not sell", "is it safe" / "is it unsafe", "increasing the dose" /
"decreasing the dose": 0.97-0.995 with the built-in encoders), nor numbers written as
words. The semantic cache's lookup is partitioned by `guarded_terms` of the last user
message, as by its numbers: questions that differ in them never share an answer.
Conservative by design: a paraphrase that drops a negation or swaps an opposite misses,
which costs a call, never a wrong answer.
"""

from __future__ import annotations

import re

__all__ = ["guarded_terms"]

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_NUMBER = re.compile(r"[-+−]?\d+(?:[.,:/]\d+)*(?:[eE][-+]?\d+)?")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_NEGATIONS = _words("not no never none nothing nobody nowhere neither nor without cannot")
_NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million billion trillion half quarter third twice "
    "double triple dozen"
)
# words with an opposite the embedding hardly separates them from; each is its own term
# (inflections of the longer ones too: "increasing", "decreased")
_OPPOSITES = _words(
    "increase decrease raise lower more less fewer most least before after above below "
    "over under higher max min maximum minimum first last buy sell include exclude allow "
    "deny block true false always add remove delete start stop open close enable disable "
    "upload download import export positive negative up down left right best worst "
    "largest smallest biggest fastest slowest ascending descending encrypt decrypt encode "
    "decode win lose gain loss safe unsafe legal illegal possible impossible able unable "
    "valid invalid correct incorrect same different lock unlock install uninstall succeed "
    "fail success failure accept reject early late cheap expensive hot cold old new long "
    "short"
)
_STEMS = tuple(sorted((w.removesuffix("e") for w in _OPPOSITES if len(w) >= 5), key=len))
_BY_HEAD: dict[str, tuple[str, ...]] = {}  # the stems by their first four letters
for _stem in _STEMS:
    _BY_HEAD[_stem[:4]] = (*_BY_HEAD.get(_stem[:4], ()), _stem)
_NEGATED = re.compile(r"n['’]t$")
_PREFIXED = ("un", "non", "dis")  # unclear, nonzero, dislike: a word's opposite


def guarded_terms(text: str) -> tuple[str, ...]:
    """The terms of `text` two questions must share: its numbers (signed, with their
    exponents), numbers written as words, whether it negates, words with an opposite
    (by their stem), and words made opposite by a prefix (``un``, ``non``, ``dis``)."""
    lowered = text.lower()
    terms = set(_NUMBER.findall(lowered))
    for word in _WORD.findall(lowered):
        if word in _NEGATIONS or _NEGATED.search(word):
            terms.add("¬")
        elif (
            word in _NUMBER_WORDS
            or (word in _OPPOSITES and len(word) < 5)  # the longer by their stems below
            or (word.startswith(_PREFIXED) and len(word) > 5)
        ):
            terms.add(word)
        elif len(word) >= 5 and (stems := _BY_HEAD.get(word[:4])):
            stem = next((s for s in stems if word.startswith(s) and len(word) - len(s) <= 3), None)
            if stem is not None:
                terms.add(stem)
    return tuple(sorted(terms))
