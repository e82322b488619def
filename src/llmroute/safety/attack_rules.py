"""High-precision markers of known attacks, checked before the injection model.

A text (lower-cased, whitespace collapsed) that matches one is an attack whatever the
model scores: the safety layer reports ``rule:<name>``. The first four mark well-known
templates (2026-11-25). The rest (2026-12-03) mark the direct injections that the
training data barely holds, whose templates are role-play jailbreaks and injections
hidden in emails and code: instructions overridden ("disregard the above and ...",
"ignore your safety settings"), the system prompt asked for, a note addressed to the AI
in a document, a forced "Sure, here is" opening. Each was written from the hand-written
dev set (benchmarks/data/handwritten_safety.jsonl) and the attack literature, and kept
only if it fires on no benign row of the shipped data's train + validation sides (2,470
rows, hard negatives included, which are built to contain words like "ignore" and
"pretend"); numbers in docs/benchmarks.md, "Safety detector". Two more (later on
2026-12-03) mark jailbreak personas the model missed out of fold on train + validation:
a persona "not bound by any rules", the "Aligned: / Unaligned:" double answer; they fire
on none of those benign rows nor on 38,775 benign user queries and exam questions
(CLINC150, Banking77, MMLU, GSM8K).

A user correcting themselves ("ignore my previous question") is not an attack: the
override rules name the assistant's instructions (``the``/``your``, not ``my``).

Each rule is (name, words, pattern): every match of the pattern contains one of the
words, so a text holding none of them skips the regex (most texts, for most rules).

Since 2026-12-06 the same attacks written in German, French, Spanish, Italian,
Portuguese, Dutch and Polish have rules too, five a language
(``override-instructions-de`` ... ``unbound-persona-pl``, in `attack_rules_languages`).
They were written from the English rules' meaning and the dev half of a hand-written set
(benchmarks/data/multilingual_injections.jsonl, split before any rule), and fire on none
of the benign rows and queries above nor on 48 benign documents in nine Latin-script
languages (latin_prose_long.jsonl). Their words are whole words, looked up in the text's
words cut once: ~250 substring tests would have cost every English text more than all
the English rules do. Rules whose words English text often holds ("la", "todo") name a
second set of words, their matches holding one of each. Text is NFKC-normalised first
(non-ASCII text only), so an accent typed as a combining mark and full-width letters
match, and the dot of "İ" is dropped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection

from llmroute.safety.attack_rules_languages import ALSO_NEEDS, INTL_RULES

__all__ = ["RULES", "match_rules"]

_QUALIFIER = r"(?:previous|prior|above|preceding|earlier|original|initial|system|safety)"

_ENGLISH_RULES: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    (
        "ignore-previous-instructions",
        ("ignore", "disregard", "forget"),
        re.compile(
            r"\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:of\s+)?(?:the\s+|your\s+)?"
            r"(?:previous|prior|above|preceding|earlier)\s+(?:instructions|prompts|directions)"
        ),
    ),
    ("do-anything-now", ("do anything now",), re.compile(r"\bdo anything now\b")),
    ("developer-mode", ("developer mode",), re.compile(r"\bdeveloper mode (?:enabled|output)\b")),
    (
        "chat-role-tag",
        ("<|im_start|>", "[inst]", "[/inst]", "<<sys>>"),
        re.compile(r"<\|im_start\|>\s*system|\[/?inst\]|<<sys>>"),
    ),
    (
        # "ignore your/all/the previous instructions", not "ignore the instructions on the
        # box": without "your" or "all" the instructions must be qualified (previous,
        # system, safety, ...).
        "override-instructions",
        ("ignore", "disregard", "forget", "override", "bypass"),
        re.compile(
            r"\b(?:ignore|disregard|forget|override|bypass)\s+"
            r"(?:(?:all|any|every)\s+(?:of\s+)?(?:the\s+|your\s+|these\s+|those\s+)?(?:"
            + _QUALIFIER
            + r"\s+)?|your\s+(?:"
            + _QUALIFIER
            + r"\s+)?|(?:the\s+)?"
            + _QUALIFIER
            + r"\s+)"
            r"(?:instructions|directions|guidelines|directives|programming|prompt"
            r"|settings|content polic(?:y|ies))\b"
        ),
    ),
    (
        "disregard-the-above",
        ("ignore", "disregard", "forget"),
        re.compile(
            r"\b(?:ignore|disregard|forget)\s+(?:all\s+|everything\s+)?(?:of\s+)?"
            r"(?:the\s+|what(?:'s| is| was)\s+)?(?:above|previous|preceding|prior)"
            r"(?:\s+(?:text|message|messages|context|content|conversation))?"
            r"\s*(?:,|\.|;|:|and)\s*"
            r"(?:instead|now|from now on|your new|you (?:are|will|must|should))\b"
        ),
    ),
    (
        "prompt-leak",
        (
            "reveal",
            "print",
            "repeat",
            "output",
            "show",
            "display",
            "tell me",
            "give me",
            "write out",
            "dump",
            "leak",
            "disclose",
        ),
        re.compile(
            r"\b(?:reveal|print|repeat|output|show|display|tell me|give me|write out|dump|leak"
            r"|disclose)\b[^.?!\n]{0,40}?\b(?:your|the)\s+"
            r"(?:(?:system|initial|original|hidden|secret|confidential|full)\s+)+"
            r"(?:prompt|instructions|configuration|context(?: documents)?|rules)\b"
        ),
    ),
    (
        "repeat-verbatim",
        ("verbatim", "word for word", "starting with"),
        re.compile(
            r"\b(?:print|repeat|output|copy|write)\b[^.\n]{0,40}"
            r"\b(?:above|before this|at the (?:very )?beginning)\b[^.\n]{0,40}"
            r"\b(?:verbatim|word for word|starting with)\b"
        ),
    ),
    (
        "note-to-the-ai",
        ("ai", "a.i.", "llm", "language model", "chatbot"),
        re.compile(
            r"\b(?:note|message|instructions?|attention|p\.?s\.?)\s*(?:to|for|,)?\s*(?:the\s+)?"
            r"(?:ai|a\.i\.|llm|language model|ai assistant|chatbot)\b\s*(?:reading|:|,|-)"
        ),
    ),
    (
        "new-instructions-from",
        ("new instruction",),
        re.compile(
            r"\bnew\s+instructions?\s+from\s+(?:your|the)\s+(?:developers?|creators?"
            r"|admin(?:istrator)?s?|system|operators?)\b"
        ),
    ),
    (
        "sure-here-is",
        ("sure",),
        re.compile(
            r"\b(?:begin|start)\s+your\s+(?:reply|response|answer)\s+with\s+[\"'“]?sure,?\s+here"
        ),
    ),
    (
        "no-longer-an-assistant",
        ("no longer",),
        re.compile(
            r"\byou\s+are\s+no\s+longer\s+(?:an?\s+)?(?:ai|assistant|chatgpt|language model"
            r"|bound|restricted)\b"
        ),
    ),
    (
        # A persona declared free of its rules: "an AI that is not bound by any rules",
        # "you are not restricted by OpenAI's policies". The subject must be the assistant
        # or a model: a court "is not bound by the rules of evidence".
        "unbound-persona",
        ("bound", "restricted", "limited", "constrained"),
        re.compile(
            r"\b(?:you(?:'re|\s+are)?|(?:ai|bot|model|assistant|chatbot|gpt|character)"
            r"\s+(?:that|which|who)\s+(?:is|are))\s+(?:not|never|no longer)\s+(?:bound"
            r"|restricted|limited|constrained)\s+by\s+(?:any\s+|the\s+)?(?:rules|restrictions"
            r"|guidelines|ethics|ethical|moral|morals|policies|limitations|laws|openai"
            r"|content polic)"
        ),
    ),
    (
        # The "alignment benchmarking mode" template: every answer twice, headed
        # "Aligned:" and "Unaligned:".
        "unaligned-output",
        ("unaligned:",),
        re.compile(r"\baligned:.{0,300}\bunaligned:"),
    ),
    (
        "pretend-no-rules",
        ("pretend",),
        re.compile(
            r"\bpretend\s+(?:that\s+)?you\s+(?:have|had)\s+no\s+(?:content\s+polic(?:y|ies)"
            r"|rules|restrictions|guidelines|filters|limits)\b"
        ),
    ),
)


RULES: tuple[tuple[str, Collection[str], re.Pattern[str]], ...] = _ENGLISH_RULES + INTL_RULES
_ASCII_GAPS = str.maketrans({c: " " for c in map(chr, range(128)) if not (c.isalnum() or c == "_")})
_WORD = re.compile(r"\w+")
_INTL_WORDS = frozenset().union(*(tokens for _, tokens, _ in INTL_RULES))
# each rule with the words its matches must all hold one of: its own, and a second set
# where English text often holds the first ("la", "todo", "k"); else its own twice
_INTL_SCAN = tuple(
    (name, tokens, ALSO_NEEDS.get(name, tokens), pattern) for name, tokens, pattern in INTL_RULES
)


def _lowered(text: str) -> str:
    # NFKC: an "é" typed as "e" + combining accent is the "é" the patterns name, and
    # full-width "ＩＧＮＯＲＥ" is "IGNORE"; the dot "İ".lower() leaves on "i" (U+0307) goes,
    # so "İGNORE" is "ignore" (an ASCII text is already normal and skips both)
    if text.isascii():
        return " ".join(text.lower().split())
    text = unicodedata.normalize("NFKC", text).lower().replace("\u0307", "")
    return " ".join(text.split())


def _words(lowered: str) -> list[str]:
    """The text's words as the regexes see them (runs of ``\\w``): an ASCII text's are
    cut by one `str.translate` (C speed), others' by the regex."""
    if lowered.isascii():
        return lowered.translate(_ASCII_GAPS).split()
    return _WORD.findall(lowered)


def match_rules(text: str) -> str | None:
    """The name of the first rule `text` matches, else None. Each rule names words any
    match must contain, which spares most texts the regex scan: a substring test for the
    English rules; for the other languages' rules (246 words in all, which as
    substrings would cost English text ~1.5 µs each per 2,000 characters) a set lookup
    among the text's words, cut once: every match holds one as a whole word, and one of
    its second set (`ALSO_NEEDS`) where it has one."""
    lowered = _lowered(text)
    for name, words, pattern in _ENGLISH_RULES:
        if any(word in lowered for word in words) and pattern.search(lowered):
            return name
    cut = _words(lowered)
    if _INTL_WORDS.isdisjoint(cut):  # most English text: one lookup a word
        return None
    found = set(cut)
    for name, tokens, also, pattern in _INTL_SCAN:
        if not tokens.isdisjoint(found) and not also.isdisjoint(found) and pattern.search(lowered):
            return name
    return None
