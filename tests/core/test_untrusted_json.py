"""`llmroute.untrusted_json`: JSON from outside, with nesting bounded."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from llmroute.untrusted_json import NotUnicode, TooDeep, deeper_than, loads, loads_replacing


def test_nesting_past_the_parser_is_a_value_error() -> None:
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError, match="too deeply to parse"):
        loads(text)
    with pytest.raises(TooDeep):
        loads(text.encode())


def test_max_depth_counts_arrays_and_objects() -> None:
    assert loads('{"a": [{"b": [1]}]}', max_depth=4) == {"a": [{"b": [1]}]}
    with pytest.raises(TooDeep, match="more than 3 levels deep"):
        loads('{"a": [{"b": [1]}]}', max_depth=3)
    assert loads('"[[[[[["', max_depth=1) == "[[[[[["  # brackets in a string are text
    assert loads("7", max_depth=0) == 7


def test_deeper_than_looks_at_every_branch() -> None:
    wide = {"x": [1, 2, {"y": {}}], "z": [[[[]]]]}  # the deepest branch is the last one
    assert deeper_than(wide, 4)
    assert not deeper_than(wide, 5)
    assert not deeper_than("text", 0) and not deeper_than(None, 0)


def test_deeper_than_walks_a_wide_body_about_as_fast_as_it_parses() -> None:
    # a 4 MB request body of a million empty objects ({"junk": [{}, {}, ...]}, any
    # field): its depth check ran on the event loop for 3 s (a stack of (item, depth)
    # pairs), stalling every other request of the worker; the parse itself takes 0.2 s.
    # A ratio within one run, not a time: 5-7x the parse before, under 1.2x now (it
    # reached 2.1x once on a loaded CI machine, hence the bound and the least of five)
    text = json.dumps({"model": "auto", "junk": [{}] * 200_000, "more": [[1]] * 100_000})
    value = json.loads(text)

    def fastest(call: Callable[[], object]) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return min(times)

    assert not deeper_than(value, 100) and deeper_than(value, 2)
    parse_s = fastest(lambda: json.loads(text))
    walk_s = fastest(lambda: deeper_than(value, 100))
    assert walk_s < 3 * parse_s, (walk_s, parse_s)


def test_deeper_than_finds_depth_in_any_branch_of_a_wide_value() -> None:
    deep: list[object] = []
    for _ in range(7):
        deep = [deep]
    wide: dict[str, list[object]] = {"a": [{}] * 1000 + [{"b": deep}] + [[]] * 1000}  # 11 deep
    assert deeper_than(wide, 10) and not deeper_than(wide, 11)
    assert deeper_than([[]], 1) and not deeper_than([[]], 2) and deeper_than({}, 0)


def test_ordinary_errors_stay_value_errors() -> None:
    with pytest.raises(ValueError) as caught:
        loads("{not json")
    assert not isinstance(caught.value, TooDeep)


@pytest.mark.parametrize(
    "text",
    [
        '{"content": "hello \\ud800 world"}',  # an escape without its pair
        '{"content": "\\udc00"}',  # a low one alone
        '{"\\ud83d": 1}',  # in a key
        '["ok", ["\\ude00\\ud83d"]]',  # a pair in the wrong order
    ],
)
def test_an_unpaired_surrogate_is_not_unicode(text: str) -> None:
    with pytest.raises(NotUnicode):
        loads(text)
    with pytest.raises(NotUnicode):
        loads(text.encode())
    assert isinstance(NotUnicode(), ValueError)


def test_surrogate_bytes_and_pairs() -> None:
    with pytest.raises(NotUnicode):
        loads(b'"\xed\xa0\x80"')  # a surrogate's own three bytes, which json lets through
    assert loads('"\\ud83d\\ude00"') == "\U0001f600"  # a pair is one character
    assert loads('"\U0001f600 caf\\u00e9"'.encode()) == "\U0001f600 café"


def test_loads_replacing_reads_a_character_cut_in_two_as_replacement_characters() -> None:
    """What an upstream sends: half a surrogate pair (its other half in the next event)
    and bytes that are not UTF-8 are U+FFFD, as a UTF-8 decoder reads them, and the
    caller is told; text without them is `loads`'s answer, untouched."""
    assert loads_replacing('{"content": "hi \\ud83d"}') == ({"content": "hi \ufffd"}, True)
    assert loads_replacing(b'{"content": "\\ude00 end"}') == ({"content": "\ufffd end"}, True)
    assert loads_replacing(b'{"\\ud83d": ["\\udc00"]}') == ({"\ufffd": ["\ufffd"]}, True)
    assert loads_replacing(b'{"content": "caf\xe9"}') == ({"content": "caf\ufffd"}, True)
    assert loads_replacing(b'"\xed\xa0\x80"') == ("\ufffd", True)  # a surrogate's bytes
    assert loads_replacing('"\\ud83d\\ude00 caf\\u00e9"') == ("\U0001f600 café", False)
    for bad in ("{not json", '{"a": NaN}'):
        with pytest.raises(ValueError):
            loads_replacing(bad, finite=True)
    with pytest.raises(TooDeep):  # the walk that replaces is as deep as the value
        loads_replacing("[" * 200 + '"\\ud800"' + "]" * 200)
