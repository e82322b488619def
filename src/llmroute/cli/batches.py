"""`llmroute batches forget`: erase the files and batches the gateway keeps (registry
``batches``) for one client key, or for everyone: the uploaded requests and their
answers hold prompts verbatim, and a request to erase a user's data should not wait for
``ttl_s``.

Only a Redis store can be reached from here; what is kept in memory lives in the
gateway process (restarting it forgets it).
"""

from __future__ import annotations

import typer

from llmroute.cli._app import RegistryOption, app
from llmroute.cli._forget import ClientOption, EveryoneOption, forget_section

__all__ = ["batches_app", "batches_forget"]

batches_app = typer.Typer(
    help="Erase the Batch API's files and batches a gateway keeps in Redis (the "
    "registry's batches section).",
    no_args_is_help=True,
)
app.add_typer(batches_app, name="batches")


@batches_app.command("forget")
def batches_forget(
    client: ClientOption = None, everyone: EveryoneOption = False, registry: RegistryOption = None
) -> None:
    """Erase files and batches from the registry's batches store (Redis) and print how
    many records there were."""
    from llmroute.state.batches import BatchStore

    forget_section(
        registry,
        "batches",
        BatchStore.open,
        "records (files, their parts and batches)",
        client,
        everyone,
    )
