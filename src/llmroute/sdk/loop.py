"""`LoopThread`: one event loop in a daemon thread, for the SDK's synchronous calls.

The providers' HTTP sessions are bound to the loop they first run on, so every synchronous
call goes through this one loop (and its own providers) rather than a fresh
``asyncio.run`` per call, which would throw away pooled connections each time.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from llmroute.errors import RouterClosed

__all__ = ["LoopThread"]

T = TypeVar("T")

_RUNNING: weakref.WeakSet[LoopThread] = weakref.WeakSet()
_UNWIND_S = 5.0  # for the calls still running as the loop stops to end (close upstreams)


@atexit.register
def _stop_all() -> None:
    """At exit, stop the loops nobody stopped (a router kept as a module global and
    never closed): their connections are closed as `stop` closes them, instead of
    aiohttp's "Unclosed client session" on stderr as the process ends."""
    for running in list(_RUNNING):
        running.stop(timeout=2.0)


class LoopThread:
    """An event loop running in a daemon thread until `stop` (or the process's exit)."""

    def __init__(self, name: str = "llmroute-sdk") -> None:
        self.loop = asyncio.new_event_loop()
        self.stopping = False  # set by `stop`: calls cancelled since were cancelled by it
        self._calls: set[asyncio.Task[Any]] = set()  # the callers' coroutines running
        self._lock = threading.Lock()  # a call is submitted before `stop` or not at all
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        _RUNNING.add(self)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                self._cancel(set(self._calls))
                from llmroute.sdk.streams import close_streams  # it imports this module

                self.loop.run_until_complete(close_streams(self.loop))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self._cancel(asyncio.all_tasks(self.loop))
            finally:
                self.loop.close()

    def _cancel(self, tasks: set[asyncio.Task[Any]]) -> None:
        """Cancel `tasks` and let them unwind, as `asyncio.run` does.

        The callers' calls go first (another thread's read of a stream, a `create`
        waiting for its answer): left pending, their callers waited for ever, their
        streams' slots stayed held for the lease, and closing their generators under them
        raised "already running". The background work (a cache write, a usage charge)
        is not cancelled with them: closing the dispatchers waits for it, and only what
        is left after that is cancelled.
        """
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.wait(tasks, timeout=_UNWIND_S))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for its result (its exception is raised here);
        `RouterClosed` when `stop` cut it, or came first.

        Called from the loop's own thread it would deadlock, so that raises instead.
        """
        future = self.submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self.stopping:
                raise RouterClosed() from None
            raise
        except BaseException:
            future.cancel()  # Ctrl-C while waiting: do not leave the call running
            raise

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """`coro` started on the loop; its future, to wait on (`run` waits at once).

        `RouterClosed` once `stop` has begun: a call queued as the loop closed was never
        run, and its caller waited for ever."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("the llmroute SDK loop cannot wait for itself")
        with self._lock:
            if self.stopping or not self.alive:
                coro.close()
                raise RouterClosed()
            return asyncio.run_coroutine_threadsafe(self._call(coro), self.loop)

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        if self.stopping:  # submitted just before `stop`, which cancelled the others
            coro.close()
            raise asyncio.CancelledError
        self._calls.add(task)
        try:
            return await coro
        finally:
            self._calls.discard(task)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (async generators still open are closed) and join the thread."""
        _RUNNING.discard(self)
        with self._lock:
            self.stopping = True
        if self.loop.is_closed() or not self.alive:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
