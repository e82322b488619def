"""`llmroute registry check` (validate a registry and print what it holds),
`llmroute registry test` (run its routing cases), `llmroute registry record` (write
cases that pin today's decisions), `llmroute registry diff` (what a change would do to
real traffic) and `llmroute registry probe` (ask its models' servers whether they can
serve)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from llmroute.cli._app import (
    RegistryOption,
    counted,
    err_console,
    fail,
    registry_app,
    resolve_registry,
)
from llmroute.errors import ConfigError, DataError
from llmroute.jsonl import shown
from llmroute.money import usd

if TYPE_CHECKING:  # the rest is imported where used: `llmroute --help` builds every command
    from llmroute.evaluate.registry_diff import RegistryDiff, TrafficFile
    from llmroute.providers.probe import Probe
    from llmroute.registry import LoadedRegistry
    from llmroute.registry.schema import Registry
    from llmroute.state.redis_check import RedisCheck

REDIS_ROW = "(redis)"  # `registry probe`'s row of a Redis the registry's features use


@registry_app.command("check")
def check(
    path: Annotated[Path, typer.Argument(help="The registry YAML to validate.")],
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when there are warnings (for CI).")
    ] = False,
) -> None:
    """Validate a registry (schema and references), load what it points at (the encoder,
    trained artifacts: a difficulty router, safety detector or reasoning scorer trained
    with another encoder, or missing, fails here as it would at `serve`), print a
    summary, and warn about what is valid but probably unmeant (a llamacpp model's GGUF
    path naming no file; an embeddings encoder's credential variable unset; the same
    example taught as two routes; a route whose models take no images or tools that
    another model of the pool would)."""
    from llmroute.registry import load_registry, summarize
    from llmroute.registry.lint import lint, lint_files
    from llmroute.registry.schema import OpenAIEncoderSpec

    loaded = load_registry(path)
    warnings = []
    if isinstance(loaded.registry.encoder, OpenAIEncoderSpec):
        import os

        from llmroute.assemble import check_encoder_env

        try:  # a warning, as a missing GGUF is: CI checks registries without the secrets
            check_encoder_env(loaded.registry.encoder, os.environ)
        except ConfigError as exc:
            warnings.append(f"{loaded.at(exc)}; `llmroute serve` and `route` stop on it")
        err_console.print(
            "note: the encoder is an embeddings endpoint; its artifacts are checked when "
            "the router is built (`llmroute route`), which calls it"
        )
    else:
        from llmroute.decide import Router

        with err_console.status("loading the encoder and the registry's artifacts"):
            router = Router(loaded)  # a cascade's learned gates load with it, as in `serve`
            router.close()
    # the summary once everything loaded: an artifact's error is not read after it
    for line in summarize(loaded):
        print(line)
    warnings += lint_files(loaded) + [located(loaded, w) for w in lint(loaded.registry)]
    for warning in warnings:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    print(f"ok ({len(warnings)} warning{'s' * (len(warnings) != 1)})" if warnings else "ok")
    if warnings and strict:
        raise typer.Exit(1)


def located(loaded: LoadedRegistry, warning: str) -> str:
    """A lint warning (``routes[1].examples[0]: ...``) at its file and line, as the
    errors and the other warnings of `check` are."""
    field, said, message = warning.partition(": ")
    if not said or " " in field:
        return warning
    return str(loaded.at(ConfigError(message, field=field)))


@registry_app.command("test")
def test(
    cases: Annotated[Path, typer.Argument(help="YAML of routing cases (docs/registry.md).")],
    registry: RegistryOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Run routing cases against a registry: each request and what its decision must be
    (route, model, layer, rule, safety action, reasoning, confidence, fallback chain).
    Offline: no model is called. Exit 1 when a case fails, 2 when a file is invalid."""
    from llmroute.decide import Router
    from llmroute.evaluate.cases import run_cases
    from llmroute.registry.cases import load_cases

    with Router.from_yaml(resolve_registry(registry)) as router:
        loaded = load_cases(cases, router.loaded.registry)
        results = run_cases(router, loaded)
    failed = [r for r in results if not r.passed]
    if as_json:
        payload = {
            "registry": router.loaded.source,
            "registry_version": router.version,
            "passed": len(results) - len(failed),
            "failed": len(failed),
            "cases": [r.to_dict() for r in results],
        }
        print(json.dumps(payload, ensure_ascii=False))
    else:
        for result in results:
            if result.passed:
                print(f"PASS  {result.label}")
                continue
            at = f"{loaded.source}:{result.line}"
            print(f"FAIL  {result.label}" + ("" if result.label == at else f" ({at})"))
            for failure in result.failures:
                print(f"      {failure}")
            if result.decision is not None:
                d = result.decision
                print(f"      decided: {d.route} -> {d.model} by {d.layer} ({d.reason})")
        print(f"{len(results) - len(failed)} of {counted(len(results), 'case')} passed")
    if failed:
        raise typer.Exit(1)


