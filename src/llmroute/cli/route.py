"""`llmroute route`: decide for one prompt, or for prompts on stdin (JSON lines out)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from llmroute.cli._app import RegistryOption, app, err_console, fail, resolve_registry
from llmroute.errors import ConfigError
from llmroute.jsonl import STDIN, shown, text_lines
from llmroute.untrusted_json import has_surrogate

if TYPE_CHECKING:  # imported where used: `llmroute --help` builds every command
    from llmroute.decide import Router
    from llmroute.decision import Decision
    from llmroute.dispatch.plan import Plan
    from llmroute.layers.base import DecisionLayer
    from llmroute.registry.schema import ApiKey, LlmFallback

    Refine = Callable[[Decision, str], Decision]

_BATCH = 64
_STDIN = shown(STDIN)  # a line of it named as a file's: "<stdin>:3: ..."
_PROGRESS_AFTER = 200


@app.command()
def route(
    text: Annotated[
        str | None,
        typer.Argument(
            help="The prompt. Omit it (or pass '-') to read prompts from stdin, one a line: one "
            "JSON line out for each line in, a blank one too (an empty prompt), so they line up."
        ),
    ] = None,
    registry: RegistryOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Show each layer, the top routes, the margin and the fallback chain.",
        ),
    ] = False,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            metavar="NAME",
            help="Decide a request for model NAME, read as the gateway reads a chat request's "
            "model: auto (routed), a route (pinned), a pool model (pinned), "
            "router-<kind>-<threshold> (the difficulty router alone), or an alias of one.",
        ),
    ] = "auto",
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            metavar="NAME",
            help="Decide as the gateway does for client key NAME (auth.keys[].name): its "
            "requests stay inside its pool.",
        ),
    ] = None,
    no_llm: Annotated[
        bool,
        typer.Option("--no-llm", help="Skip the LLM router (llm_fallback): decide offline."),
    ] = False,
) -> None:
    """Decide which route and model would serve a prompt. No model is called, except the
    registry's LLM router (llm_fallback) when the intent layer is unsure; --no-llm skips it."""
    if text is not None and has_surrogate(text):  # argv bytes Python could not decode
        fail("the prompt is not valid UTF-8; convert it first")
    from llmroute.decide import Router

    with Router.from_yaml(resolve_registry(registry)) as router:
        _route(router, text, as_json, explain, model, key, no_llm)


def _route(
    router: Router,
    text: str | None,
    as_json: bool,
    explain: bool,
    model: str,
    key: str | None,
    no_llm: bool,
) -> None:
    client = None if key is None else _client_key(router, key)
    if client is not None:
        _check_models(router, client, model)
    layers = _model_layers(router, model)
    llm = None if no_llm else _llm_settings(router, client)
    with _llm_refiner(router, llm) as refine:
        if text is None or text == "-":
            _route_stdin(router, explain, refine, llm, client, layers)
            return
        decision = router.decide(text, layers=layers)
        if refine is not None:
            decision = refine(decision, text)
    plan = _plan(router, decision, text, client)
    if as_json:
        print(json.dumps(plan.to_dict(), ensure_ascii=False))
    elif explain:
        _print_explain(router, plan, llm)
    else:
        print(_one_line(plan.decision))


def _client_key(router: Router, name: str) -> ApiKey:
    from llmroute.registry._paths import did_you_mean

    auth = router.loaded.registry.auth
    keys = () if auth is None else auth.keys
    for key in keys:
        if key.name == name:
            return key
    owner = next((key.name for key in keys if _is_secret_of(key, name)), None)
    if owner is not None:  # never echoed: stderr may be a CI log
        fail(
            "--key takes a client key's name (auth.keys[].name), not the key itself: "
            f"this one is key {owner!r}'s, use --key {owner}"
        )
    # Never echoed either: a value that is none of the registry's key names may be a
    # key this command cannot match (its key_env unset here, another registry's), and
    # no shape tells a short one (``abc123``) from a name. The names are listed, and a
    # near miss named: both are the registry's, not the value's.
    known = ", ".join(k.name for k in keys) or "none: the registry has no auth section"
    fail(
        f"--key: that is not a key name in {router.loaded.source} (auth.keys[].name; the "
        f"value given is not shown: it may be a key itself) (keys: {known})"
        + did_you_mean(name, [k.name for k in keys])
    )


