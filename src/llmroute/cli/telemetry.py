"""Analysis over the decision log: `llmroute drift`, `llmroute refresh`, `llmroute report`
and `llmroute report shadow`.

The log is found by ``--url``, else ``$LLMROUTE_TELEMETRY_URL``, else the registry's
``telemetry.url``; any password in it is masked in what is printed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmroute.cli._app import (
    RegistryOption,
    app,
    check_plot_path,
    check_telemetry_url,
    counted,
    err_console,
    fail,
    find_registry,
    resolve_registry,
    unknown_client,
)
from llmroute.json_values import json_safe
from llmroute.money import dollars
from llmroute.telemetry.windows import Window, WindowError, parse_window

if TYPE_CHECKING:
    from llmroute.decide import Router
    from llmroute.evaluate.data import LabelledRow
    from llmroute.registry import LoadedRegistry
    from llmroute.telemetry.drift import DriftReport
    from llmroute.telemetry.record import LoggedDecision
    from llmroute.telemetry.refresh import RefreshProposal, RoutingChange
    from llmroute.telemetry.report import GroupStats, Report
    from llmroute.telemetry.shadow_report import ShadowReport
    from llmroute.telemetry.store import Store

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Decision log URL (default: $LLMROUTE_TELEMETRY_URL, else the registry's "
        "telemetry.url).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
TagOption = Annotated[
    str | None,
    typer.Option("--tag", help="Only requests with this x-llmroute-tags tag.", show_default=False),
]
ClientOption = Annotated[
    str | None,
    typer.Option(
        "--client",
        help="Only requests of this client key ('': those made without a key).",
        show_default=False,
    ),
]


class Api(StrEnum):
    """--api's values: the decision log's ``api`` column, and none (rows without one)."""

    chat = "chat"
    messages = "messages"
    responses = "responses"
    completions = "completions"
    embeddings = "embeddings"
    rerank = "rerank"
    none = "none"


ApiOption = Annotated[
    Api | None,
    typer.Option(
        "--api",
        help="Only requests that came by this API: chat, messages, responses, completions, "
        "embeddings, rerank (none: the rows without one: the SDK's, /v1/route, older rows).",
        show_default=False,
    ),
]

report_app = typer.Typer(
    help="What routing did over a window of the decision log (see also: report shadow).",
    invoke_without_command=True,
)
app.add_typer(report_app, name="report")


# The width the tables get when written to a pipe or a file, which has none: wide enough
# that no column is squeezed (rich otherwise takes 80 and cuts figures: `0.00000…`).
UNBOUNDED_WIDTH = 1000


def _console() -> Console:
    console = Console(highlight=False, soft_wrap=True, emoji=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = UNBOUNDED_WIDTH
    return console


def _print_json(payload: dict[str, Any]) -> None:
    """One JSON object on stdout; an undefined rate is written as null, not a bare NaN."""
    print(json.dumps(json_safe(payload), ensure_ascii=False, allow_nan=False))


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _usd(value: float | None) -> str:
    """Dollars as `llmroute.money.dollars` writes them (``0.0015``, ``0.001`` for
    $0.0009996, ``0.0000006``): the digits budget messages and the dashboard show."""
    return "n/a" if value is None else dollars(value)


def _window(text: str, option: str, now: float | None = None) -> Window:
    try:
        return parse_window(text, now=now)
    except WindowError as exc:
        fail(f"{option}: {exc}")


# -- finding the log ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Log:
    store: Store
    shown: str  # the URL, password masked
    empty_reason: str | None  # why there is nothing to read, when there is nothing


def _load(registry: Path | None) -> LoadedRegistry:
    from llmroute.registry import load_registry

    return load_registry(resolve_registry(registry))


def _load_for_log(registry: Path | None) -> LoadedRegistry | None:
    """The registry, when it is given or found (``$LLMROUTE_REGISTRY``,
    ``./registry.yaml``): it names the log unless ``--url`` or the environment does, prices
    the models, names the strongest and sets the drift bounds; the log alone still makes
    a report (defaults for the bounds). None found and no log named: `_url` says how to
    name the log, which is what these commands read (it said "no registry given")."""
    found = find_registry(registry)
    return _load(found) if found is not None else None


def _unknown_client(client: str | None, loaded: LoadedRegistry | None) -> str:
    return unknown_client(client, loaded.registry if loaded is not None else None)


def _url(url: str | None, loaded: LoadedRegistry | None) -> str:
    from llmroute.registry.schema import TelemetrySettings
    from llmroute.telemetry.store import ENV_VAR, resolve_telemetry_url
    from llmroute.telemetry.store.url import sqlite_path

    if url is not None and url.strip():
        return check_telemetry_url(url.strip(), "--url")
    settings = loaded.registry.telemetry if loaded is not None else TelemetrySettings()
    if loaded is None and not os.environ.get(ENV_VAR):
        default = TelemetrySettings().url  # where a gateway started here logs by default
        found = (
            f"; the log a gateway writes by default is in this folder: --url {default}"
            if Path(sqlite_path(default)).is_file()
            else ""
        )
        fail(
            f"no decision log given: pass --url URL, set ${ENV_VAR}, or pass --registry FILE "
            f"(its telemetry.url){found}"
        )
    resolved = resolve_telemetry_url(settings)
    if resolved is None:
        fail(
            f"the decision log is off (telemetry.enabled is false, or {ENV_VAR} is off): "
            "pass --url URL"
        )
    # the registry's telemetry.url was checked at its load, with its file and line
    return resolved if ENV_VAR not in os.environ else check_telemetry_url(resolved, f"${ENV_VAR}")


@contextmanager
def _open_log(url: str) -> Iterator[Log]:
    from llmroute.telemetry.store import mask_url, open_store
    from llmroute.telemetry.store.migrate import latest_version
    from llmroute.telemetry.store.url import sqlite_path

    shown = mask_url(url)
    reason = None
    if url.lower().startswith("sqlite:"):
        path = sqlite_path(url)
        if path != ":memory:" and not Path(path).exists():
            reason = f"no decision log at {os.path.abspath(path)} yet"
    store = open_store(url)
    try:
        if reason is None:
            version = store.schema_version()
            if version == 0:
                reason = "the decision log has no tables yet (run `llmroute db upgrade`)"
            elif version < latest_version(store.backend):
                # a log copied off an older gateway: its queries would fail on a column
                # it does not have yet (a raw SQL error)
                fail(
                    f"the decision log at {shown} has schema version {version}, this llmroute "
                    f"reads version {latest_version(store.backend)}: run `llmroute db upgrade "
                    "--url URL` on it (or on a copy) first"
                )
        yield Log(store, shown, reason)
    finally:
        store.close()


def _narrowed(
    decisions: list[LoggedDecision],
    tag: str | None,
    client: str | None,
    api: str | None = None,
) -> list[LoggedDecision]:
    """The decisions with `tag` among their tags, of the key `client` ('': made without
    one, as `db forget` reads it) and that came by `api` (None: any)."""
    return [
        d
        for d in decisions
        if (tag is None or tag in d.tags)
        and (client is None or d.client == (client or None))
        and (api is None or d.api == (None if api == "none" else api))
    ]


def _empty(
    log: Log,
    what: str,
    as_json: bool,
    payload: dict[str, Any] | None = None,
    outcome: str = "nothing to report",
) -> None:
    # a log that is not there says so alone ("... in the last 24h" read as if it were)
    message = log.empty_reason or f"no decisions in {what}"
    if as_json:
        _print_json({"url": log.shown, "empty": True, "message": message, **(payload or {})})
    else:
        _console().print(f"{escape(log.shown)}: {escape(message)}; {escape(outcome)}")


# -- drift --------------------------------------------------------------------------------


@app.command("drift")
def drift_command(
    registry: RegistryOption = None,
    url: UrlOption = None,
    baseline: Annotated[
        str, typer.Option("--baseline", help="The reference window, e.g. 14d..7d.")
    ] = "14d..7d",
    recent: Annotated[str, typer.Option("--recent", help="The window to check, e.g. 7d.")] = "7d",
    as_json: JsonOption = False,
) -> None:
    """Flag routes whose margins decayed between two windows (exit 1 when any did)."""
    from llmroute.registry.schema import DriftSettings
    from llmroute.telemetry.drift import drift_report

    now = time.time()
    old, new = _window(baseline, "--baseline", now), _window(recent, "--recent", now)
    if old.end > new.since:
        # drift measured against the same decisions (or backwards) is never flagged: in
        # cron or CI `--baseline 7d --recent 7d` would pass for ever
        fail(
            f"--baseline {old.describe()} does not end before --recent {new.describe()} "
            "starts: give a baseline that ends where the recent window starts or before "
            "(e.g. --baseline 14d..7d --recent 7d)"
        )
    loaded = _load_for_log(registry)
    settings = loaded.registry.drift if loaded is not None else DriftSettings()
    with _open_log(_url(url, loaded)) as log:
        if log.empty_reason is not None:
            # a check that reads nothing must not pass: in cron or CI a mistyped --url
            # (or telemetry.url) would otherwise say "nothing flagged" for ever
            fail(f"{log.shown}: {log.empty_reason}; nothing to check drift on")
        report = drift_report(
            log.store.decisions(old.since, old.until),
            log.store.decisions(new.since, new.until),
            settings,
        )
    if as_json:
        payload = report.to_dict()
        payload.update(url=log.shown, baseline=old.to_dict(), recent=new.to_dict())
        _print_json(payload)
    else:
        _print_drift(_console(), report, old, new, log.shown)
    if report.flagged:
        raise typer.Exit(1)


def _print_drift(
    console: Console, report: DriftReport, old: Window, new: Window, shown: str
) -> None:
    console.print(f"[bold]drift[/] in {escape(shown)}")
    console.print(f"baseline {escape(old.describe())}: {_requests(report.n_baseline)}")
    console.print(f"recent   {escape(new.describe())}: {_requests(report.n_recent)}")
    if not report.enough_data:
        console.print(
            f"not enough data: each window needs at least {report.settings.min_requests} "
            "requests (drift.min_requests); nothing flagged"
        )
        return
    table = Table(
        "route", "status", "n base", "n recent", "share", "median margin", "shift", "PSI", "KS p",
        box=None, pad_edge=False,
    )  # fmt: skip
    styles = {"flagged": "[bold red]flagged[/]", "ok": "[green]ok[/]"}
    for r in report.routes:
        share = f"{_pct(r.share_baseline)} → {_pct(r.share_recent)}"
        median = f"{_num(r.median_baseline)} → {_num(r.median_recent)}"
        shift = _num(r.median_shift, "+.3f")
        table.add_row(
            escape(r.route), styles.get(r.status, "insufficient"), str(r.n_baseline),
            str(r.n_recent), share, median, shift, _num(r.psi), _num(r.ks_p, ".2g"),
        )  # fmt: skip
    console.print(table)
    for r in report.routes:
        if r.flagged:
            console.print(f"[bold red]{escape(r.route)}[/]: {escape('; '.join(r.reasons))}")
    rise = report.default_rate_rise
    verdict = "[bold red]flagged[/]" if report.default_flagged else "ok"
    console.print(
        f"default rate {_pct(report.default_rate_baseline)} → {_pct(report.default_rate_recent)}"
        f" ({_num(None if rise is None else rise * 100, '+.1f')} points, bound "
        f"{report.settings.default_rate_rise * 100:g}): {verdict}"
    )
    console.print(f"route mix: total variation {_num(report.mix_tv)}, PSI {_num(report.mix_psi)}")
    if not report.flagged:
        console.print("[green]no drift flagged[/]")


# -- refresh ------------------------------------------------------------------------------


@app.command("refresh")
def refresh_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Candidate registry to write.")],
    registry: RegistryOption = None,
    url: UrlOption = None,
    since: Annotated[str, typer.Option("--since", help="The window to mine, e.g. 7d.")] = "7d",
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval-data",
            help="Labelled JSONL to compare candidate vs current on; exit 1 if the "
            "candidate's accuracy drops too far (as eval --compare).",
        ),
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option("--max-drop", min=0.0, help="Allowed accuracy drop vs current, points."),
    ] = 0.5,
    max_margin: Annotated[
        float, typer.Option("--max-margin", min=0.0, help="Mine routed requests below this margin.")
    ] = 0.1,
    min_cluster: Annotated[
        int, typer.Option("--min-cluster", min=2, help="Smallest cluster to propose.")
    ] = 5,
    similarity: Annotated[
        float,
        typer.Option(
            "--cluster-similarity", min=-1.0, max=1.0, help="Mean cosine similarity to merge at."
        ),
    ] = 0.5,
    as_json: JsonOption = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT.")] = False,
) -> None:
    """Propose new examples and candidate routes from low-margin and default traffic."""
    from llmroute.decide import Router
    from llmroute.evaluate.data import read_labelled
    from llmroute.telemetry.drift import routed_only
    from llmroute.telemetry.refresh import RefreshConfig, propose

    if str(output) == "-":  # else a file named "-"
        fail(
            "-o -: the candidate registry is written to a file (its paths are relative to "
            "it); name one"
        )
    window = _window(since, "--since")
    path = resolve_registry(registry)
    if output.resolve() == path.resolve():
        fail("--output must not be the live registry; write the candidate elsewhere")
    if output.exists() and not force:
        fail(f"{output} exists; pass --force to overwrite it")
    # read first: a missing or broken file failed once the candidate had been written
    eval_rows = None if eval_data is None else read_labelled(eval_data)
    unwritten = f"nothing to mine; {output} not written"  # a script's next step would read it
    loaded = _load(path)
    with _open_log(_url(url, loaded)) as log:
        if log.empty_reason is not None:
            # as export: nothing to write, and a mistyped --url must not pass as a quiet week
            fail(f"{log.shown}: {log.empty_reason}; {unwritten}")
        # embeddings and rerank requests were not routed: nothing to learn routing from
        decisions = routed_only(log.store.decisions(window.since, window.until))
    if not decisions:
        # exit 0, as a report of an empty window; --json says what was not written, and why
        reason = f"no decisions in the last {window.text}"
        not_written = {"output": str(output), "written": False, "reason": reason}
        _empty(
            Log(log.store, log.shown, None),
            f"the last {window.text}",
            as_json,
            not_written,
            unwritten,
        )
        return
    config = RefreshConfig(
        max_margin=max_margin, min_cluster=min_cluster, cluster_similarity=similarity
    )
    with Router(loaded) as router:
        # NoPrompts: a clean error, exit 2
        proposal = propose(decisions, router, config, out_dir=output.resolve().parent)
        output.write_text(proposal.yaml_text, encoding="utf-8")
        mined_change, held_change = _routing_changes(router, proposal, decisions)
    comparison = None
    if eval_rows is not None:
        comparison = _compare(path, output, eval_rows, max_drop)
    if as_json:
        payload = proposal.to_dict()
        payload.update(
            url=log.shown,
            window=window.to_dict(),
            output=str(output),
            written=True,
            mined_routing=mined_change.to_dict(),
            other_routing=held_change.to_dict(),
        )
        if comparison is not None:
            payload["compare"] = comparison.to_dict()
        _print_json(payload)
    else:
        console = _console()
        _print_refresh(console, proposal, output)
        _print_change(console, "mined prompts", mined_change)
        _print_change(console, "other logged prompts (should barely move)", held_change)
        if comparison is not None:
            from llmroute.cli.evaluate import _print_comparison

            _print_comparison(console, comparison, path)
    if comparison is not None and not comparison.passed:  # a gate, as eval --compare's
        raise typer.Exit(1)


def _routing_change(current: Any, candidate: Any, texts: list[str]) -> RoutingChange:
    from llmroute.telemetry.refresh import routing_change

    return routing_change(current, candidate, texts)


def _routing_changes(
    router: Router, proposal: RefreshProposal, decisions: Sequence[LoggedDecision]
) -> tuple[RoutingChange, RoutingChange]:
    """How the candidate routes the mined prompts, and up to 1,000 other logged ones
    (which should barely move), against `router`."""
    from llmroute.decide import Router

    candidate = Router(proposal.candidate, encoder=router.encoder)
    mined_change = _routing_change(router, candidate, proposal.mined)
    mined_set = set(proposal.mined)
    others = list(
        dict.fromkeys(d.prompt for d in decisions if d.prompt and d.prompt not in mined_set)
    )
    return mined_change, _routing_change(router, candidate, others[:1000])


def _compare(current: Path, candidate: Path, rows: list[LabelledRow], max_drop: float) -> Any:
    from llmroute.cli.evaluate import compared

    labels = ("evaluating the candidate", "evaluating the current registry")
    return compared(candidate, current, rows, None, labels, max_drop)[1]


def _print_refresh(console: Console, proposal: RefreshProposal, output: Path) -> None:
    console.print(
        f"{counted(proposal.n_decisions, 'decision')}, {proposal.n_with_prompt} with a "
        f"stored prompt; {counted(proposal.n_mined, 'unique low-margin or default prompt')} "
        f"mined, {proposal.n_clustered} in {counted(len(proposal.clusters), 'cluster')}"
    )
    if not proposal.clusters:
        console.print("no cluster large enough: the candidate equals the current registry")
    for c in proposal.clusters:
        what = (
            f"[bold]new route {escape(c.route)}[/] (nearest {escape(str(c.nearest_route))}, "
            f"similarity {c.similarity:.2f} < {c.bound:.2f})"
            if c.new
            else f"examples for [bold]{escape(c.route)}[/] (similarity {c.similarity:.2f} "
            f">= {c.bound:.2f})"
        )
        console.print(f"- {c.size} prompts → {what}")
        for sample in c.samples:
            console.print(f"    {escape(sample)}")
    console.print(f"candidate registry written to {escape(str(output))}")


def _print_change(console: Console, label: str, change: RoutingChange) -> None:
    if not change.n:
        return
    console.print(
        f"routing of {label}: {change.changed} of {change.n} change route "
        f"({_pct(change.changed_share)})"
    )
    for before, after, count in change.transitions[:10]:
        console.print(f"    {escape(before)} → {escape(after)}: {count}")


# -- export -------------------------------------------------------------------------------


@app.command("export")
def export_command(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="JSONL file to write; '-' (or no -o): standard output.",
            show_default=False,
        ),
    ] = None,
    registry: RegistryOption = None,
    url: UrlOption = None,
    since: Annotated[str, typer.Option("--since", help="The window, e.g. 24h, 7d.")] = "24h",
    route: Annotated[
        str | None, typer.Option("--route", help="Only this route's requests.", show_default=False)
    ] = None,
    tag: TagOption = None,
    client: ClientOption = None,
    api: ApiOption = None,
    with_text: Annotated[
        bool,
        typer.Option(
            "--with-text", help="Only requests whose prompt the log kept (telemetry.prompts)."
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT.")] = False,
) -> None:
    """Write the decision log's requests as JSON lines: the decision, its outcome, cost,
    key, end user and tags, the prompt and the answer where the log kept them
    (telemetry.prompts / responses), and the feedback given. The `prompt` field feeds
    `llmroute calibrate` and `registry record` as it is: embeddings and rerank requests,
    which were not routed, are left out unless --api names their API."""
    from llmroute.telemetry.export import export_rows

    if output is not None and str(output) == "-":  # the convention: standard output
        output = None
    if output is not None and output.exists() and not force:
        fail(f"{output} exists; pass --force to overwrite it")
    window = _window(since, "--since")
    loaded = _load_for_log(registry)
    with _open_log(_url(url, loaded)) as log:
        if log.empty_reason is not None:
            fail(f"{log.shown}: {log.empty_reason}")
        decisions = log.store.decisions(window.since, window.until)
        feedback = log.store.feedback(window.since, None)
    picked = [
        d
        for d in _narrowed(decisions, tag, client, api)
        if (route is None or d.route == route)
        and (not with_text or d.prompt is not None)
        and (not d.unrouted or api == d.api)
    ]
    lines = (
        json.dumps(json_safe(row), ensure_ascii=False) for row in export_rows(picked, feedback)
    )
    why = _unknown_client(client, loaded) if not picked else ""
    if with_text and decisions and all(d.prompt is None for d in decisions):
        why = (
            ": none kept its prompt, which --with-text needs (telemetry.prompts: redacted or "
            "full keeps them; hash keeps none)"
        )
    if output is None:
        for line in lines:
            print(line)
        if not picked:  # said apart from the (empty) data, so a pipeline is not left guessing
            err_console.print(
                f"no request of the {len(decisions)} of the last {window.text} matched{why}",
                soft_wrap=True,
            )
        return
    with output.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")
    err_console.print(
        f"wrote {len(picked)} of the {_requests(len(decisions))} of the last {window.text} "
        f"to {escape(str(output))}{why}",
        soft_wrap=True,
    )


# -- report -------------------------------------------------------------------------------


@report_app.callback()
def report_command(
    ctx: typer.Context,
    registry: RegistryOption = None,
    url: UrlOption = None,
    since: Annotated[str, typer.Option("--since", help="The window, e.g. 24h, 7d.")] = "24h",
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write charts to an .html page or a .png.", show_default=False),
    ] = None,
    tag: TagOption = None,
    client: ClientOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Route mix, cost vs the strongest model, fallbacks, latency, errors, feedback and
    shadow quality over a window; per API, client key, tag and costliest end users when
    the requests carried them."""
    if ctx.invoked_subcommand is not None:
        return
    from llmroute.telemetry.report import build_report

    window = _window(since, "--since")
    check_plot_path(plot, (".html", ".png"))
    loaded = _load_for_log(registry)
    with _open_log(_url(url, loaded)) as log:
        if log.empty_reason is not None:
            _empty(log, f"the last {window.text}", as_json)
            return
        decisions = log.store.decisions(window.since, window.until)
        feedback = log.store.feedback(window.since, window.until)
        shadows = log.store.shadows(window.since, window.until)
    scope = ""
    if tag is not None or client is not None or api is not None:
        in_window = {d.id for d in decisions}
        decisions = _narrowed(decisions, tag, client, api)
        kept = {d.id for d in decisions}
        # the whole report is narrowed: another request's feedback and shadow rows are
        # not these requests' (feedback on one outside the window stays unmatched)
        feedback = [f for f in feedback if f.decision_id in kept or f.decision_id not in in_window]
        shadows = [s for s in shadows if s.decision_id in kept]
        scope = (
            " with"
            + f" tag {tag}" * (tag is not None)
            + (f" client key {client}" if client else " no client key") * (client is not None)
            + f" API {api}" * (api is not None)
        )
    if not decisions:
        what = f"the last {window.text}{scope}{_unknown_client(client, loaded)}"
        _empty(Log(log.store, log.shown, None), what, as_json)
        return
    report = build_report(
        decisions,
        loaded.registry if loaded is not None else None,
        feedback=feedback,
        shadows=shadows,
    )
    if plot is not None:
        from llmroute.telemetry.report_plot import plot_report

        plot_report(report, plot, title=f"llmroute report: {window.describe()}")
    if as_json:
        payload = report.to_dict()
        payload.update(url=log.shown, window=window.to_dict(), tag=tag, client=client, api=api)
        _print_json(payload)
        return
    console = _console()
    _print_report(console, report, window, log.shown + scope)
    if plot is not None:
        console.print(f"charts written to {escape(str(plot))}")


