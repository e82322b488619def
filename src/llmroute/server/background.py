"""`BackgroundRuns`: the Responses API's ``background: true`` requests this process is
answering, as tasks.

Such a request is answered at once with its response ``in_progress``; the answer is made
in a task while the client polls ``GET /v1/responses/{id}`` (OpenAI's background mode:
a reasoning model may think longer than a proxy keeps a quiet connection open), or
follows its events (``stream: true``: the run's `RunLog`, for followers in this
process). The tasks are this process's (``stored_responses.max_background`` bounds how many); on
shutdown those still running get `grace_s`, then are cancelled (each marks its response
failed on the way out); once that is over no run starts (`start` refuses it: nothing would
wait for it before the event loop ends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request

from llmroute.server.background_stream import RunLog
from llmroute.server.request_ids import apart
from llmroute.server.state import per_app

__all__ = ["BackgroundRuns", "background_runs", "detached"]

log = logging.getLogger("llmroute.server")


class BackgroundRuns:
    kind = "background response(s)"  # for the log lines of a shutdown
    unended = "a read marks each failed once its lease lapses"

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._logs: dict[str, RunLog] = {}  # the events of runs that stream, as made
        self._claimed = 0  # requests let in whose runs have not started yet
        self.closed = False  # `aclose` has returned: no run starts any more

    def __len__(self) -> int:
        return len(self._tasks) + self._claimed

    @contextmanager
    def claim(self) -> Iterator[None]:
        """A place counted for a run while its request is readied (planned, kept: awaits
        that let other requests in), so that those asked in the meantime count it; its
        run started (`start`) inside, or not at all."""
        self._claimed += 1
        try:
            yield
        finally:
            self._claimed -= 1

    def start(
        self,
        response_id: str,
        run: Coroutine[Any, Any, None],
        events: RunLog | None = None,
        ended: Callable[[], None] | None = None,
    ) -> bool:
        """Run `run` (which answers response `response_id`, its stream's events into
        `events` if it streams) in a task of its own. `ended()` is called when the task
        is done, however it ends: also when it is cancelled before its first step, where
        none of `run`'s own code runs (what the run holds that it gives back itself, such
        as its key's tpm hold: `ended` must be a no-op after that). `events` is closed
        then too, so that its followers in this process end. False, `run` closed unrun
        (`ended()` called, `events` closed), once `aclose` has returned: its task would be
        left pending when the event loop ends, neither waited for nor cancelled."""
        if self.closed:
            run.close()
            try:
                _end(events, ended)
            finally:
                log.warning("stopping: %s %s not started: shut down", self.kind, response_id)
            return False
        task = asyncio.create_task(run, name=f"llmroute background {response_id}")
        self._tasks[response_id] = task
        if events is not None:
            self._logs[response_id] = events

        def finished(done: asyncio.Task[None]) -> None:
            try:
                _end(events, ended)
            finally:
                self._finished(response_id, done)

        task.add_done_callback(finished)
        return True

    def events(self, response_id: str) -> RunLog | None:
        """The events made so far by this process's run of `response_id`, if it streams."""
        return self._logs.get(response_id)

    def _finished(self, response_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(response_id) is task:
            del self._tasks[response_id]
            self._logs.pop(response_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("background response %s failed", response_id, exc_info=task.exception())

    def running(self, response_id: str) -> bool:
        """Whether this process runs `response_id`."""
        return response_id in self._tasks

    def cancel(self, response_id: str) -> bool:
        """Cancel the run answering `response_id` if this process has it."""
        task = self._tasks.get(response_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def aclose(self, grace_s: float) -> None:
        """Give the runs `grace_s` to finish, then cancel the rest and wait for them to
        mark their responses failed; runs started meanwhile too (a request cut short by
        the shutdown starts one that forgets what it wrote: `_discarded`). None starts
        once it has returned (`start`)."""
        try:
            await self._cut(grace_s)
        finally:
            self.closed = True

    async def _cut(self, grace_s: float) -> None:
        late = await self._unended(grace_s)
        if not late:
            return
        log.warning("stopping: %d %s cut short", len(late), self.kind)
        for task in late:
            task.cancel()
        unended = await self._unended(grace_s)
        if unended:
            log.warning(
                "stopping: %d %s did not end within %g s of being cut (their store is slow); %s",
                len(unended),
                self.kind,
                grace_s,
                self.unended,
            )

    async def _unended(self, timeout_s: float) -> list[asyncio.Task[None]]:
        """The runs still going after waiting up to `timeout_s` for them all to end,
        those started while it waits included."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while going := [task for task in self._tasks.values() if not task.done()]:
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.wait(going, timeout=left)
        return going


def background_runs(request: Request) -> BackgroundRuns:
    """This process's runs (made by the app's lifespan; one for tests that skip it)."""
    return per_app(request.app, "background", BackgroundRuns)


def detached(request: Request) -> Request:
    """`request` (its body read) for work that outlives its connection: what it receives
    next never comes, so nothing takes the closed connection for a client that left. Its
    scope is a copy (`apart`): the work's decision id is not the id of the request's own
    answer, which may not have started yet."""
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    return Request(apart(request.scope), receive)


def _end(events: RunLog | None, ended: Callable[[], None] | None) -> None:
    """What a run's end does, whether its task ran or it was refused unrun: its
    `events` closed (its followers in this process end), then `ended()` told."""
    if events is not None:
        events.close()
    if ended is not None:
        ended()
