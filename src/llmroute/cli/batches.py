"""`llmroute batches forget`: erase the files and batches the gateway keeps (registry
``batches``) for one client key, or for everyone: the uploaded requests and their
answers hold prompts verbatim, and a request to erase a user's data should not wait for
``ttl_s``.

Only a Redis store can be reached from here; what is kept in memory lives in the
gateway process (restarting it forgets it).
"""

from __future__ import annotations

import typer

from llmroute.cli._app import RegistryOption, app, resolve_registry
from llmroute.cli._forget import ClientOption, EveryoneOption, check_whose, erased, whose

__all__ = ["batches_app", "batches_forget"]

batches_app = typer.Typer(
    help="Files and batches of the Batch API (batches).", no_args_is_help=True
)
app.add_typer(batches_app, name="batches")


@batches_app.command("forget")
def batches_forget(
    client: ClientOption = None, everyone: EveryoneOption = False, registry: RegistryOption = None
) -> None:
    """Erase files and batches from the registry's batches store (Redis) and print how
    many records there were."""
    from llmroute.registry import load_registry
    from llmroute.state.batches import BatchStore

    path = resolve_registry(registry)
    loaded = load_registry(path).registry
    url = loaded.batches.url if loaded.batches is not None else None
    check_whose(path, loaded, "batches", url, client, everyone)
    store = BatchStore.open(loaded)
    assert store is not None
    owner = None if everyone else client
    gone = erased(store, owner)
    what = "records (files, their parts and batches)"
    typer.echo(f"{gone} {what} of {whose(owner)} erased from {store.url}")
