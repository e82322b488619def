"""The LLM router on CLINC150: intent accuracy on the low-margin requests before and after
a model picks the route, and the LLM router's latency.

    .venv/bin/python benchmarks/bench_llm_router.py --model-registry local.yaml [--json]
        [--model picker] [--margin 0.1] [--timeout 0.3] [--max-cases 300] [--top-k 3]
    .venv/bin/python benchmarks/bench_llm_router.py --provider-url http://host:8000/v1 \\
        --provider-model NAME
    .venv/bin/python benchmarks/bench_llm_router.py --fake   # plumbing only, no model

The registry is built from CLINC150 train.jsonl by `registry_from_examples` (as
bench_intent.py does: linear head, out-of-scope class, threshold by cross-validation on
train), on `--encoder`; the model comes from `--model-registry` (a YAML file with
``providers`` and ``models``, merged in; ``--model`` names the pool model, default the
file's ``llm_fallback.model`` or its only chat model) or from `--provider-url` (any
OpenAI-compatible server). The cases are the val.jsonl rows the LLM router applies to
(`LlmRouter.applies` at `--margin`): intent-decided with a margin under it, or the
default served for a best route that missed its threshold by less than it. At most
`--max-cases` of them (the first ones, in file order) are sent, one at a time.

Each call gets `--call-timeout` (default 30 s, generous: the model's own latency is the
measurement); accuracy "within timeout_s" then counts every call slower than
`--timeout` (the registry's ``timeout_s``) as kept, as the gateway would. A row is correct
when the route is its intent, or the default for an out-of-scope row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import yaml
from _common import CLINC, ROOT, dump_json, log, machine, pct, percentiles

from llmroute.decide import DEFAULT_LAYER, Router
from llmroute.decision import Decision
from llmroute.dispatch import Dispatcher
from llmroute.encoders import CachedEncoder, default_cache_dir, load_builtin
from llmroute.evaluate.data import LabelledRow, read_labelled
from llmroute.evaluate.from_examples import FromExamplesConfig, registry_from_examples
from llmroute.layers.llm_router import LlmRouter, llm_router_signal
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import LlmFallback

OOS = "oos"
PICKER = "llm-router-model"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model-registry", type=Path, help="YAML with providers and models")
    where.add_argument("--provider-url", help="an OpenAI-compatible base URL (…/v1)")
    where.add_argument("--fake", action="store_true", help="a scripted server: plumbing only")
    parser.add_argument("--model", help="the pool model of --model-registry to ask")
    parser.add_argument("--provider-model", default="router", help="upstream model name")
    parser.add_argument("--api-key-env", help="the provider key's environment variable")
    parser.add_argument("--encoder", default="builtin:minilm")
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=0.3, help="timeout_s, for accuracy")
    parser.add_argument("--call-timeout", type=float, default=30.0)
    parser.add_argument("--max-cases", type=int, default=300)
    parser.add_argument("--max-chars", type=int, default=2000)
    parser.add_argument(
        "--top-k", type=int, default=None, help="list only the intent layer's best K routes"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser.parse_args(argv)


# -- the registry ----------------------------------------------------------------------------


def build_router(args: argparse.Namespace, url: str | None) -> tuple[Router, str]:
    """The CLINC150 train registry with the model merged in; (router, pool model)."""
    cache = default_cache_dir()
    encoder = CachedEncoder(
        load_builtin(args.encoder.removeprefix("builtin:")), cache / "embeddings"
    )
    config = FromExamplesConfig(oos_label=OOS, method="linear", encoder=args.encoder)
    log("building the CLINC150 train registry …")
    result = registry_from_examples(
        read_labelled(CLINC / "train.jsonl"), config, encoder=encoder, cache_dir=cache
    )
    document = yaml.safe_load(result.yaml_text)
    model = merge_model(document, args, url)
    document["llm_fallback"] = {
        "model": model,
        "margin": args.margin,
        "timeout_s": args.call_timeout,
        "max_chars": args.max_chars,
        "max_concurrency": 1,
    }
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    base = args.model_registry.parent if args.model_registry else ROOT
    loaded = parse_registry(text, source=str(base / "bench-llm-router.yaml"))
    return Router(loaded, encoder=encoder, cache_dir=cache), model


def merge_model(document: dict[str, Any], args: argparse.Namespace, url: str | None) -> str:
    if args.model_registry is None:
        provider: dict[str, Any] = {"kind": "openai", "base_url": url, "timeout_s": 600}
        if args.api_key_env:
            provider["api_key_env"] = args.api_key_env
        document["providers"]["llm-router"] = provider
        document["models"][PICKER] = {"provider": "llm-router", "model": args.provider_model}
        return PICKER
    extra = yaml.safe_load(args.model_registry.read_text()) or {}
    document["providers"].update(extra.get("providers") or {})
    document["models"].update(extra.get("models") or {})
    if args.model:
        return str(args.model)
    fallback = extra.get("llm_fallback") or {}
    if "model" in fallback:
        return str(fallback["model"])
    chat = [n for n, m in (extra.get("models") or {}).items() if m.get("kind", "chat") == "chat"]
    if len(chat) != 1:
        sys.exit("--model: which pool model of --model-registry should answer?")
    return str(chat[0])


# -- a scripted server for --fake --------------------------------------------------------------


@contextmanager
def fake_server() -> Iterator[str]:
    """Answers every request with the first route its schema allows (the intent layer's
    best candidate with --top-k, else the registry's first route)."""
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from fake_upstream import serve_in_thread

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            schema = body["response_format"]["json_schema"]["schema"]
            answer = json.dumps({"route": schema["properties"]["route"]["enum"][0]})
            message = {"role": "assistant", "content": answer}
            raw = json.dumps(
                {
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                }
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    with serve_in_thread(Handler) as url:
        yield f"{url}/v1"


# -- the run -----------------------------------------------------------------------------------


def correct(decision: Decision, gold: str) -> bool:
    return decision.route == (DEFAULT_LAYER if gold == OOS else gold)


def llm_outcome(decision: Decision) -> tuple[str, float]:
    signal = llm_router_signal(decision)
    if signal is None:
        return "not asked", 0.0
    return str(signal.detail.get("outcome")), signal.elapsed_us


async def ask_all(
    router: Router,
    settings: LlmFallback,
    cases: Sequence[tuple[LabelledRow, Decision]],
    top_k: int | None,
) -> list[Decision]:
    registry = router.loaded.registry
    dispatcher = Dispatcher(registry, build_providers(registry))
    llm = LlmRouter(settings, registry, dispatcher, top_k=top_k)
    out = []
    try:
        for i, (row, decision) in enumerate(cases):
            out.append(await llm.refine(decision, row.text))
            if (i + 1) % 25 == 0:
                log(f"  {i + 1}/{len(cases)}")
    finally:
        await dispatcher.aclose()
    return out


def run(args: argparse.Namespace, url: str | None) -> dict[str, Any]:
    router, model = build_router(args, url)
    settings = router.loaded.registry.llm_fallback
    assert settings is not None
    rows = read_labelled(CLINC / "val.jsonl")
    t0 = time.perf_counter()
    decisions = router.decide_many([r.text for r in rows])
    decide_s = time.perf_counter() - t0
    probe = LlmRouter(settings, router.loaded.registry, dispatcher=None)  # type: ignore[arg-type]
    low = [(r, d) for r, d in zip(rows, decisions, strict=True) if probe.applies(d)]
    cases = low[: args.max_cases]
    log(f"{len(low)} of {len(rows)} val rows are low-margin; asking {model} about {len(cases)}")
    t0 = time.perf_counter()
    refined = asyncio.run(ask_all(router, settings, cases, args.top_k))
    wall_s = time.perf_counter() - t0
    return report(args, model, rows, decisions, low, cases, refined, decide_s, wall_s)


def report(
    args: argparse.Namespace,
    model: str,
    rows: Sequence[LabelledRow],
    decisions: Sequence[Decision],
    low: Sequence[tuple[LabelledRow, Decision]],
    cases: Sequence[tuple[LabelledRow, Decision]],
    refined: Sequence[Decision],
    decide_s: float,
    wall_s: float,
) -> dict[str, Any]:
    n = len(cases)
    before = sum(correct(d, r.intent) for r, d in cases)
    after = sum(correct(d, r.intent) for (r, _), d in zip(cases, refined, strict=True))
    outcomes: Counter[str] = Counter()
    latencies = []
    within = 0
    for (row, old), new in zip(cases, refined, strict=True):
        outcome, elapsed_us = llm_outcome(new)
        outcomes[outcome] += 1
        latencies.append(elapsed_us)
        in_time = elapsed_us <= args.timeout * 1e6
        within += correct(new if in_time else old, row.intent)
    by_layer = Counter(d.layer for _, d in low)
    all_correct = sum(correct(d, r.intent) for r, d in zip(rows, decisions, strict=True))
    lat = percentiles(latencies)
    return {
        "benchmark": "llm_router",
        "machine": machine(),
        "data": "CLINC150 val.jsonl (registry built from train.jsonl, linear head, oos class)",
        "encoder": args.encoder,
        "model": model,
        "source": str(args.model_registry or args.provider_url or "fake (scripted server)"),
        "margin": args.margin,
        "top_k": args.top_k,
        "val_rows": len(rows),
        "val_accuracy_intent": all_correct / len(rows),
        "decide_s": round(decide_s, 2),
        "low_margin_rows": len(low),
        "low_margin_share": len(low) / len(rows),
        "low_margin_by_layer": dict(by_layer),
        "cases": n,
        "accuracy_before": before / n if n else None,
        "accuracy_after": after / n if n else None,
        "accuracy_after_within_timeout": within / n if n else None,
        "timeout_s": args.timeout,
        "share_within_timeout": sum(x <= args.timeout * 1e6 for x in latencies) / n if n else None,
        "outcomes": dict(outcomes),
        "latency_ms": {
            k.replace("_us", "_ms"): (round(v / 1000, 2) if k.endswith("_us") else v)
            for k, v in lat.items()
        },
        "wall_s": round(wall_s, 1),
    }


def print_text(result: dict[str, Any]) -> None:
    lat = result["latency_ms"]
    print(f"LLM router on {result['data']}")
    print(
        f"model {result['model']} ({result['source']}), margin {result['margin']}, "
        f"top_k {result['top_k'] or 'all routes'}"
    )
    print(
        f"val accuracy (intent alone, all {result['val_rows']} rows): "
        f"{pct(result['val_accuracy_intent'])}"
    )
    print(
        f"low-margin rows: {result['low_margin_rows']} ({pct(result['low_margin_share'])}), "
        f"by layer {result['low_margin_by_layer']}; asked about {result['cases']}"
    )
    print(
        f"accuracy on them: before {pct(result['accuracy_before'])}, after "
        f"{pct(result['accuracy_after'])}, after within timeout_s={result['timeout_s']} "
        f"{pct(result['accuracy_after_within_timeout'])} "
        f"({pct(result['share_within_timeout'])} of calls in time)"
    )
    if lat.get("n"):
        print(
            f"latency: p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms, "
            f"p99 {lat['p99_ms']:.1f} ms (n={lat['n']}); outcomes {result['outcomes']}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    missing = [p for p in (CLINC / "train.jsonl", CLINC / "val.jsonl") if not p.is_file()]
    if missing:  # as the other benchmarks say it, rather than a traceback
        names = ", ".join(map(str, missing))
        print(f"skipped: {names} not found; set LLMROUTE_DATA", file=sys.stderr)
        return
    if args.fake:
        with fake_server() as url:
            result = run(args, url)
    else:
        result = run(args, args.provider_url)
    if args.json:
        dump_json(result)
    else:
        print_text(result)


if __name__ == "__main__":
    main()
