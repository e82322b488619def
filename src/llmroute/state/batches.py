"""Files and batches kept for OpenAI's Batch API front (registry ``batches``; docs/gateway.md).

A file is its OpenAI file object (``{"id", "object": "file", "bytes", "purpose", …}``)
and its content, kept apart so that listing files reads no content; a batch is its
OpenAI batch object with the ids of the two files its answers go to. A running batch
writes its answers in parts as it makes them (`put_part`, each part written whole, so a
write that timed out can be retried without doubling lines) and counts the parts in its
record: a process that dies leaves the answers it had counted behind. Only the process
running a batch writes its record; a cancel is a flag beside it (`ask_cancel`), so the
two never overwrite each other. Each client key sees only its own (the key's name is
hashed into the store key) and ids are unguessable. An append-only index per key and
kind lists them, newest first; a set names the batches still running, for the gateways
to find one whose process stopped (`running`).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeGuard

from llmroute.registry.schema import BatchesSettings, Registry
from llmroute.state.stores import (
    KeyValueStore,
    ListingRead,
    owned_key,
    owner_prefix,
    owner_tag,
    state_store,
)

__all__ = [
    "BatchRecord",
    "BatchStore",
    "KeyQuota",
    "Running",
    "UploadsContended",
    "Written",
    "new_batch_id",
    "new_file_id",
]

log = logging.getLogger("llmroute.batches")

_VERSION = 1
Kind = Literal["file", "batch"]
_COMPACT_AFTER = 1_000  # listed ids found gone before the index is rewritten
_RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
_QUOTA_TRIES = 50  # an upload's reads of its key's quota, each lost to another upload kept


@dataclass(frozen=True, slots=True)
class KeyQuota:
    """One client key's kept `files` and the bytes they hold (`held`), against its
    ``max_key_files`` and ``max_key_bytes`` (None: no bound)."""

    files: int
    held: int
    most_files: int | None
    most_bytes: int | None

    def room(self) -> int | None:
        """The most bytes one more file may hold (None: no bound)."""
        return None if self.most_bytes is None else max(0, self.most_bytes - self.held)

    def over(self, size: int) -> str | None:
        """Why the key may not keep one more file of `size` bytes; None when it may."""
        if (why := self._at_most_files()) is not None:
            return why
        if self.most_bytes is not None and self.held + size > self.most_bytes:
            return self._past_bytes(str(size))
        return None

    def full(self) -> str | None:
        """Why the key may keep no more file of any size; None when it may. Its batches'
        output files, never refused, may have taken it past ``max_key_bytes``."""
        if (why := self._at_most_files()) is not None:
            return why
        if self.most_bytes is not None and self.held >= self.most_bytes:
            return (
                f"holds {self.held} bytes of files, no room left under "
                f"batches.max_key_bytes ({self.most_bytes})"
            )
        return None

    def _at_most_files(self) -> str | None:
        if self.most_files is not None and self.files >= self.most_files:
            return f"holds {self.files} files, as many as batches.max_key_files ({self.most_files})"
        return None

    def past_room(self) -> str:
        """Why a file of more than its `room` is refused (before it was read whole)."""
        return self._past_bytes(f"more than {self.room()}")

    def _past_bytes(self, size: str) -> str:
        return (
            f"holds {self.held} bytes of files, and this one's {size} would pass "
            f"batches.max_key_bytes ({self.most_bytes})"
        )


def new_file_id() -> str:
    return f"file-{secrets.token_hex(24)}"


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(24)}"


class UploadsContended(Exception):
    """An upload checked against its key's quota `tries` times, another upload of the
    key kept each time in between: not refused by the quota, and worth sending again."""

    def __init__(self, tries: int) -> None:
        super().__init__(f"{tries} other uploads were kept as this one was checked")
        self.tries = tries


@dataclass(frozen=True, slots=True)
class Written:
    """How much of a file made in parts is written and counted: `parts` parts holding
    `size` bytes and `lines` lines."""

    parts: int = 0
    size: int = 0
    lines: int = 0

    def plus(self, data: bytes, lines: int) -> Written:
        return Written(self.parts + 1, self.size + len(data), self.lines + lines)


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A kept batch: its OpenAI object, the ids of the files its answers (`output`) and
    its failed requests (`errors`) go to, how much of each is written, and the
    ``x-llmroute-*`` headers of the request that made it (`headers`: what a process
    taking over the batch sends its requests with; never a key)."""

    batch: dict[str, Any]
    output: str
    errors: str
    output_written: Written = Written()
    errors_written: Written = Written()
    headers: dict[str, str] = field(default_factory=dict)  # the x-llmroute-* it was made with
    output_ttl_s: float | None = None  # its ``output_expires_after``: its files kept so long

    @property
    def id(self) -> str:
        return str(self.batch.get("id") or "")

    @property
    def status(self) -> str:
        return str(self.batch.get("status") or "")

    def to_bytes(self) -> bytes:
        record = {
            "v": _VERSION,
            "batch": self.batch,
            "output": [self.output, *_triple(self.output_written)],
            "errors": [self.errors, *_triple(self.errors_written)],
            "headers": self.headers,
        }
        if self.output_ttl_s is not None:
            record["output_ttl_s"] = self.output_ttl_s
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> BatchRecord | None:
        record = _loads(raw)
        if record is None or record.get("v") != _VERSION:
            return None
        batch, output, errors = record.get("batch"), record.get("output"), record.get("errors")
        if not (isinstance(batch, dict) and _file_entry(output) and _file_entry(errors)):
            return None
        headers = record.get("headers") or {}
        if not (isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())):
            return None
        ttl = record.get("output_ttl_s")
        ttl = float(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) else None
        written = Written(*output[1:]), Written(*errors[1:])
        return cls(batch, output[0], errors[0], *written, headers, ttl)

    def with_batch(self, **changes: Any) -> BatchRecord:
        return replace(self, batch={**self.batch, **changes})


