"""`llmroute responses forget`: erase the Responses-API responses and conversations the
gateway keeps (registry ``stored_responses``) for one client key, or for everyone: what
a request to erase a user's data needs, without waiting for ``ttl_s``.

Only a Redis store can be reached from here; responses kept in memory live in the
gateway process (restarting it forgets them).
"""

from __future__ import annotations

import typer

from llmroute.cli._app import RegistryOption, app
from llmroute.cli._forget import ClientOption, EveryoneOption, forget_section

__all__ = ["responses_app", "responses_forget"]

responses_app = typer.Typer(
    help="Erase the Responses-API responses a gateway keeps in Redis (the registry's "
    "stored_responses section).",
    no_args_is_help=True,
)
app.add_typer(responses_app, name="responses")


@responses_app.command("forget")
def responses_forget(
    client: ClientOption = None, everyone: EveryoneOption = False, registry: RegistryOption = None
) -> None:
    """Erase kept responses from the registry's stored_responses store (Redis) and print
    how many there were."""
    from llmroute.state.stored_responses import ResponseStore

    forget_section(
        registry,
        "stored_responses",
        ResponseStore.open,
        "records (kept responses and conversations)",
        client,
        everyone,
    )
