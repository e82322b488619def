"""`llmroute responses forget`: erase the Responses-API responses and conversations the
gateway keeps (registry ``stored_responses``) for one client key, or for everyone: what
a request to erase a user's data needs, without waiting for ``ttl_s``.

Only a Redis store can be reached from here; responses kept in memory live in the
gateway process (restarting it forgets them).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from llmroute.cli._app import RegistryOption, app, fail, resolve_registry

__all__ = ["responses_app", "responses_forget"]

responses_app = typer.Typer(
    help="Kept Responses-API responses (stored_responses).", no_args_is_help=True
)
app.add_typer(responses_app, name="responses")


@responses_app.command("forget")
def responses_forget(
    client: Annotated[
        str | None,
        typer.Option(
            "--client",
            help="The client key's name (auth.keys) whose responses to erase; '' for "
            "requests made without a key.",
            show_default=False,
        ),
    ] = None,
    everyone: Annotated[
        bool, typer.Option("--all", help="Erase every kept response of this registry.")
    ] = False,
    registry: RegistryOption = None,
) -> None:
    """Erase kept responses from the registry's stored_responses store (Redis) and print
    how many there were."""
    from llmroute.registry import load_registry
    from llmroute.state.stored_responses import ResponseStore
    from llmroute.state.stores import StoreUnavailable

    if (client is None) == (not everyone):
        fail("name one client key with --client NAME, or pass --all")
    path = resolve_registry(registry)
    loaded = load_registry(path).registry
    settings = loaded.stored_responses
    if settings is None:
        fail(f"{path} keeps no responses (no stored_responses section)")
    if settings.url == "memory":
        fail(
            "stored_responses keeps them in the gateway's memory: only that process can "
            "forget them (restart it), or keep them in Redis"
        )
    names = {key.name for key in loaded.auth.keys} if loaded.auth is not None else {""}
    if client is not None and client not in names:
        known = ", ".join(sorted(n or "''" for n in names))
        fail(f"no client key {client!r} in {path} (known: {known})")
    store = ResponseStore.open(loaded)
    assert store is not None

    async def forget() -> int:
        try:
            return await store.forget(None if everyone else client)
        finally:
            await store.aclose()

    try:
        gone = asyncio.run(forget())
    except StoreUnavailable as exc:
        fail(str(exc), code=1)
    whose = "every client" if everyone else f"client {client!r}"
    typer.echo(
        f"{gone} records (kept responses and conversations) of {whose} erased from {store.url}"
    )