def _check_models(router: Router, client: ApiKey, model: str) -> None:
    """Fail as the gateway's 403 ``model_not_allowed`` does when `client`'s ``models``
    do not let it send `model`, the request this command decides (the gateway would
    never route it for that key); checked before the name itself, as the gateway does."""
    refusal = client.model_refusal(model, router.loaded.registry.resolve_alias(model))
    if refusal is not None:
        fail(
            f"--key {client.name}: {refusal} (the gateway refuses this key a request for "
            "it: 403 model_not_allowed; --model NAME decides a request for NAME)"
        )


def _model_layers(router: Router, model: str) -> tuple[DecisionLayer, ...] | None:
    """`model` read as the gateway reads a request's (`model_layers`); a name it does
    not serve fails with the gateway's 404 message."""
    from llmroute.dispatch.plan import model_layers
    from llmroute.errors import ModelNotFound

    try:
        return model_layers(router, model)
    except ModelNotFound as exc:
        fail(f"--model: {exc}")


def _is_secret_of(key: ApiKey, value: str) -> bool:
    """Whether `value` is `key` itself: the value of one of its ``key_env`` variables
    (where this command runs), or one its ``sha256`` hashes."""
    import hashlib
    import os

    if not value.strip():  # an unset variable is no key
        return False
    if any(os.environ.get(env, "").strip() == value for env in key.key_env or ()):
        return True
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()
    return digest in {h.lower() for h in key.sha256 or ()}


def _plan(
    router: Router, decision: Decision, text: str, client: ApiKey | None, line: int = 0
) -> Plan:
    """The plan dispatch would follow (`plan_of`), inside `client`'s pool when it has one
    (`keep_within`, as the gateway keeps it there: a fall to the default with its safety
    policy and reasoning tier); a plan nothing inside may serve fails as the gateway's
    403 does."""
    from llmroute.dispatch.plan import keep_within, plan_of

    plan = plan_of(router, decision)
    if client is None or client.pool is None:
        return plan
    kept = keep_within(router, plan, client.pool, client.name, text, {})
    if isinstance(kept, str):
        fail((f"{_STDIN}:{line}: " if line else "") + kept)
    return kept


def _llm_settings(router: Router, client: ApiKey | None) -> LlmFallback | None:
    """The LLM router's settings when it is on, and its model inside `client`'s pool
    (the gateway does not ask it for such a key's requests)."""
    settings = router.loaded.registry.llm_fallback
    if settings is None or not settings.enabled:
        return None
    if client is not None and client.pool is not None and settings.model not in client.pool:
        return None
    return settings


@contextmanager
def _llm_refiner(router: Router, settings: LlmFallback | None) -> Iterator[Refine | None]:
    """With `settings`, a function that refines a decision with the LLM router (its own
    providers and dispatcher, on one event loop kept for every prompt); else None."""
    if settings is None:
        yield None
        return
    # Imported here: the event loop, providers and dispatch only serve an LLM router.
    import asyncio

    from llmroute.dispatch import Dispatcher
    from llmroute.layers.llm_router import LlmRouter, refine_decision
    from llmroute.providers import build_providers

    loaded = router.loaded
    registry = loaded.registry

    async def start() -> LlmRouter:
        providers = build_providers(registry, base_dir=loaded.base_dir)
        return LlmRouter(settings, registry, Dispatcher(registry, providers))

    with asyncio.Runner() as runner:
        try:
            llm = runner.run(start())
        except ConfigError as exc:  # a client this environment cannot build: as serve says it
            raise loaded.at(exc) from None
        try:
            yield lambda decision, text: runner.run(refine_decision(llm, router, decision, text))
        finally:
            runner.run(llm.dispatcher.aclose())


