"""`sweep_batches`: each gateway looks, every ``batches.lease_s`` (and up to half as long
again, so that gateways started together do not look at once), for running batches that
no process holds and takes them over (`take_over_lapsed`). Without it a batch whose
process was killed waits for a client to read it; a client that polls once a day would
find it expired. Only for a shared store (Redis): in memory, a batch dies with its
process, and with it the store.
"""

from __future__ import annotations

import asyncio
import logging
import random

from starlette.applications import Starlette

from llmroute.server.batches import take_over_lapsed
from llmroute.server.state import Gateway
from llmroute.state.batches import BatchStore
from llmroute.state.stores import StoreUnavailable

__all__ = ["sweep_batches"]

log = logging.getLogger("llmroute.batches")

_IDLE_S = 30.0  # between looks while the registry has no shared batch store

# its own generator: the module's shared one is the application's (and a property
# test's, which Hypothesis watches for draws it did not make)
_JITTER = random.Random()


async def sweep_batches(app: Starlette) -> None:
    """Run until cancelled (the app's lifespan ends)."""
    failing = False
    while True:
        store = _shared_store(app.state.gateway)
        period = _IDLE_S if store is None else store.settings.lease_s
        await asyncio.sleep(period * _JITTER.uniform(1.0, 1.5))
        gateway = app.state.gateway  # read again: a reload may have replaced it
        store = _shared_store(gateway)
        if store is None:
            continue
        try:
            await take_over_lapsed(app, gateway, store)
        except StoreUnavailable as exc:
            if not failing:
                log.warning("batches: the sweep for stopped batches could not read: %s", exc)
            failing = True
            continue
        except Exception:
            log.exception("batches: the sweep for stopped batches failed")
            continue
        if failing:
            log.info("batches: the sweep for stopped batches reads the store again")
        failing = False


def _shared_store(gateway: object) -> BatchStore | None:
    if not isinstance(gateway, Gateway) or gateway.batches is None:
        return None
    return gateway.batches if gateway.batches.url != "memory" else None
