"""The API fronts' cost: the same requests through ``/v1/chat/completions``,
``/v1/messages`` (Anthropic Messages), ``/v1/responses`` (OpenAI Responses) and
``/v1/completions`` (legacy text completions) of one `llmroute serve`, in front of the
fast fake upstream of gateway_overhead.py.

    .venv/bin/python benchmarks/front_overhead.py [--duration 5] [--concurrency 1,16]
        [--encoder static] [--json]

Each prompt of examples/eval.jsonl is sent in each API's own shape with a pool model
name (routing off, so the fronts' conversion is not hidden behind the encoder) and with
``auto``; ``completions-raw`` sends the completions to a copy of the model declared
``text_completions: true`` (sent raw to the upstream's ``/v1/completions``, the answer
read back through chat shape). The fronts take turns per point, so they share the
machine's load; CPU time per request is the gateway process tree's, as in
gateway_overhead.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from _common import log, machine
from gateway_overhead import PROMPTS, bench_registry, gateway, measure, upstream

FRONTS = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
    "completions": "/v1/completions",
    "completions-raw": "/v1/completions",
}
RAW = "-raw"  # the suffix of the copy of a pool model that continues raw text


def _body(front: str, model: str, text: str) -> dict[str, Any]:
    if front == "messages":
        return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    if front == "responses":
        return {"model": model, "input": text, "max_output_tokens": 64}
    if front == "completions":
        return {"model": model, "prompt": text, "max_tokens": 64}
    if front == "completions-raw":
        return {"model": model + RAW, "prompt": text, "max_tokens": 64}
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}


def bodies(tmp: Path, front: str, model: str) -> Path:
    texts = [json.loads(line)["text"] for line in PROMPTS.read_text().splitlines() if line]
    path = tmp / f"bodies-{front}-{model}.jsonl"
    path.write_text("".join(json.dumps(_body(front, model, t)) + "\n" for t in texts))
    return path


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="llmroute-fronts-"))
    try:
        with upstream() as (up_url, up_pid):
            registry = tmp / "registry.yaml"
            bench_registry(registry, up_url, args.encoder)
            _with_raw_copies(registry)
            with gateway(registry, 1, tmp) as (gw_url, gw_pid):
                for model in ("small", "auto"):
                    for c in (int(x) for x in args.concurrency.split(",")):
                        for front, path in FRONTS.items():
                            if front == "completions-raw" and model == "auto":
                                continue  # routed to the chat models: the completions row
                            body = bodies(tmp, front, model)
                            r = measure(gw_url, body, c, args, gw_pid, up_pid, path=path)
                            row = {"front": front, "model": model, "c": c}
                            row |= {k: r.get(k) for k in ("p50_ms", "p99_ms", "rps", "errors")}
                            row["cpu_ms_per_req"] = r["cpu_ms_per_req"]
                            log(f"  {front:<9} {model:<5} c={c:<3} p50 {r['p50_ms']:.2f} ms "
                                f"{r['rps']:.0f} req/s cpu {r['cpu_ms_per_req']:.3f} ms/req "
                                f"err={r['errors']}")  # fmt: skip
                            rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _with_raw_copies(registry: Path) -> None:
    """Each pool model doubled by one declared ``text_completions: true``."""
    data = yaml.safe_load(registry.read_text(encoding="utf-8"))
    models = data["models"]
    for name in list(models):
        models[name + RAW] = {**models[name], "text_completions": True}
    registry.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | C | front | p50 ms | p99 ms | req/s | gateway CPU ms/req | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['c']} | {r['front']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['rps']:.0f} | {r['cpu_ms_per_req']:.3f} | {r['errors']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated C values")
    parser.add_argument("--encoder", default="static", help="builtin encoder for auto")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap per point")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    # gateway_overhead's `measure` reads `stream` (its --stream); the fronts send plain requests
    parser.set_defaults(stream=False)
    args = parser.parse_args()
    rows = run(args)
    if args.json:
        print(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    else:
        print(table(rows))


if __name__ == "__main__":
    main()
