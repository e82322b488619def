"""`llmroute responses forget`: erase the Responses-API responses and conversations the
gateway keeps (registry ``stored_responses``) for one client key, or for everyone: what
a request to erase a user's data needs, without waiting for ``ttl_s``.

Only a Redis store can be reached from here; responses kept in memory live in the
gateway process (restarting it forgets them).
"""

from __future__ import annotations

import typer

from llmroute.cli._app import RegistryOption, app, resolve_registry
from llmroute.cli._forget import ClientOption, EveryoneOption, check_whose, erased, whose

__all__ = ["responses_app", "responses_forget"]

responses_app = typer.Typer(
    help="Kept Responses-API responses (stored_responses).", no_args_is_help=True
)
app.add_typer(responses_app, name="responses")


@responses_app.command("forget")
def responses_forget(
    client: ClientOption = None, everyone: EveryoneOption = False, registry: RegistryOption = None
) -> None:
    """Erase kept responses from the registry's stored_responses store (Redis) and print
    how many there were."""
    from llmroute.registry import load_registry
    from llmroute.state.stored_responses import ResponseStore

    path = resolve_registry(registry)
    loaded = load_registry(path).registry
    settings = loaded.stored_responses
    url = settings.url if settings is not None else None
    check_whose(path, loaded, "stored_responses", url, client, everyone)
    store = ResponseStore.open(loaded)
    assert store is not None
    owner = None if everyone else client
    gone = erased(store, owner)
    what = "records (kept responses and conversations)"
    typer.echo(f"{gone} {what} of {whose(owner)} erased from {store.url}")