def _requests(n: int, kind: str = "") -> str:
    """``1 request``, ``2 requests``: `n` with the noun agreeing, after `kind` if given."""
    return counted(n, f"{kind + ' ' if kind else ''}request")


def _group_table(title: str, groups: list[GroupStats], strongest: str | None) -> Table:
    columns = ["n", "share", "errors", "fallback", "p50 ms", "p99 ms", "cost $"]
    if strongest is not None:
        columns += [f"always {strongest} $", "saved"]
    # in a narrow terminal a name past 12 characters is cut (rule:tools-…), a figure never
    table = Table(box=None, pad_edge=False)
    table.add_column(title, min_width=12)
    for column in columns:
        table.add_column(column, no_wrap=True)
    for g in groups:
        row = [
            escape(g.name), str(g.n), _pct(g.share), _pct(g.error_rate), _pct(g.fallback_rate),
            _num(g.p50_ms, ".0f"), _num(g.p99_ms, ".0f"), _usd(g.cost_usd),
        ]  # fmt: skip
        if strongest is not None:
            row += [_usd(g.counterfactual_usd), _pct(g.savings)]
        table.add_row(*row)
    return table


def _print_report(console: Console, report: Report, window: Window, shown: str) -> None:
    from llmroute.telemetry.report import UNTAGGED

    total = report.total
    console.print(f"[bold]report[/] of {escape(shown)}, {escape(window.describe())}")
    console.print(
        f"{_requests(total.n)}; errors {_pct(total.error_rate)}, fallbacks "
        f"{_pct(total.fallback_rate)}, escalations {_pct(total.escalation_rate)}, cache hits "
        f"{total.cache_hits}; latency p50 {_num(total.p50_ms, '.0f')} ms, p99 "
        f"{_num(total.p99_ms, '.0f')} ms"
        + (
            f"; {total.route_only} of them decisions only (/v1/route: no latency or cost)"
            * bool(total.route_only)
        )
        + (
            f"; {_requests(total.unrouted, 'embeddings or rerank')} (not routed: in the cost, "
            "not the savings)" * bool(total.unrouted)
        )
    )
    if report.strongest is not None:
        console.print(
            f"cost ${_usd(total.cost_usd)} vs ${_usd(total.counterfactual_usd)} always on "
            f"{escape(report.strongest)} (the most expensive chat model): saved "
            f"{_pct(total.savings)}"
            + (f"; {total.unpriced} without token counts" * bool(total.unpriced))
        )
    else:
        console.print(
            f"cost ${_usd(total.cost_usd)} (no priced model, or no registry: no counterfactual)"
        )
    cache = report.cache
    if cache.hits:
        console.print(
            f"cache hits: {cache.hits}, no model called ($0, not in the savings above)"
            + (
                f"; ${_usd(cache.not_spent_usd)} not spent again on {cache.priced} of them "
                "(the cost of the same prompt's answer by the same model in this window)"
            )
            * bool(cache.priced)
        )
    console.print()
    console.print(_group_table("route", report.routes, report.strongest))
    console.print()
    console.print(_group_table("model", report.models, None))
    console.print()
    console.print(_group_table("deciding layer", report.layers, report.strongest))
    if report.clients:
        console.print()
        console.print(_group_table("client key", report.clients, report.strongest))
    if report.apis:
        console.print()
        console.print(_group_table("API", report.apis, report.strongest))
    if report.tags:
        listed = sum(t.name != UNTAGGED for t in report.tags)  # `tag_count` leaves it out
        console.print()
        if listed < report.tag_count:
            console.print(f"tags: {report.tag_count}, the {listed} that cost the most")
        console.print(_group_table("tag", report.tags, report.strongest))
    if report.users:
        listed = len(report.users)
        console.print()
        console.print(
            f"end users: {report.user_count}"
            + f", the {listed} that cost the most" * (listed < report.user_count)
        )
        console.print(_group_table("end user", report.users, report.strongest))
    if report.feedback:
        table = Table(
            "route", "feedback", "mean score", "thumbs", "thumbs up", box=None, pad_edge=False
        )
        for f in report.feedback:
            table.add_row(
                escape(f.route), str(f.n), _num(f.mean_score, ".2f"), str(f.thumbs),
                _pct(f.thumbs_up_share),
            )  # fmt: skip
        console.print()
        console.print(table)
    if report.shadow.overall.pairs:
        console.print()
        _print_shadow(console, report.shadow)


