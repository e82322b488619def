"""`llmroute dashboard`: the web dashboard over a decision log, without a gateway.

Useful where many gateway replicas write one PostgreSQL log, or to look at a SQLite
log copied off a machine. `llmroute serve` serves the same page at /dashboard, with
its own live state (breakers, requests in flight) added.
"""

from __future__ import annotations

from typing import Annotated

import typer

from llmroute.cli._app import RegistryOption, app, check_port, fail, find_registry, given_as
from llmroute.cli.serve import (
    AllowedHostOption,
    LogFormat,
    LogFormatOption,
    LogLevel,
    checked_allowed_hosts,
    checked_root_path,
    configured_logs,
    log_level_option,
    root_path_option,
)
from llmroute.cli.telemetry import UrlOption, _url
from llmroute.server.root_path import ROOT_PATH_ENV


@app.command("dashboard")
def dashboard_command(
    ctx: typer.Context,
    registry: RegistryOption = None,
    url: UrlOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8100,
    allowed_host: AllowedHostOption = None,
    root_path: Annotated[str | None, root_path_option("/dashboard")] = None,
    log_level: Annotated[LogLevel, log_level_option()] = LogLevel.warning,
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Serve the web dashboard at http://HOST:PORT/dashboard over a decision log: traffic,
    route mix, latency, cost vs the strongest model, drift and shadow quality. The
    registry (optional) prices the models and sets the drift bounds."""
    import uvicorn

    from llmroute.errors import ConfigError
    from llmroute.registry import LoadedRegistry, load_registry
    from llmroute.server.dashboard import create_log_dashboard
    from llmroute.server.invalid_http import http_protocol
    from llmroute.server.shutdown import Server

    prefix_source = given_as(ctx, "root_path", "--root-path", ROOT_PATH_ENV)
    prefix = checked_root_path(root_path, prefix_source)
    names = checked_allowed_hosts(allowed_host)
    # llmroute's own lines (a refused Host) on uvicorn's handler, as serve's are; no
    # access lines: the page polls its data
    config = configured_logs(log_level, log_format, access_log=False)
    loaded: LoadedRegistry | None = None
    path = find_registry(registry)
    if path is not None:
        loaded = load_registry(path)
    try:
        web = create_log_dashboard(
            _url(url, loaded),
            loaded.registry if loaded else None,
            bind_host=host,
            allowed_hosts=names,
            root_path=prefix,
        )
    except ConfigError as exc:
        fail(str(exc))
    port = check_port(host, port)  # --port 0: the port picked, not :0, in the page's URL
    shown = web.state.log_url
    typer.echo(f"dashboard: {page_url(host, port)} (decision log: {shown})")
    if prefix is not None:
        typer.echo(f"paths under {prefix} are served as without it ({prefix_source})")
    # what is not HTTP is answered, logged and held back as the gateway's (no count:
    # the dashboard has no metrics)
    # llmroute's server, as serve's: stopped by a signal, it exits as serve does (0 after
    # SIGTERM, 130 after Ctrl-C), not killed by the SIGTERM raised again (143)
    server = Server(
        uvicorn.Config(web, host=host, port=port, http=http_protocol(), log_config=config)
    )
    server.run()
    raise typer.Exit(server.exit_status())


def page_url(host: str, port: int) -> str:
    """The page's address as a browser takes it: an IPv6 address in brackets."""
    where = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{where}:{port}/dashboard"
