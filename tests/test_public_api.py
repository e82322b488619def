from __future__ import annotations

import subprocess
import sys

import llmroute


def test_all_is_sorted_and_exported() -> None:
    assert llmroute.__all__ == sorted(llmroute.__all__)
    for name in llmroute.__all__:
        assert hasattr(llmroute, name), name


def test_import_does_not_pull_heavy_or_network_modules() -> None:
    code = (
        "import sys, llmroute, llmroute.cli, llmroute.assemble; "
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers', 'onnxruntime',"
        " 'onnx', 'starlette', 'uvicorn') if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
