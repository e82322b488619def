"""`llmroute.untrusted_json.loads(..., finite=True)`, the parse a request body gets:
NaN, Infinity and numbers past a double (floats or integers) refused as `NotFinite` (a
`ValueError`), every other value read as `json.loads` reads it, from bytes or text.
Without `finite` (an upstream's answer) nothing changes."""

from __future__ import annotations

import json
import math
import sys

import pytest

from llmroute.untrusted_json import NotFinite, loads, where_not_finite


@pytest.mark.parametrize(
    "text",
    [
        '{"a": NaN}',
        "[1, Infinity]",
        '{"a": {"b": [-Infinity]}}',
        '{"t": 1e400}',
        "[-1E+309]",
        "[" + "9" * 400 + ".0]",
        # an integer past a double: Python keeps it exact, but the first float it meets
        # (a temperature sent on to Anthropic, a hard budget's worst case) overflows
        "[" + "9" * 400 + "]",
        '{"n": -1' + "0" * 320 + "}",
    ],
)
def test_numbers_json_cannot_write_are_refused(text: str) -> None:
    for given in (text, text.encode(), text.encode("utf-16")):
        with pytest.raises(NotFinite):
            loads(given, finite=True)
    assert loads(text) is not None  # as json.loads reads it, without `finite`


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1e308, "b": -1e-400, "c": 0.5, "d": 10, "e": "NaN 1e400"}',
        "[" + "9" * 308 + ", " + str(int(sys.float_info.max)) + "]",  # ints a double holds
    ],
)
def test_everything_else_reads_as_json_loads_reads_it(text: str) -> None:
    assert loads(text, finite=True) == json.loads(text)
    assert loads(text.encode(), finite=True) == json.loads(text.encode())
    assert loads(b'\xef\xbb\xbf{"bom": 1}', finite=True) == {"bom": 1}  # as json.loads
    for encoding in ("utf-16-le", "utf-16-be", "utf-32-le"):  # no BOM: told by its zeros
        assert loads(text.encode(encoding), finite=True) == json.loads(text.encode(encoding))
    assert math.copysign(1, loads("-0.0", finite=True)) == -1


def test_where_names_the_first_number_refused() -> None:
    """For the 400's ``param``: the path of the first such number, as OpenAI writes one."""
    assert where_not_finite('{"a": [1, {"b": NaN}], "c": 1e400}') == "a[1].b"
    assert where_not_finite(b'{"score": 1' + b"0" * 400 + b"}") == "score"
    assert where_not_finite("[Infinity]") == "[0]"
    assert where_not_finite("-Infinity") is None  # the whole body
    assert where_not_finite('{"a": 1}') is None
    # lists of numbers are measured whole (math.hypot), the first in the text still named
    just_past = str(int(sys.float_info.max) + 1)  # float() rounds it to the largest
    assert where_not_finite('{"x": [[0.5, ' + just_past + "]]}") == "x[0][1]"
    assert where_not_finite('{"x": [1e308, 1e308, -1e308, 1e400]}') == "x[3]"
    assert where_not_finite('{"x": [1e308, 1e308], "y": [true, 2]}') is None
    assert where_not_finite('{"a": [1, 2], "b": [[3], {"c": [4, NaN]}], "d": NaN}') == "b[1].c[1]"
    assert where_not_finite('{"a": {"": [NaN]}}') == "a.[0]"