@registry_app.command("record")
def record(
    prompts: Annotated[
        Path,
        typer.Argument(
            help="Prompts: one a line, or JSONL (.jsonl, .ndjson, .json) with 'prompt' or "
            "'text'; '-': standard input, read as JSONL (`llmroute export | ...`)."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Cases YAML to write; '-': standard output."),
    ],
    registry: RegistryOption = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT.")] = False,
) -> None:
    """Write routing cases that pin today's decisions for PROMPTS, one for each distinct prompt
    (route, model, and the rule, safety action and reasoning where they acted): a start
    for `registry test`, to keep what works from changing unnoticed. Review them before
    committing."""
    from llmroute.decide import Router
    from llmroute.dispatch.plan import plan_request
    from llmroute.registry.cases import render_cases

    to_stdout = str(output) == "-"  # the convention, as `export -o -`; not a file named "-"
    if not to_stdout and output.exists() and not force:
        fail(f"{output} exists; pass --force to overwrite it")
    given = _prompts(prompts)
    texts = list(dict.fromkeys(given))  # traffic repeats itself: one case a prompt
    repeats = len(given) - len(texts)
    left_out = f" ({counted(repeats, 'repeated prompt')} left out)" if repeats else ""
    path = resolve_registry(registry)
    decisions = []
    with Router.from_yaml(path) as router:
        for text in texts:
            body = {"messages": [{"role": "user", "content": text}]}
            decisions.append(plan_request(router, body, {}).decision)
    header = (
        f"Recorded by `llmroute registry record {prompts.name}` against "
        f"{router.loaded.source} version {router.version}: what it decided then."
    )
    text = render_cases(header, texts, decisions)
    if to_stdout:  # the YAML alone on stdout; the count beside it on stderr
        sys.stdout.write(text)
        err_console.print(f"recorded {counted(len(texts), 'case')}{left_out}", soft_wrap=True)
        return
    output.write_text(text, encoding="utf-8")
    print(
        f"recorded {counted(len(texts), 'case')} in {output}{left_out}; "
        f"run: llmroute registry test {output} -r {path}"
    )


@registry_app.command("diff")
def diff(
    base: Annotated[Path, typer.Argument(help="The registry as it is (e.g. from main).")],
    new: Annotated[Path, typer.Argument(help="The registry as it would be.")],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="Requests: one a line, or JSONL (.jsonl, .ndjson, .json) with 'prompt' and "
            "optionally 'tokens_in' / 'tokens_out' (what `llmroute export` writes); '-': "
            "standard input, read as JSONL.",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    examples: Annotated[
        int,
        typer.Option(
            "--examples", min=0, help="Requests shown per move, cut to 80 characters (0: none)."
        ),
    ] = 2,
    max_moved: Annotated[
        float | None,
        typer.Option(
            "--max-moved",
            min=0.0,
            max=1.0,
            help="Exit 1 when a larger share of the requests would be served by another "
            "model (for CI).",
        ),
    ] = None,
) -> None:
    """What a registry change would do to real traffic: route both registries over the
    same requests (offline; no model is called) and show the requests that move between
    routes and models, each model's share, what safety and the reasoning gate would do
    differently, and the cost at each registry's prices where token counts are given."""
    from llmroute.decide import Router
    from llmroute.evaluate.registry_diff import diff_registries, read_traffic

    traffic = read_traffic(data)
    if not traffic.requests:
        fail(f"{shown(data)}: none of its rows can be replayed ({_unreplayed(traffic)})")
    with Router.from_yaml(base) as before, Router.from_yaml(new) as after:
        result = diff_registries(before, after, traffic.requests, examples=examples)
        if as_json:
            payload = {
                "base": {"registry": before.loaded.source, "version": before.version},
                "new": {"registry": after.loaded.source, "version": after.version},
                "skipped": {"without_text": traffic.without_text, "pinned": traffic.pinned},
                **result.to_dict(),
            }
            print(json.dumps(payload, ensure_ascii=False))
        else:
            print(f"base: {before.loaded.source} (version {before.version})")
            print(f"new:  {after.loaded.source} (version {after.version})")
            _print_diff(result, traffic, data)
    if max_moved is not None and result.model_changed_share > max_moved:
        err_console.print(
            f"{result.model_changed_share:.1%} of the requests would be served by another "
            f"model (--max-moved {max_moved:.1%})"
        )
        raise typer.Exit(1)


def _unreplayed(traffic: TrafficFile) -> str:
    return (
        f"{traffic.without_text} without a stored prompt, {traffic.pinned} pinned by the "
        "client to a route or model"
    )


def _print_diff(result: RegistryDiff, traffic: TrafficFile, data: Path) -> None:
    skipped = traffic.without_text + traffic.pinned
    print(
        f"{counted(result.n, 'request')} from {shown(data)}"
        + (f" ({skipped} not replayed: {_unreplayed(traffic)})" if skipped else "")
    )

    def share(count: int) -> str:
        return f"{count} ({count / result.n:.1%})"

    print(f"route changed: {share(result.route_changed)}")
    print(f"model changed: {share(result.model_changed)}")
    for title, moves in (("routes", result.route_moves), ("models", result.model_moves)):
        if not moves:
            continue
        print(f"{title} moved (base -> new):")
        for move in moves:
            print(f"  {move.before} -> {move.after}: {move.count}")
            for example in move.examples:
                print(f"      {json.dumps(example, ensure_ascii=False)}")
    names = list(dict.fromkeys([*result.models_before, *result.models_after]))
    width = max(len("model"), *(len(n) for n in names))
    print("share of the requests:")
    print(f"  {'model':<{width}}    base     new")
    for name in names:
        b, a = result.models_before.get(name, 0), result.models_after.get(name, 0)
        print(f"  {name:<{width}}  {b / result.n:6.1%}  {a / result.n:6.1%}")
    if result.safety_before != result.safety_after:
        actions = list(dict.fromkeys([*result.safety_before, *result.safety_after]))
        changes = ", ".join(
            f"{a} {result.safety_before.get(a, 0)} -> {result.safety_after.get(a, 0)}"
            for a in actions
        )
        print(f"safety: {changes}")
    if result.thinking_before != result.thinking_after:
        print(f"extended thinking: {result.thinking_before} -> {result.thinking_after}")
    if result.priced:
        before, after = result.cost_before_usd, result.cost_after_usd
        change = f" ({(after - before) / before:+.1%})" if before else ""
        print(
            f"cost of the {counted(result.priced, 'request')} with token counts: {usd(before)} -> "
            f"{usd(after)}{change} (their logged token counts at each registry's prices)"
        )
    else:
        print("cost: no token counts in the data (tokens_in / tokens_out)")


@registry_app.command("probe")
def probe(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Pool models to probe (default: all, and a remote encoder).",
            metavar="MODEL",
            show_default=False,
        ),
    ] = None,
    registry: RegistryOption = None,
    chat: Annotated[
        bool,
        typer.Option(
            "--chat",
            help="Also ask each model one short question (a one-word answer): proves it "
            "answers; spends a few tokens.",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds each call may take.")
    ] = 30.0,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 on warnings too (a model not listed).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Check that the registry's models can be reached before they serve: each
    provider's server answers, its credentials are accepted, and it lists each model's
    name (GET /models, which costs nothing); with --chat each model is also asked one
    short question. Without MODEL, also each Redis its features keep state in (PING;
    warned about when a round trip outlasts a feature's timeout_s). Exit 1 when a model
    or a Redis fails (with --strict, also when one is only warned
    about), 2 when the registry is invalid."""
    import asyncio
    import os

    from llmroute.providers.probe import probe_pool
    from llmroute.registry import load_registry

    names = list(dict.fromkeys(models or []))
    files = [n for n in names if n.endswith((".yaml", ".yml"))]
    if files:  # `registry check FILE` takes the file as its argument; probe takes models
        fail(
            f"{files[0]!r} is a file, and probe's arguments are model names: "
            f"llmroute registry probe --registry {files[0]} [MODEL...]"
        )
    loaded = load_registry(resolve_registry(registry))
    unknown = [name for name in names if name not in loaded.registry.models]
    if unknown:
        fail(
            f"not a pool model of {loaded.source}: {', '.join(unknown)} "
            f"(it has {', '.join(loaded.registry.models)})"
        )

    async def run() -> list[Probe]:
        found = await probe_pool(
            loaded.registry,
            models=names,
            chat=chat,
            timeout_s=timeout,
            environ=os.environ,
            base_dir=loaded.base_dir,
        )
        return found if names else found + await _redis_probes(loaded.registry, timeout)

    try:
        results = asyncio.run(run())
    except ConfigError as exc:  # a client this environment cannot build: as serve says it
        raise loaded.at(exc) from None
    counts = {status: sum(r.status == status for r in results) for status in ("ok", "warn", "fail")}
    if as_json:
        print(
            json.dumps(
                {
                    "registry": loaded.source,
                    "chat": chat,
                    **counts,
                    "probes": [r.as_json() for r in results],
                },
                indent=2,
            )
        )
    else:
        _print_probes(results)
        print(f"{counts['ok']} ok, {counts['warn']} warned, {counts['fail']} failed")
    if counts["fail"] or (strict and counts["warn"]):
        raise typer.Exit(1)


async def _redis_probes(registry: Registry, timeout_s: float) -> list[Probe]:
    """A row per Redis URL the registry's features open (`REDIS_ROW`), checked as the
    gateway checks them when it loads the registry: connected to, its db selected, and
    asked ``PING``. One that cannot be used fails (the gateway would serve without it,
    each feature as when Redis is down)."""
    import asyncio

    from llmroute.providers.probe import Probe
    from llmroute.state.redis_check import check_redis, redis_uses

    checks = await asyncio.gather(*(check_redis(u, timeout_s) for u in redis_uses(registry)))
    return [
        Probe(
            REDIS_ROW,
            "redis",
            ", ".join(check.use.settings),
            check.use.masked,
            "fail" if check.problem is not None else "warn" if check.outlasted else "ok",
            check.problem or _answered(check),
            latency_ms=None if check.problem is not None else check.latency_ms,
        )
        for check in checks
    ]


def _answered(check: RedisCheck) -> str:
    """A Redis that answered: in how long, and (a warning) which features' ``timeout_s``
    its round trip outlasts, as the gateway's start says it."""
    said = f"answered in {check.latency_ms:.0f} ms"
    if check.outlasted:
        said += (
            f", but {check.outlasted_text()}: calls slower than that time out, each taken "
            "for Redis down"
        )
    return said


def _print_probes(results: list[Probe]) -> None:
    """Two lines a probe: the status, model and where it is served; then what happened
    (indented), which stays readable in a narrow terminal."""
    from rich.console import Console

    style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    console = Console(highlight=False, soft_wrap=True, emoji=False)
    width = max(len(r.model) for r in results) if results else 0
    for r in results:
        served_as = f" (answered as {r.served_as})" if r.served_as else ""
        console.print(
            f"[{style[r.status]}]{r.status:<4}[/]  {escape(r.model.ljust(width))}  "
            f"{escape(r.provider)} / {escape(r.upstream)} at {escape(r.where)}"
        )
        console.print(f"      {escape(r.detail + served_as)}")


def _prompts(path: Path) -> list[str]:
    """Non-blank lines of a text file, or the `prompt` / `text` of each JSONL object."""
    from llmroute.jsonl import is_jsonl, read_jsonl, read_lines

    if is_jsonl(path):
        return read_jsonl(path, _prompt_of, what="prompts", empty="no prompts in the file")
    lines = [line for line in read_lines(path, what="prompts") if line.strip()]
    if not lines:
        fail(f"{path}: no prompts in the file")
    return lines


def _prompt_of(record: dict[str, Any], file: str, line: int) -> str:
    value = record.get("prompt", record.get("text"))
    if value is None and "prompt_hash" in record:  # an `llmroute export` row
        raise DataError(
            "its prompt was not kept by the decision log (telemetry.prompts: hash, or a "
            "blocked request): export with --with-text for the rows that have one",
            file=file,
            line=line,
        )
    if not isinstance(value, str) or not value.strip():
        raise DataError("needs a non-empty 'prompt' (or 'text') string", file=file, line=line)
    return value