def _route_stdin(
    router: Router,
    explain: bool,
    refine: Refine | None,
    llm: LlmFallback | None,
    client: ApiKey | None,
    layers: tuple[DecisionLayer, ...] | None,
) -> None:
    prompts = _read_stdin_lines()
    show_progress = len(prompts) >= _PROGRESS_AFTER and err_console.is_terminal
    outcomes: Counter[str] = Counter()
    with Progress(console=err_console, transient=True, disable=not show_progress) as progress:
        task = progress.add_task("routing", total=len(prompts))
        for start, chunk in _chunks(prompts, _BATCH):
            for number, text, decision in zip(
                range(start + 1, start + len(chunk) + 1),
                chunk,
                router.decide_many(chunk, layers=layers),
                strict=True,
            ):
                if refine is not None:
                    decision = refine(decision, text)
                    outcome = _llm_outcome(decision)
                    if outcome is not None:
                        outcomes[outcome] += 1
                plan = _plan(router, decision, text, client, number)
                if explain:
                    _print_explain(router, plan, llm)
                else:
                    sys.stdout.write(json.dumps(plan.to_dict(), ensure_ascii=False) + "\n")
            progress.advance(task, len(chunk))
    if explain and llm is not None and prompts:
        Console(highlight=False, soft_wrap=True, emoji=False).print(
            escape(_llm_share(llm, outcomes, len(prompts)))
        )
    sys.stdout.flush()


def _llm_outcome(decision: Decision) -> str | None:
    from llmroute.layers.llm_router import llm_router_signal

    signal = llm_router_signal(decision)
    return None if signal is None else str(signal.detail.get("outcome"))


def _llm_share(llm: LlmFallback, outcomes: Counter[str], total: int) -> str:
    """The share of the requests that reached the LLM router, and what came of them."""
    asked = sum(outcomes.values())
    detail = ", ".join(f"{name} {n}" for name, n in sorted(outcomes.items()))
    return (
        f"llm router ({llm.model}) asked for {asked} of {total} requests "
        f"({asked / total:.1%})" + (f": {detail}" if detail else "")
    )


def _read_stdin_lines() -> list[str]:
    if sys.stdin.isatty():  # typed at a terminal: say why nothing happens until Ctrl-D
        err_console.print(
            "reading prompts from the terminal, one a line; end with Ctrl-D "
            '(or give one prompt: llmroute route "...")',
            soft_wrap=True,
        )
    raw = sys.stdin.buffer.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        fail(f"{_STDIN}:{line}: not valid UTF-8 (byte offset {exc.start}); convert it first")
    lines = text_lines(text)
    for number, line in enumerate(lines, start=1):
        if "\r" in line:  # prompts "\r"-separated would be routed, silently, as one
            fail(
                f"{_STDIN}:{number}: holds a carriage return (\\r) that ends no line: lines "
                "end with \\n (or \\r\\n), and text whose lines end with \\r alone (classic "
                "Mac OS) reads as one line; convert it on the way in (... | tr '\\r' '\\n' | "
                "llmroute route ...)"
            )
    return lines


def _chunks(items: Sequence[str], size: int) -> Iterator[tuple[int, Sequence[str]]]:
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def _one_line(decision: Decision) -> str:
    """The decision in a line; a request the safety layer blocks says so (it read as
    routed to its model, which the gateway never calls: it answers 400)."""
    margin = "" if decision.margin is None else f", margin {decision.margin:.2f}"
    line = (
        f"{decision.route} -> {decision.model}  "
        f"({decision.layer}, confidence {decision.confidence:.2f}{margin})"
    )
    if decision.blocked and decision.safety is not None:
        safety = decision.safety
        line += f"  BLOCKED by safety (profile {safety.profile}: {', '.join(safety.fired)})"
    return line


