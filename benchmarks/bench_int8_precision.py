"""minilm-int8 with and without onnxruntime's ``session.x64quantprecision`` on this CPU.

    python benchmarks/bench_int8_precision.py [--short 1000] [--long 300] [--repeat 3]
        [--safety] [--data-dir /work/shared/data]

The shipped int8 session asks for exact integer products (`MiniLMEncoder`). On an x86 CPU
with VNNI or AMX they are exact anyway and the option changes nothing; without VNNI
(AVX2 alone) onnxruntime's default U8S8 kernel adds pairs of products in 16 bits with
saturation, and the vectors differ from those the shipped int8 artifacts were fitted on.
This script says which kind of CPU it runs on, then, for the shipped session ("exact")
and one built without the option ("default"), taking turns: CPU milliseconds per text
(one text a call, as the gateway encodes) for short texts (Banking77 queries) and long
ones (MMLU prompts), and the cosine between the two sessions' vectors. ``--safety`` adds
the shipped minilm-int8 injection detector's numbers on the test side of its split
(`split_sides`, as `bench_safety.py`) under each session: a check that exact products
reproduce the numbers measured on VNNI machines, nothing tuned.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from llmroute.encoders.builtin import load_builtin
from llmroute.encoders.minilm import MiniLMEncoder
from llmroute.safety.injection import (
    builtin_detector_dir,
    evaluate_detector,
    load_detector,
    read_safety_data,
    split_sides,
)


def cpu_kind() -> str:
    """The CPU's model name and whether it has the int8 dot-product instructions."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), "?"
    )
    flags = set(
        next(
            (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
        )
    )
    vnni = sorted(f for f in flags if "vnni" in f or f.startswith("amx"))
    return f"{model}; int8 dot-product flags: {', '.join(vnni) or 'none (AVX2 kernels)'}"


def default_session(encoder: MiniLMEncoder) -> MiniLMEncoder:
    """A copy of `encoder` whose session lacks ``session.x64quantprecision`` (the same
    graph file, tokenizer and identity: the same artifacts apply)."""
    clone = MiniLMEncoder.__new__(MiniLMEncoder)
    clone.__dict__.update({k: v for k, v in encoder.__dict__.items() if k != "vectors"})
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    graph = encoder._session._model_path
    clone._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    return clone


def per_text_ms(encoder: MiniLMEncoder, texts: list[str]) -> tuple[float, np.ndarray]:
    started = time.process_time()
    vectors = np.vstack([encoder.encode([t]) for t in texts])
    return (time.process_time() - started) / len(texts) * 1000, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--short", type=int, default=1000, help="Banking77 queries")
    parser.add_argument("--long", type=int, default=300, help="MMLU prompts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--safety", action="store_true", help="the detector's test numbers too")
    args = parser.parse_args()
    exact = load_builtin("minilm-int8", threads=1)
    assert isinstance(exact, MiniLMEncoder)
    default = default_session(exact)
    print(f"CPU: {cpu_kind()}; onnxruntime {ort.__version__}")
    print(
        f"probe digests: exact {exact.vectors.rsplit('=', 1)[-1]}, "
        f"default {default.vectors.rsplit('=', 1)[-1]}"
    )

    def rows(path: str, field: str, n: int) -> list[str]:
        with (args.data_dir / path).open() as handle:
            return [json.loads(line)[field] for _, line in zip(range(n), handle, strict=False)]

    for label, texts in (
        ("short (Banking77)", rows("banking77/train.jsonl", "text", args.short)),
        ("long (MMLU)", rows("mmlu/mmlu_dev.jsonl", "prompt", args.long)),
    ):
        times: dict[str, list[float]] = {"exact": [], "default": []}
        vectors: dict[str, np.ndarray] = {}
        for _ in range(args.repeat):
            for name, encoder in (("exact", exact), ("default", default)):
                ms, vectors[name] = per_text_ms(encoder, texts)
                times[name].append(ms)
        a, b = vectors["exact"], vectors["default"]
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        same = int((a == b).all(1).sum())
        print(
            f"{label}, n={len(texts)}: CPU ms a text, exact {min(times['exact']):.2f} "
            f"(runs {', '.join(f'{t:.2f}' for t in times['exact'])}), default "
            f"{min(times['default']):.2f} "
            f"(runs {', '.join(f'{t:.2f}' for t in times['default'])}); "
            f"exact/default {min(times['exact']) / min(times['default']):.2f}x; cosine "
            f"min {cosine.min():.4f} median {np.median(cosine):.4f}; identical {same}"
        )
    if args.safety:
        data = read_safety_data(
            args.data_dir / "jailbreak/train.jsonl", args.data_dir / "prompt_injection/train.jsonl"
        )
        test = data.subset(np.flatnonzero(split_sides(data) == 2))
        detector = load_detector(
            builtin_detector_dir(exact.identity), encoder_identity=exact.identity
        )
        for name, encoder in (("exact", exact), ("default", default)):
            report: dict[str, Any] = evaluate_detector(detector, test, encoder).to_dict()
            both = report["with_rules"]
            print(
                f"safety test side ({name}), n={report['n']}: model TPR {report['tpr']:.4f} "
                f"FPR {report['fpr']:.4f} AUC {report['auc']:.4f}; model or rule TPR "
                f"{both['tpr']:.4f} FPR {both['fpr']:.4f}, hard-negative FPR "
                f"{both['hard_negative_fpr']:.4f}"
            )


if __name__ == "__main__":
    main()
