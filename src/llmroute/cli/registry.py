"""`llmroute registry check` (validate a registry and print what it holds),
`llmroute registry test` (run its routing cases), `llmroute registry record` (write
cases that pin today's decisions) and `llmroute registry probe` (ask its models' servers
whether they can serve)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from llmroute.cli._app import RegistryOption, err_console, fail, registry_app, resolve_registry
from llmroute.errors import DataError
from llmroute.registry import load_registry, summarize
from llmroute.registry.lint import lint

if TYPE_CHECKING:
    from llmroute.providers.probe import Probe


@registry_app.command("check")
def check(
    path: Annotated[Path, typer.Argument(help="The registry YAML to validate.")],
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when there are warnings (for CI).")
    ] = False,
) -> None:
    """Validate a registry (schema and references), print a summary, and warn about what
    is valid but probably unmeant (the same example taught as two routes)."""
    loaded = load_registry(path)
    for line in summarize(loaded):
        print(line)
    warnings = lint(loaded.registry)
    for warning in warnings:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    print(f"ok ({len(warnings)} warning{'s' * (len(warnings) != 1)})" if warnings else "ok")
    if warnings and strict:
        raise typer.Exit(1)


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

    router = Router.from_yaml(resolve_registry(registry))
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
        print(f"{len(results) - len(failed)} of {len(results)} cases passed")
    if failed:
        raise typer.Exit(1)


@registry_app.command("record")
def record(
    prompts: Annotated[
        Path,
        typer.Argument(help="Prompts: one a line, or JSONL with 'prompt' or 'text'."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Cases YAML to write.")],
    registry: RegistryOption = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT.")] = False,
) -> None:
    """Write routing cases that pin today's decisions for PROMPTS (route, model, and the
    rule, safety action and reasoning where they acted): a start for `registry test`,
    to keep what works from changing unnoticed. Review them before committing."""
    from llmroute.decide import Router
    from llmroute.dispatch.plan import plan_request
    from llmroute.registry.cases import render_cases

    if output.exists() and not force:
        fail(f"{output} exists; pass --force to overwrite it")
    texts = _prompts(prompts)
    path = resolve_registry(registry)
    router = Router.from_yaml(path)
    decisions = []
    for text in texts:
        body = {"messages": [{"role": "user", "content": text}]}
        decisions.append(plan_request(router, body, {}).decision)
    header = (
        f"Recorded by `llmroute registry record {prompts.name}` against "
        f"{router.loaded.source} version {router.version}: what it decided then."
    )
    output.write_text(render_cases(header, texts, decisions), encoding="utf-8")
    print(
        f"recorded {len(texts)} cases in {output}; run: llmroute registry test {output} -r {path}"
    )


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
    short question. Exit 1 when a model fails (with --strict, also when one is only
    warned about), 2 when the registry is invalid."""
    import asyncio
    import os

    from llmroute.providers.probe import probe_pool

    loaded = load_registry(resolve_registry(registry))
    names = list(dict.fromkeys(models or []))
    unknown = [name for name in names if name not in loaded.registry.models]
    if unknown:
        fail(
            f"not a pool model of {loaded.source}: {', '.join(unknown)} "
            f"(it has {', '.join(loaded.registry.models)})"
        )
    results = asyncio.run(
        probe_pool(
            loaded.registry,
            models=names,
            chat=chat,
            timeout_s=timeout,
            environ=os.environ,
            base_dir=loaded.base_dir,
        )
    )
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


def _print_probes(results: list[Probe]) -> None:
    """Two lines a probe: the status, model and where it is served; then what happened
    (indented), which stays readable in a narrow terminal."""
    from rich.console import Console

    style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    console = Console(highlight=False, soft_wrap=True)
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
    from llmroute.jsonl import read_jsonl

    if path.suffix == ".jsonl":
        return read_jsonl(path, _prompt_of, what="prompts", empty="no prompts in the file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read the prompts: {exc}")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        fail(f"{path}: no prompts in the file")
    return lines


def _prompt_of(record: dict[str, Any], file: str, line: int) -> str:
    value = record.get("prompt", record.get("text"))
    if not isinstance(value, str) or not value.strip():
        raise DataError("needs a non-empty 'prompt' (or 'text') string", file=file, line=line)
    return value