def _triple(written: Written) -> tuple[int, int, int]:
    return written.parts, written.size, written.lines


def _file_entry(value: Any) -> TypeGuard[list[Any]]:
    return (
        isinstance(value, list)
        and len(value) == 4
        and isinstance(value[0], str)
        and all(isinstance(n, int) and n >= 0 for n in value[1:])
    )


@dataclass(frozen=True, slots=True)
class Running:
    """A batch noted as running: the `owner_tag` of its key, its id, when it expires."""

    tag: str
    batch_id: str
    expires_at: int

    @classmethod
    def of(cls, owner: str, record: BatchRecord) -> Running:
        return cls(owner_tag(owner), record.id, int(record.batch.get("expires_at") or 0))

    @property
    def member(self) -> str:
        return f"{self.tag} {self.batch_id} {self.expires_at}"


class BatchStore:
    """Keeps, finds and forgets files and batches, per client key (`owner`; ``""``
    without keys). A store that does not answer raises `StoreUnavailable`."""

    def __init__(self, settings: BatchesSettings, store: KeyValueStore) -> None:
        self.settings = settings
        self._store = store
        self._prefix = f"{settings.namespace}:batches:"

    @classmethod
    def open(cls, registry: Registry) -> BatchStore | None:
        """The registry's batch store, or None without a ``batches`` section. Opening
        Redis does not connect."""
        settings = registry.batches
        if settings is None:
            return None
        store = state_store(
            "batches",
            settings.url,
            settings.max_entries,
            settings.max_bytes,
            settings.timeout_s,
            per_owner=True,
        )
        return cls(settings, store)

    @property
    def url(self) -> str:
        return self._store.url

    def same_place(self, other: BatchStore) -> bool:
        """Whether `other` keeps its batches where this store does (a reloaded registry's
        store: the same Redis and namespace, or the same memory store)."""
        if self.url != other.url or self._prefix != other._prefix:
            return False
        return self.url != "memory" or self._store is other._store

    def _key(self, owner: str, name: str) -> str:
        return owned_key(self._prefix, owner, name)

    async def forget(self, owner: str | None) -> int:
        """Drop every file and batch kept for client key `owner` (``""``: requests
        without keys), or for everyone when None; how many records there were. A batch
        still running goes on, its answers kept as it makes them."""
        prefix = self._prefix if owner is None else owner_prefix(self._prefix, owner)
        return await self._store.delete_prefix(prefix)

    # -- files ------------------------------------------------------------------------

    def ttl(self, asked_s: float | None = None) -> float:
        """How long a file is kept: `ttl_s`, or less where its client asked for less
        (``expires_after``, ``output_expires_after``)."""
        return self.settings.ttl_s if asked_s is None else min(asked_s, self.settings.ttl_s)

    async def put_file(
        self,
        owner: str,
        file: dict[str, Any],
        content: bytes | None = None,
        parts: int = 0,
        ttl_s: float | None = None,
    ) -> None:
        """Keep `file` (its object) with its `content` (an upload), or made of the first
        `parts` parts written by `put_part` (a batch's answers, which then expire with
        it); listed. Kept `ttl`."""
        asked, ttl_s = ttl_s, self.ttl(ttl_s)
        file_id = str(file["id"])
        if content is not None:
            await self._store.set(self._key(owner, f"content\0{file_id}"), content, ttl_s)
        elif parts:
            keys = [self._part_key(owner, file_id, k) for k in range(parts)]
            await self._store.unpin(keys)  # the batch has ended: a file like any other
            if asked is not None:
                await self._store.touch(keys, ttl_s)
        record = {"file": file, "parts": None if content is not None else parts}
        await self._store.set(self._file_key(owner, file_id), _dumps(record), ttl_s)
        await self._listed(owner, "file", file_id)

    async def put_part(self, owner: str, file_id: str, k: int, data: bytes) -> None:
        """Part `k` of a file made in parts (written again, it is replaced: a write that
        may or may not have happened can be retried)."""
        if self.url == "memory" and len(data) > self.settings.max_bytes:
            log.warning(
                "batches: %d bytes of answers are more than the memory store holds "
                "(batches.max_bytes %d): not kept; give batches a Redis url or split the batch",
                len(data),
                self.settings.max_bytes,
            )
        # kept `ttl_s` while the batch runs, whatever its output_expires_after: its file,
        # made when it ends, gives its parts that lifetime from then (`put_file`); pinned
        # till then, so that in memory its key's other records are evicted first
        key = self._part_key(owner, file_id, k)
        await self._store.set_pinned(key, data, self.settings.ttl_s)

    async def lost(self, owner: str, record: BatchRecord) -> bool:
        """Whether a part of `record`'s answers, written and counted, is gone: evicted
        from memory (too large for the store, or its key held the most and nothing but
        running batches' answers), or by Redis's own ``maxmemory-policy`` (any but
        ``noeviction`` may take them: they expire). One ``EXISTS``, no part read."""
        files = ((record.output, record.output_written), (record.errors, record.errors_written))
        keys = [self._part_key(owner, f, k) for f, written in files for k in range(written.parts)]
        return await self._store.count(keys) < len(keys)

    async def get_file(self, owner: str, file_id: str) -> dict[str, Any] | None:
        record = await self._file_record(owner, file_id)
        return None if record is None else record["file"]

    async def _file_record(self, owner: str, file_id: str) -> dict[str, Any] | None:
        raw = await self._store.get(self._file_key(owner, file_id))
        record = None if raw is None else _loads(raw)
        if record is None or not isinstance(record.get("file"), dict):
            return None
        return record if record["file"].get("id") == file_id else None

    async def content(self, owner: str, file_id: str) -> bytes | None:
        """The file's bytes; None when it is not kept (or a part of it is gone)."""
        record = await self._file_record(owner, file_id)
        if record is None:
            return None
        parts = record.get("parts")
        if not isinstance(parts, int):
            return await self._store.get(self._key(owner, f"content\0{file_id}"))
        found = await self._store.get_many(
            [self._part_key(owner, file_id, k) for k in range(parts)]
        )
        if any(part is None for part in found):
            return None
        return b"".join(part for part in found if part is not None)

    def _part_key(self, owner: str, file_id: str, k: int) -> str:
        return self._key(owner, f"part\0{file_id}\0{k}")

    async def delete_file(self, owner: str, file_id: str) -> bool:
        record = await self._file_record(owner, file_id)
        if record is None:
            return False
        parts = record.get("parts")
        keys = [self._file_key(owner, file_id), self._key(owner, f"content\0{file_id}")]
        if isinstance(parts, int):
            keys += [self._part_key(owner, file_id, k) for k in range(parts)]
        await self._store.delete_many(keys)
        return True

    async def put_upload(
        self, owner: str, file: dict[str, Any], content: bytes, ttl_s: float | None = None
    ) -> str | None:
        """Keep uploaded `file` with its `content` (`put_file`) if `owner`'s quota
        (`max_key_files`, `max_key_bytes`: what its kept files, uploads and batches'
        answers, hold) has room for it; else why not (nothing kept). What its files hold is
        read from its listing, and the file listed only if the listing is still as read
        (`set_appending`; else read again): uploads at the same moment cannot each pass
        the quota by one. `UploadsContended` (nothing kept) when that lost every try."""
        if self.settings.max_key_files is None and self.settings.max_key_bytes is None:
            await self.put_file(owner, file, content, ttl_s=ttl_s)
            return None
        file_id, ttl = str(file["id"]), self.ttl(ttl_s)
        content_key, written = self._key(owner, f"content\0{file_id}"), False
        record, line = _dumps({"file": file, "parts": None}), f"{file_id}\n".encode()
        key, index = self._file_key(owner, file_id), self._index(owner, "file")
        why: str | None = None
        for _ in range(_QUOTA_TRIES):  # each try lost to another upload that was kept
            raw, kept = await self._read_listing(owner, "file", self._file_key)
            if (why := self._quota(kept).over(len(content))) is not None:
                break
            if not written:  # once it passed: a refused one writes nothing (a full
                # memory store would evict for it), and nothing names it until listed
                await self._store.set(content_key, content, ttl)
                written = True
            read = ListingRead(raw, line)
            if await self._store.set_appending(key, record, ttl, index, read, self.settings.ttl_s):
                return None
        if written:
            await self._store.delete(content_key)
        if why is None:
            raise UploadsContended(_QUOTA_TRIES)
        return why

    async def quota(self, owner: str) -> KeyQuota:
        """What `owner`'s kept files hold against its quota (nothing read without one)."""
        if self.settings.max_key_files is None and self.settings.max_key_bytes is None:
            return KeyQuota(0, 0, None, None)
        return self._quota(await self.files(owner))

    def _quota(self, kept: list[dict[str, Any]]) -> KeyQuota:
        held = sum(int(f.get("bytes") or 0) for f in kept)
        settings = self.settings
        return KeyQuota(len(kept), held, settings.max_key_files, settings.max_key_bytes)

    async def files(self, owner: str) -> list[dict[str, Any]]:
        """`owner`'s kept files, newest first."""
        return await self._listing(owner, "file", self._file_key)

    def _file_key(self, owner: str, file_id: str) -> str:
        return self._key(owner, f"file\0{file_id}")

    # -- batches ----------------------------------------------------------------------

    async def put_batch(self, owner: str, record: BatchRecord, *, new: bool = False) -> None:
        """Keep `record`; pinned while its batch runs (`put_part`), which a queued batch's
        record, written once, would not be by use. An ended batch's lease is dropped: it
        holds nothing, and in memory, pinned, it would outlive its key's live files."""
        running = record.status in _RUNNING
        keep = self._store.set_pinned if running else self._store.set
        await keep(self._key(owner, f"batch\0{record.id}"), record.to_bytes(), self.settings.ttl_s)
        if not running:
            await self._store.delete(self._lease(owner, record.id))
        if new:
            await self._listed(owner, "batch", record.id)

    async def get_batch(self, owner: str, batch_id: str) -> BatchRecord | None:
        raw = await self._store.get(self._key(owner, f"batch\0{batch_id}"))
        record = None if raw is None else BatchRecord.from_bytes(raw)
        if raw is not None and (record is None or record.id != batch_id):
            log.warning("batches: the record of a batch could not be read; ignored")
            return None
        return record

    async def batches(self, owner: str) -> list[dict[str, Any]]:
        """`owner`'s kept batches (their records), newest first."""
        return await self._listing(owner, "batch", self._batch_key)

    def _batch_key(self, owner: str, batch_id: str) -> str:
        return self._key(owner, f"batch\0{batch_id}")

    async def hold(self, owner: str, batch_id: str, holder: str) -> None:
        """Say for `settings.lease_s` that process `holder` (a token of its run) runs the
        new batch `batch_id` (pinned, as its parts: renewing it is no use of it)."""
        lease = self._lease(owner, batch_id)
        await self._store.set_pinned(lease, holder.encode(), self.settings.lease_s)

    async def renew(self, owner: str, batch_id: str, holder: str) -> bool:
        """Hold `batch_id` `settings.lease_s` more if `holder` still holds it; False when
        its lease lapsed (taken over by another process, or not yet)."""
        key = self._lease(owner, batch_id)
        return await self._store.renew(key, holder.encode(), self.settings.lease_s)

    def _lease(self, owner: str, batch_id: str) -> str:
        return self._key(owner, f"lease\0{batch_id}")

    async def take(self, owner: str, batch_id: str, holder: str) -> bool:
        """Take `batch_id` over for `holder` if no process holds it: whether this one won
        (of several reading it at once, one does)."""
        key = self._lease(owner, batch_id)
        return await self._store.add(key, holder.encode(), self.settings.lease_s)

    async def release(self, owner: str, batch_id: str, holder: str) -> None:
        """Give `batch_id` up (a stopping process), if `holder` still holds it, so that the
        next read takes it over."""
        await self._store.renew(self._lease(owner, batch_id), holder.encode(), 0.001)

    async def written(self, owner: str, file_id: str, parts: int) -> list[bytes]:
        """The first `parts` parts of a file being made, each whole lines (what is
        missing, left out): not joined, a copy of the whole output on the event loop."""
        found = await self._store.get_many(
            [self._part_key(owner, file_id, k) for k in range(parts)]
        )
        return [part for part in found if part is not None]

    async def held(self, owner: str, batch_id: str) -> bool:
        return await self._store.get(self._lease(owner, batch_id)) is not None

    async def ask_cancel(self, owner: str, batch_id: str, when: int) -> None:
        """Flag `batch_id` to be cancelled, asked at `when` (the process running it looks
        each second)."""
        key = self._key(owner, f"cancel\0{batch_id}")
        await self._store.set(key, str(when).encode(), self.settings.ttl_s)

    async def cancel_asked(self, owner: str, batch_id: str) -> int | None:
        """When a cancel of `batch_id` was asked; None if it was not."""
        raw = await self._store.get(self._key(owner, f"cancel\0{batch_id}"))
        return None if raw is None else int(raw.decode() or 0)

    # -- running batches, found by the sweep (llmroute.server.batch_sweep) -------------

    async def mark_running(self, owner: str, record: BatchRecord) -> str | None:
        """Note `record`'s batch as running until `unmark_running`, so that a gateway
        finds it to take over when its process stops, whether anyone reads it or not.
        The set holds a hash of the key's name (`owner_tag`), never the name. Refused
        (why; None when noted) when `owner` has ``max_key_batches`` noted (queued ones
        included, until they end): counted and noted in one step, so batches made at the
        same moment cannot each pass it by one."""
        running, ttl_s = Running.of(owner, record), self.settings.ttl_s
        most = self.settings.max_key_batches
        if most is None:
            await self._store.add_member(self._running, running.member, ttl_s)
            return None
        there = await self._store.add_member_within(
            self._running, running.member, ttl_s, f"{running.tag} ", most
        )
        if there is None:
            return None
        return f"has {there} batches running or queued, as many as batches.max_key_batches ({most})"

    async def unmark_running(self, owner: str, record: BatchRecord) -> None:
        await self._store.remove_member(self._running, Running.of(owner, record).member)

    async def drop_running(self, running: Running) -> None:
        await self._store.remove_member(self._running, running.member)

    async def running(self) -> list[Running]:
        """The batches noted as running."""
        found = []
        for member in await self._store.members(self._running):
            tag, batch_id, expires = [*member.split(" "), "", "", ""][:3]
            if tag and batch_id and expires.isascii() and expires.isdigit():
                found.append(Running(tag, batch_id, int(expires)))
        return found

    @property
    def _running(self) -> str:
        return f"{self._prefix}running"

    # -- listing ----------------------------------------------------------------------

    def _index(self, owner: str, kind: Kind) -> str:
        return self._key(owner, f"index\0{kind}")

    async def _listed(self, owner: str, kind: Kind, item_id: str) -> None:
        index = self._index(owner, kind)
        await self._store.append(index, f"{item_id}\n".encode(), self.settings.ttl_s)

    async def _listing(
        self, owner: str, kind: Kind, key_of: Callable[[str, str], str]
    ) -> list[dict[str, Any]]:
        return (await self._read_listing(owner, kind, key_of))[1]

    async def _read_listing(
        self, owner: str, kind: Kind, key_of: Callable[[str, str], str]
    ) -> tuple[bytes | None, list[dict[str, Any]]]:
        """`owner`'s kept items of `kind`, newest first, and the listing they were read
        from (as rewritten, when it was)."""
        index = self._index(owner, kind)
        raw = await self._store.get(index)
        if not raw:
            return raw, []
        ids = list(dict.fromkeys(raw.decode().split()))
        ids.reverse()
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            for item_id, value in zip(
                part, await self._store.get_many([key_of(owner, i) for i in part]), strict=True
            ):
                data = None if value is None else _loads(value)
                if data is not None:
                    data = data.get(kind) if isinstance(data.get(kind), dict) else None
                if data is not None and data.get("id") == item_id:
                    found.append(data)
        gone = len(ids) - len(found)
        if gone > _COMPACT_AFTER and gone > len(found):
            # rewritten with the ids still kept; an id appended meanwhile may drop out of
            # the listing (never out of the store)
            kept = "".join(f"{item['id']}\n" for item in reversed(found)).encode()
            await self._store.set(index, kept, self.settings.ttl_s)
            raw = kept
        return raw, found

    async def aclose(self) -> None:
        await self._store.aclose()


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _loads(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
