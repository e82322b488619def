"""The Responses front where responses are kept (`_Kept`): one request's conversion,
which reads the response (or conversation) it continues and keeps the one it answers,
for `llmroute.server.responses` and its background runs
(`llmroute.server.responses_background`)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from functools import partial
from typing import Any

from llmroute.log_every import LogEvery
from llmroute.server.background_stream import EventChunks
from llmroute.server.chunk_translation import translated
from llmroute.server.errors import GatewayError
from llmroute.server.fronts import Events
from llmroute.server.responses_background import NOT_KEPT, as_failed, reaped, unavailable
from llmroute.server.responses_convert import (
    continued,
    conversation_of,
    echoed,
    input_items,
    own_chat_body,
    resolved,
    to_response,
)
from llmroute.server.responses_stream import ResponsesStream
from llmroute.state.conversations import ConversationStore
from llmroute.state.stored_responses import (
    RUNNING,
    BrokenChain,
    ResponseChain,
    ResponseStore,
    StoredResponse,
    new_response_id,
    with_ids,
)
from llmroute.state.stores import StoreUnavailable, asked

log = logging.getLogger("llmroute.server")

# "not kept" said once a minute (with how many since): a store that fails at once (a
# Redis outage's pause) fails every request that comes, which each wrote a line
_NOT_KEPT_SAID = LogEvery(60.0)


class _Kept:
    """The Responses front where responses are kept: one request's conversion, which
    reads the response it continues and keeps the one it answers."""

    def __init__(
        self,
        store: ResponseStore,
        owner: str,
        count: Callable[[str], None] = lambda _: None,
        abandoned: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.owner = owner
        self._count = count  # conversation outcomes, to their metric
        self._abandoned = abandoned  # a background response found abandoned, to its metric
        self.id = new_response_id()
        self.created_at = int(time.time())
        self.background = False
        self.not_kept = False  # made, but kept failed: too large to keep
        self.unwanted = False  # made, but cancelled or deleted meanwhile: not kept
        self.ended: StoredResponse | None = None  # its record as last found ended (not by it)
        self._streamed = False  # a background stream: its events are kept too
        self._translator: ResponsesStream | None = None  # one that has announced it
        self._keep = True
        self._input: list[dict[str, Any]] = []
        self._chain: list[str] = []  # the responses this one continues, oldest first
        self._conversation: str | None = None  # the conversation it adds to
        self._turn_added = False  # its turn is in its conversation: not added again
        # a background response's record as first kept: its run writes only over it
        self.queued_as: bytes | None = None

    async def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` as chat, the turns it continues read from the store only once the body
        itself is found right (its own fault is answered first, as chat's would be)."""
        chat = own_chat_body(body, kept=True)
        self.background = _background(body)
        previous = body.get("previous_response_id")
        if body.get("conversation") is not None and previous is not None:
            raise GatewayError(
                400,
                "'previous_response_id' and 'conversation' cannot both be given",
                param="conversation",
            )
        if previous == "":
            raise GatewayError(
                400, "'previous_response_id' must be a string", param="previous_response_id"
            )
        earlier: list[dict[str, Any]] = []
        if body.get("conversation") is not None:
            earlier = await self._conversation_items(body)
        if previous is not None:
            chain = await _chain_of(self.store, self.owner, previous)
            if chain is None:
                raise GatewayError(
                    400,
                    f"Previous response with id '{_shown(previous)}' not found "
                    "(never kept, expired, deleted, or made with another client key).",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            if chain.last.running:
                last = await _read(self.store, self.owner, previous, self._abandoned)
                chain = chain if last is None else replace(chain, last=last)
            if chain.last.response.get("status") in RUNNING:
                raise GatewayError(
                    400,
                    f"Previous response '{_shown(previous)}' is still in progress: wait for "
                    "it to complete",
                    param="previous_response_id",
                )
            earlier = chain.context()
            self._chain = chain.continued_by()
        given, body = body, resolved(body, earlier)
        if earlier or body is not given:
            chat = continued(chat, given, body, earlier)
        self._keep = body.get("store") is not False
        self._streamed = self.background and body.get("stream") is True
        if self._keep or self._conversation is not None:
            self._input = with_ids(input_items(body), self.id)
        return chat

    async def _conversation_items(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        named = conversation_of(body)
        if named is None:
            raise GatewayError(
                400, "'conversation' must be an id or {\"id\": ...}", param="conversation"
            )
        store = ConversationStore(self.store)
        try:
            if await store.get(self.owner, named["id"]) is None:
                self._count("not_found")
                raise GatewayError(
                    404,
                    f"Conversation with id '{_shown(named['id'])}' not found.",
                    param="conversation",
                    code="not_found",
                )
            items = await store.items(self.owner, named["id"])
        except StoreUnavailable as exc:
            self._count("error")
            raise unavailable(exc) from None
        self._conversation = named["id"]
        return items

    def announce(self, body: dict[str, Any]) -> list[bytes]:
        """A background stream's opening events, said before its answer is asked for."""
        self._translator = ResponsesStream(
            str(body.get("model")), body, self.id, self._keep, self.created_at
        )
        return self._translator.announce()

    def stream(
        self,
        model: str,
        body: dict[str, Any],
        events: Events,
        served: Callable[[], str] | None = None,
    ) -> AsyncIterator[bytes]:
        translator = self._translator or ResponsesStream(
            model, body, self.id, self._keep, self.created_at
        )
        translator.serving(model)
        if served is not None:
            translator.follow(served)
        if not self._keep and self._conversation is None:
            return translated(events, translator)
        kept = False

        async def keep_when_final(made: list[bytes]) -> list[bytes]:
            nonlocal kept
            final = translator.final
            if final is None or kept:
                return made
            kept = True  # the closing event is the last of `made`: it says whether it was
            if self.background:
                return await self._settled(made, final, translator)
            # a conversation gains only finished turns
            stored = await self._kept(final, added=final["status"] != "failed")
            if stored is False and made:
                await self._said_not_kept(final)
                made[-1] = translator.final_event()
            return made

        return translated(events, translator, keep_when_final)

    async def _settled(
        self, made: list[bytes], final: dict[str, Any], translator: ResponsesStream
    ) -> list[bytes]:
        """A background stream's last events (`made`, its closing event last), `final`
        kept first. Its closing event says what a poll reads: where `final` was not kept
        (cancelled, deleted or found abandoned meanwhile, or its store failing), it is
        made of the record as kept then (where it cannot be read: as last found, else
        failed): ``response.failed`` with its error where it failed, none where it was
        cancelled or deleted."""
        if not made:
            return made
        if await self._wanted():
            stored = await self._kept(final, added=final["status"] != "failed")
            if stored is True:
                return made
            if stored is False:
                await self._said_not_kept(final)
        read = partial(self.store.get, self.owner, self.id)
        try:
            record = await asked(read)
        except StoreUnavailable:
            record = self.ended if self.unwanted else as_failed(self.record(final), 500, NOT_KEPT)
        status = None if record is None else record.response.get("status")
        if record is None or status == "cancelled":
            return made[:-1]
        if status == "failed":
            made[-1] = translator.failed_event(record.response)
        elif status in RUNNING:  # not kept failed either: its lease, given up, will be
            made[-1] = translator.failed_event(as_failed(record, 500, NOT_KEPT).response)
        else:  # its write landed though the store failed to say so
            self.unwanted = self.not_kept = False
            self.ended = None
            if final["status"] != "failed":
                await self._add_to_conversation(final)
        return made

    async def answer(self, data: dict[str, Any], model: str, body: dict[str, Any]) -> Any:
        response = to_response(data, model, body, self.id, self._keep, self.created_at)
        if self.background:
            response["background"] = True
            if not await self._wanted():
                return response
        if await self._kept(response, added=True) is False:
            await self._said_not_kept(response)
        return response

    async def _kept(self, response: dict[str, Any], *, added: bool) -> bool | None:
        """`response` kept (`_put`, where responses are kept), then its turn `added` to its
        conversation: whether it was kept. In that order, so that a background one
        cancelled or deleted meanwhile (its write refused) is neither: None, nobody wants
        it."""
        kept = not self._keep or await self._put(response)
        if not kept and self.background and not await self._wanted():
            return None
        if added:
            await self._add_to_conversation(response)
        return kept

    async def _wanted(self) -> bool:
        """Whether the kept background response is still running (a store that does not
        answer: taken as yes; keeping it then fails the same way, with a warning); one
        cancelled, deleted or found abandoned meanwhile is noted `unwanted` (nobody wants
        it kept), its record as found in `ended`."""
        try:
            found = await self.store.get(self.owner, self.id)
        except StoreUnavailable:
            self.unwanted = False
            return True
        self.unwanted = found is None or found.response.get("status") not in RUNNING
        self.ended = found if self.unwanted else None
        return not self.unwanted

    async def _said_not_kept(self, response: dict[str, Any]) -> None:
        """`response` made but not kept: it says so (it cannot be continued or read back),
        and a background one is kept failed (else in_progress until its lease lapses)."""
        response["store"] = False
        if self.background:
            self.not_kept = await self.fail(500, NOT_KEPT)

    async def _add_to_conversation(self, response: dict[str, Any]) -> None:
        """The request's input and the response's output, added to its conversation (a
        store that does not answer loses them, with a warning: the answer still goes);
        once: a background answer's write that failed adds it (taken as still wanted),
        and the record read back as made afterwards (`_settled`) would add it again."""
        if self._conversation is None or self._turn_added:
            return
        output = response.get("output")
        items = [*self._input, *(output if isinstance(output, list) else ())]
        for item in items:
            if item.get("type", "message") == "message":
                item.setdefault("status", "completed")
        conversations = ConversationStore(self.store)
        try:
            await conversations.add(self.owner, self._conversation, items, wait=self.background)
        except StoreUnavailable as exc:
            self._count("error")
            log.warning("conversations: response %s not added: %s", self.id, exc)
            return
        self._turn_added = True
        self._count("turn_added")

    def queued(self, body: dict[str, Any]) -> dict[str, Any]:
        """The response of a background request, before its answer."""
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": "in_progress",
            "background": True,
            "incomplete_details": None,
            "error": None,
            "model": body.get("model"),
            "output": [],
            "usage": None,
            **echoed(body, True),
        }

    def events(self) -> EventChunks:
        """Where a background stream's events are kept."""
        return EventChunks(self.store, self.owner, self.id)

    def record(self, response: dict[str, Any]) -> StoredResponse:
        return StoredResponse(response, self._input, self._chain, self._streamed)

    async def status(self) -> str | None:
        """The kept response's status now; None when it is not kept (deleted)."""
        record = await self.store.get(self.owner, self.id)
        return None if record is None else str(record.response.get("status"))

    async def fail(self, status: int, message: str, *, wait: bool = True) -> bool:
        """Keep the background response as failed, unless it was cancelled or deleted
        (then False). Asked of the store itself (`asked`: past the pause after a failure
        that came a moment before) unless `wait` is False (a client or a shutdown
        waits: an abandoned response is kept failed once its lease lapses)."""

        read = partial(self.store.read, self.owner, self.id)
        try:
            found = await (asked(read) if wait else read())
            if found is None or found[0].response.get("status") not in RUNNING:
                self.ended = None if found is None else found[0]
                return False
            failed = as_failed(found[0], status, message)
            kept = await self.store.put_ended(self.owner, failed, found[1], wait=wait)
            return kept is not None
        except StoreUnavailable as exc:
            log.warning("responses: background response %s not marked failed: %s", self.id, exc)
        return True

    async def _put(self, response: dict[str, Any]) -> bool:
        """Keep `response`: at once or not, for a client waiting; a background one is
        asked of the store itself (`put`'s `wait`: once more after a failure; one that
        landed all the same is read back as kept), its poller waits for
        it, and only over its record as first kept (one cancelled, deleted or found
        abandoned meanwhile is left so)."""
        record, background = self.record(response), self.background
        over = self.queued_as if background else None
        try:
            return await self.store.put(self.owner, record, wait=background, over=over)
        except StoreUnavailable as exc:
            held = _NOT_KEPT_SAID.due("paused" if exc.paused_s else "failed")
            if held is not None:
                log.warning(
                    "responses: response %s not kept: %s%s", self.id, exc, LogEvery.since(held)
                )
            return False


async def _read(
    store: ResponseStore,
    owner: str,
    response_id: str,
    abandoned: Callable[[], None] = lambda: None,
) -> StoredResponse | None:
    """`reaped`, a store that does not answer a 503."""
    try:
        return await reaped(store, owner, response_id, abandoned)
    except StoreUnavailable as exc:
        raise unavailable(exc) from None


async def _chain_of(
    store: ResponseStore, owner: str, response_id: str, counted: bool = True
) -> ResponseChain | None:
    """The turns up to `response_id`; 400 when an earlier one is gone."""
    try:
        return await store.chain(owner, response_id, counted=counted)
    except StoreUnavailable as exc:
        raise unavailable(exc) from None
    except BrokenChain as broken:
        why = (
            "was kept without the turns before it (it ended too large to keep whole)"
            if broken.bare
            else f"continues '{broken.missing}', which is no longer kept (expired, evicted "
            "or deleted)"
        )
        raise GatewayError(
            400,
            f"Response '{_shown(response_id)}' {why}: its conversation cannot be given "
            "whole; send it in 'input' instead",
            param="previous_response_id",
            code="previous_response_not_found",
        ) from None


def _background(body: dict[str, Any]) -> bool:
    """Whether the request asks to be made in the background; 400 where it cannot be."""
    background = body.get("background")
    if background is not None and not isinstance(background, bool):
        raise GatewayError(400, "'background' must be true or false", param="background")
    if background is not True:
        return False
    if body.get("store") is False:
        raise GatewayError(
            400,
            "a background response is kept so that it can be polled: 'background' needs "
            "'store' true",
            param="store",
        )
    return True


def _shown(response_id: str) -> str:
    """An id as an error may repeat it: bounded, printable."""
    return response_id[:80] if response_id.isprintable() else "(unprintable)"