# -- report shadow ------------------------------------------------------------------------


@report_app.command("shadow")
def shadow_command(
    registry: RegistryOption = None,
    url: UrlOption = None,
    since: Annotated[str, typer.Option("--since", help="The window, e.g. 7d.")] = "7d",
    as_json: JsonOption = False,
) -> None:
    """Per route: how often the routed answer was judged worse than the reference's."""
    from llmroute.telemetry.shadow_report import shadow_report

    window = _window(since, "--since")
    loaded = _load_for_log(registry)
    with _open_log(_url(url, loaded)) as log:
        if log.empty_reason is not None:
            _empty(log, f"the last {window.text}", as_json)
            return
        records = log.store.shadows(window.since, window.until)
    if not records:
        message = f"no shadow records in the last {window.text} (is shadow routing on?)"
        if as_json:
            _print_json({"url": log.shown, "empty": True, "message": message})
        else:
            _console().print(f"{escape(log.shown)}: {escape(message)}")
        return
    report = shadow_report(records)
    if as_json:
        _print_json({"url": log.shown, "window": window.to_dict(), **report.to_dict()})
        return
    console = _console()
    console.print(f"[bold]shadow report[/] of {escape(log.shown)}, {escape(window.describe())}")
    _print_shadow(console, report)


def _print_shadow(console: Console, report: ShadowReport) -> None:
    table = Table(
        "route", "pairs", "judged", "lost quality", "95% CI", "judge errors", "unjudged",
        box=None, pad_edge=False,
    )  # fmt: skip
    for r in [*report.routes, report.overall]:
        interval = r.interval
        ci = "n/a" if interval is None else f"{_pct(interval[0])} – {_pct(interval[1])}"
        table.add_row(
            escape(r.route), str(r.pairs), str(r.judged), f"{r.lost} ({_pct(r.lost_share)})",
            ci, str(r.judge_errors), str(r.unjudged),
        )  # fmt: skip
    console.print("shadow quality (routed answer judged worse than the reference):")
    console.print(table)
