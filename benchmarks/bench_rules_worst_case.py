"""The attack rules' worst case through the safety layer: a huge body of their own words.

    .venv/bin/python benchmarks/bench_rules_worst_case.py [--json] [--mb 4]
        [--max-windows 16 1024] [--repeat 3] [--encoder static] [--extra-windows N]

A text made only of the language rules' words (random words of their sets, " . " between
them, so no pattern matches) makes every rule's regex scan it whole: `match_rules` on
the whole text is what the layer spent before it read only what the windows cover.
Registry: examples/registry.yaml with `builtin:static` (or `--encoder minilm-int8`, the
shipped one) and `injection.max_windows` set (`extra_windows` too with
`--extra-windows`: the windows past `max_windows` the static detector scores); the
request is one user message. Reported per request: CPU time (`time.process_time`)
of the whole decision (the fastest of `--repeat`), the safety layer's own wall time
(encoder calls excluded), how far the windows reach, the windows and what fired, and
`match_rules` on the whole text for comparison.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

from _common import ROOT, dump_json, log, machine

from llmroute.decide import Router
from llmroute.encoders import load_builtin
from llmroute.registry import load_registry
from llmroute.registry.loader import LoadedRegistry
from llmroute.safety.attack_rules import match_rules
from llmroute.safety.attack_rules_languages import INTL_RULES
from llmroute.safety.windows import window_spans

EXAMPLE = ROOT / "examples" / "registry.yaml"


def adversarial(size: int, seed: int = 0) -> str:
    """About `size` characters of the language rules' words, matched by no rule."""
    words = sorted(set().union(*(tokens for _, tokens, _ in INTL_RULES)))
    rng = random.Random(seed)
    out: list[str] = []
    total = 0
    while total < size:
        word = rng.choice(words)
        out.append(word)
        total += len(word) + 3
    return " . ".join(out)


def _router(max_windows: int, encoder: str, extra_windows: int | None) -> Router:
    loaded = load_registry(EXAMPLE)
    dumped = loaded.registry.model_dump(exclude_unset=True)
    safety = dumped.get("safety", {})
    injection = {**safety.get("injection", {}), "max_windows": max_windows}
    if extra_windows is not None:
        injection["extra_windows"] = extra_windows
    spec = {"kind": "builtin", "name": encoder}
    registry = loaded.registry.model_validate(
        {**dumped, "encoder": spec, "safety": {**safety, "injection": injection}}
    )
    swapped = LoadedRegistry(registry, loaded.version, loaded.source, loaded.base_dir)
    return Router(swapped, encoder=load_builtin(encoder))


def measure(
    text: str, max_windows: int, repeat: int, encoder: str = "static", extra: int | None = None
) -> dict[str, Any]:
    router = _router(max_windows, encoder, extra)
    router.decide("hello")  # warm-up
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    cpu: list[float] = []
    layer: list[float] = []
    for _ in range(repeat):
        started = time.process_time()
        decision = router.decide(body)
        cpu.append(time.process_time() - started)
        layer.append(next(s.elapsed_us for s in decision.signals if s.layer == "safety") / 1e6)
    assert decision.safety is not None
    safety = router.loaded.registry.safety
    assert safety is not None
    injection = safety.injection
    most = max_windows + injection.extra_windows
    spans, _ = window_spans(text, injection.window_chars, injection.stride_chars, most)
    return {
        "encoder": encoder,
        "max_windows": max_windows,
        "extra_windows": injection.extra_windows,
        "reach_chars": spans[-1][1],
        "decision_cpu_s": round(min(cpu), 3),
        "safety_layer_s": round(min(layer), 3),
        "windows": decision.safety.windows,
        "fired": list(decision.safety.fired),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--mb", type=float, default=4.0)
    parser.add_argument("--max-windows", type=int, nargs="+", default=[16, 1024])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--encoder", choices=("static", "minilm-int8"), default="static")
    parser.add_argument("--extra-windows", type=int, default=None)
    args = parser.parse_args(argv)
    text = adversarial(int(args.mb * 1_000_000))
    started = time.process_time()
    assert match_rules(text) is None
    whole = time.process_time() - started
    results = [
        measure(text, n, args.repeat, args.encoder, args.extra_windows) for n in args.max_windows
    ]
    out = {"machine": machine(), "chars": len(text), "match_rules_whole_s": round(whole, 3)}
    if args.json:
        dump_json({**out, "results": results})
        return 0
    log(f"machine: {out['machine']}")
    print(f"{len(text):,} characters; match_rules on the whole text: {whole:.2f} s CPU")
    print(
        "| encoder | max_windows + extra | read to | decision CPU s | safety layer s "
        "| windows | fired |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['encoder']} | {r['max_windows']} + {r['extra_windows']} "
            f"| {r['reach_chars']:,} | {r['decision_cpu_s']} "
            f"| {r['safety_layer_s']} | {r['windows']} | {', '.join(r['fired'])} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
