"""The dashboard's ``fmtMoney`` (JavaScript) writes dollars as `llmroute.money.usd` does,
run by Node.js on the function cut out of the shipped dashboard.js."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib.resources import files

import pytest

from llmroute.money import usd

AMOUNTS = [
    0.0, 5.0, 0.25, 50.01321, 1234.56789, 0.0099999, 0.0009996, 0.00014, 0.00009, 6e-07,
    0.0000012345, 1e-15, -0.5, -6e-07, 0.0015, 0.000040,
    12345.67, -1234567.0, 999.99999, 1000.0, 123456789012.5, 0.03125, 1.40625, 0.00078125,
    1e21, 1.2345e25, 1.7976931348623157e308,
]  # fmt: skip  # grouped thousands; a half up; toFixed's exponent from 1e21


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js to run the page's script")
def test_the_dashboard_writes_dollars_as_usd_does() -> None:
    """Small costs read "$0.0000006", not "<$0.0001", large ones "$12,345.67" (thousands
    grouped, as counts are), a half rounds up in both, and no amount differs from the
    report's or a budget message's."""
    script = files("llmroute.server").joinpath("static/dashboard.js").read_text("utf-8")
    found = re.search(r"\n  function fmtMoney\(v\) \{\n.*?\n  \}\n", script, re.DOTALL)
    assert found is not None, "fmtMoney is not in dashboard.js"
    program = (
        'const DASH = "–"; const isNum = (v) => typeof v === "number" && Number.isFinite(v);'
        f"{found.group()}console.log(JSON.stringify({json.dumps(AMOUNTS)}.map(fmtMoney)));"
    )
    ran = subprocess.run(
        ["node", "-e", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(ran.stdout) == [usd(a) for a in AMOUNTS]
