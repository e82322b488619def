"""What ``llmroute responses forget`` and ``llmroute batches forget`` share: the choice
of whose records to erase, checked against the registry, and the erasing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol

import typer

from llmroute.cli._app import fail, resolve_registry

if TYPE_CHECKING:  # `llmroute --help` builds every command: the schema is loaded on use
    from llmroute.registry.schema import Registry

__all__ = [
    "ClientOption",
    "EveryoneOption",
    "Forgetting",
    "check_whose",
    "erased",
    "forget_section",
    "whose",
]

ClientOption = Annotated[
    str | None,
    typer.Option(
        "--client",
        help="The client key's name (auth.keys) whose records to erase; '' for requests "
        "made without a key.",
        show_default=False,
    ),
]
EveryoneOption = Annotated[
    bool, typer.Option("--all", help="Erase every record of this registry's section.")
]


def check_whose(
    path: Path, registry: Registry, section: str, url: str | None, client: str | None, all_: bool
) -> None:
    """Fail (usage) unless exactly one of `client` / `all_` is given, the registry has
    `section` (its `url`: None without one) in Redis, and `client` names one of its keys
    or is ``''`` (requests made without a key, with or without auth now)."""
    if (client is None) == (not all_):
        fail("name one client key with --client NAME, or pass --all")
    if url is None:
        fail(f"{path} keeps nothing there (no {section} section)")
    if url == "memory":
        fail(
            f"{section} keeps them in the gateway's memory: only that process can forget "
            "them (restart it), or keep them in Redis"
        )
    # '' is the owner of what was kept for requests made without a key: by a gateway
    # without auth, or by this one before its auth section was added (kept in Redis,
    # such records outlive it), as `db forget --client ''` reads the decision log
    names = sorted(key.name for key in registry.auth.keys) if registry.auth is not None else []
    if client and client not in names:
        known = f"known: {', '.join(names)}, or ''" if names else "no auth section; ''"
        fail(f"no client key {client!r} in {path} ({known} for requests made without a key)")


class Forgetting(Protocol):
    """A store that forgets a client key's records (`ResponseStore`, `BatchStore`)."""

    @property
    def url(self) -> str: ...

    async def forget(self, owner: str | None) -> int: ...

    async def aclose(self) -> None: ...


def forget_section(
    registry: Path | None,
    section: str,
    open_store: Callable[[Registry], Forgetting | None],
    what: str,
    client: str | None,
    everyone: bool,
) -> None:
    """The whole command: the registry's `section` store (`open_store`), checked, erased
    for `client` (or `everyone`), and a line saying how many of `what` there were."""
    from llmroute.registry import load_registry

    path = resolve_registry(registry)
    loaded = load_registry(path).registry
    settings = getattr(loaded, section)
    check_whose(
        path, loaded, section, settings.url if settings is not None else None, client, everyone
    )
    store = open_store(loaded)
    assert store is not None
    owner = None if everyone else client
    gone = erased(store, owner)
    typer.echo(f"{gone} {what} of {whose(owner)} erased from {store.url}")


def erased(store: Forgetting, client: str | None) -> int:
    """How many records `store` erased for `client` (None: everyone's); a store that does
    not answer fails (exit 1)."""
    import asyncio  # here: `llmroute --help` imports this module

    from llmroute.state.stores import StoreUnavailable

    async def forget() -> int:
        try:
            return await store.forget(client)
        finally:
            await store.aclose()

    try:
        return asyncio.run(forget())
    except StoreUnavailable as exc:
        fail(str(exc), code=1)


def whose(client: str | None) -> str:
    return "every client" if client is None else f"client {client!r}"
