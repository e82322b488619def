"""The cheap token estimate every layer shares, as costly as a text's length.

Rules, the reasoning gate, context windows and a key's held ``tpm`` need a prompt's
tokens before (or without) any tokenizer: four characters a token is right for English
but counted Chinese at a quarter of its tokens. Each character counts by its UTF-8
length instead: ASCII a quarter of a token, two bytes (accented Latin, Cyrillic, Greek,
Arabic, Hebrew) half, three bytes (CJK, kana, hangul, Thai, Indic) one, four (emoji,
rare CJK) two; docs/benchmarks.md ("Pre-flight token estimates per script") compares it
with cl100k and o200k. ASCII text costs its length alone.
"""

from __future__ import annotations

__all__ = ["CHARS_PER_TOKEN", "ceil_tokens", "quarter_tokens"]

CHARS_PER_TOKEN = 4  # ASCII characters a token: each is one of `quarter_tokens`' quarters


def quarter_tokens(text: str) -> int:
    """`text`'s estimated tokens in quarters of a token.

    No loop over the characters: with n characters, b UTF-8 bytes, u UTF-16 units and a
    ASCII characters (three encodes at C speed), the quarters are 2b + 2u - 4n + a. Each
    class stays under `dispatch.usage.text_tokens_at_most`'s two bytes a token (a lone
    surrogate counts as three bytes there and four quarters here), so the estimate
    never passes that bound."""
    if text.isascii():
        return len(text)
    chars = len(text)
    utf8 = len(text.encode("utf-8", "surrogatepass"))
    utf16 = len(text.encode("utf-16-le", "surrogatepass")) // 2
    ascii_chars = len(text.encode("ascii", "ignore"))
    return 2 * utf8 + 2 * utf16 - 4 * chars + ascii_chars


def ceil_tokens(text: str) -> int:
    """The estimate rounded up: a non-empty text is at least one token."""
    return -(-quarter_tokens(text) // CHARS_PER_TOKEN)