def _print_explain(router: Router, plan: Plan, llm: LlmFallback | None = None) -> None:
    from llmroute.decision import Outcome

    decision = plan.decision
    console = Console(highlight=False, soft_wrap=True, emoji=False)
    console.print(f"[bold]{escape(_one_line(decision))}[/]")
    console.print(f"reason: {escape(decision.reason)}")
    layers = Table("layer", "outcome", "µs", "signal", box=None, pad_edge=False)
    for signal in decision.signals:
        layers.add_row(
            signal.layer,
            signal.outcome.value,
            "" if signal.outcome is Outcome.SKIPPED else f"{signal.elapsed_us:.0f}",
            escape(_signal_text(signal.verdict.reason if signal.verdict else None, signal.detail)),
        )
    console.print(layers)
    if decision.candidates:
        top = Table("route", "score", "threshold", box=None, pad_edge=False)
        for cand in decision.candidates:
            top.add_row(cand.route, f"{cand.score:.3f}", f"{cand.threshold:.2f}")
        console.print(top)
    if decision.safety is not None and decision.safety.action != "allow":
        safety = decision.safety
        console.print(
            f"[bold]safety: {safety.action.upper()}[/] (profile {escape(safety.profile)}: "
            f"{escape(', '.join(safety.fired))})"
        )
    if decision.reasoning is not None:
        gate = decision.reasoning
        tier = ""
        if gate.tier and gate.tier == decision.model:
            tier = f", served by {gate.tier}"
        elif gate.tier:  # safety sent the request elsewhere
            tier = f", its tier {gate.tier} overridden by safety"
        verdict = "needed" if gate.needed else "not needed"
        console.print(f"reasoning: {verdict}{tier} ({escape(gate.reason)})")
    for signal in decision.signals:
        oos = signal.detail.get("out_of_scope")
        if isinstance(oos, float):
            console.print(f"out-of-scope class score {oos:.3f} (a route must beat it)")
    if llm is not None:
        console.print(escape(_llm_line(decision, llm)))
    console.print(escape(_fallbacks_line(router, plan)))
    margin = "n/a" if decision.margin is None else f"{decision.margin:.3f}"
    console.print(
        f"margin {margin} · encode {decision.encode_us:.0f} µs · total "
        f"{decision.total_us:.0f} µs · registry {decision.registry_version} · id {decision.id}"
    )


def _fallbacks_line(router: Router, plan: Plan) -> str:
    """The models dispatch would try after the first, or why it would try none."""
    from llmroute.dispatch.plan import alone_because

    if plan.fallbacks:
        tiers = " (the cascade's tiers, escalated to)" if plan.cascade is not None else ""
        return f"fallbacks: {' -> '.join(plan.fallbacks)}{tiers}"
    return f"fallbacks: none ({alone_because(plan, router.loaded.registry)})"


def _llm_line(decision: Decision, llm: LlmFallback) -> str:
    """Whether the LLM router was asked, and what came of it."""
    from llmroute.layers.llm_router import llm_router_signal

    signal = llm_router_signal(decision)
    if signal is not None:
        outcome = signal.detail.get("outcome")
        answer = signal.detail.get("answer")
        said = "" if answer is None else f", answered {answer!r}"
        return f"llm router ({llm.model}): {outcome}{said} in {signal.elapsed_us / 1000:.0f} ms"
    if decision.blocked:  # before the margin: a blocked request may have a small one
        why = "blocked by safety"
    elif decision.safety is not None and decision.safety.model is not None:
        why = f"sent by safety to {decision.safety.model}"
    elif decision.layer == "intent" and decision.margin is not None:
        why = f"margin {decision.margin:.3f} >= {llm.margin:g}"
    elif decision.layer == "default" and any(
        s.detail.get("reason") == "empty prompt" for s in decision.signals
    ):  # intent (and difficulty) pass on one: nothing to route
        why = "empty prompt"
    elif decision.layer == "default":
        why = "no route near its threshold, or out of scope"
    else:
        why = f"decided by {decision.layer}"
    return f"llm router ({llm.model}): not asked ({why})"


def _signal_text(reason: str | None, detail: Mapping[str, Any]) -> str:
    if reason:
        return reason
    for key in ("reason", "summary"):  # guards summarise in "summary" (not a pass reason)
        got = detail.get(key)
        if isinstance(got, str):
            return got
    return ""
