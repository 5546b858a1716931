"""The PostgreSQL writer: queued write operations, group-committed in batches, numbered under an
advisory lock so several replicas keep ONE gap-free sequence and ONE audit hash chain.

Why a lock and not a sequence: a sequence hands out numbers at insert time, so two writers can
commit 8 before 7, and a reader that saw 8 would skip 7 for ever. Here every batch, in one
READ COMMITTED transaction:

    BEGIN
    pg_advisory_xact_lock(WRITE_LOCK, <schema>)   -- one batch at a time, across all replicas
    read the heads: max event seq, last audit seq and hash  -- sees every earlier commit
    for each operation: run it (state change + audit record + event)
    pg_notify('taskpass_events', 'events:<seq> ...')  -- what changed (postgres_notify); at commit
    COMMIT                                        -- durable (synchronous_commit) before replies

The lock is released only after the commit is durable and visible, so the next holder reads
heads that include it: numbers follow commit order with no gaps, and each audit record chains
to the one committed before it, whichever replica wrote that. Batching takes the lock (and pays
the commit's WAL flush) once for many operations, as the SQLite writer does. An operation that
fails fails alone: the batch is rolled back and run again with a savepoint around each
operation (see _run_batch); its caller gets the error, the others commit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from taskpass.server.errors import StoreCorrupted, TaskpassError, Unavailable
from taskpass.server.policy.patterns import patterns_covering
from taskpass.server.store import postgres_notify
from taskpass.server.store.audit_chain import GENESIS_HASH, HeadLog, chain_hash
from taskpass.server.store.postgres_codec import codec
from taskpass.server.store.postgres_errors import DISCONNECTED, store_error
from taskpass.server.store.postgres_schema import SCHEMA_KEY
from taskpass.server.store.records import (
    AuditEntry,
    AuditRecord,
    NewRevocation,
    RevocationEvent,
)
from taskpass.server.store.sqlite_writer import BatchCounts, BatchObserver, WriterStats, answer

T = TypeVar("T")

DEFAULT_MAX_BATCH = 256
WRITE_LOCK = 0x74707772  # "tpwr"; see postgres_schema.MIGRATION_LOCK

_LOCK = f"SELECT pg_advisory_xact_lock($1, {SCHEMA_KEY})"
_HEADS = """
    SELECT (SELECT coalesce(max(seq), 0) FROM revocation_events),
           (SELECT seq FROM audit ORDER BY seq DESC LIMIT 1),
           (SELECT hash FROM audit ORDER BY seq DESC LIMIT 1)"""
_NOTIFY = "SELECT pg_notify($1, $2)"
_BANS = "SELECT pattern FROM bans"
# Column order follows row_codec.AUDIT / EVENTS.
_INSERT_AUDIT = """
    INSERT INTO audit (seq, kind, actor, at, payload, prev_hash, hash)
    VALUES ($1, $2, $3, $4, $5, $6, $7)"""
_INSERT_EVENT = """
    INSERT INTO revocation_events (seq, kind, subject, task_id, jti, expires_at, at, set_token,
        reason)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""


@dataclass(slots=True)
class _BatchReads:
    """What a batch's operations read once and share (see PgWriteTx.ban_covering)."""

    bans: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class _Heads:
    audit_seq: int
    audit_hash: str
    event_seq: int


class PgWriteTx:
    """What one write operation sees: the batch's connection, inside its own savepoint."""

    __slots__ = ("_batch", "_events", "_heads", "_topics", "conn")

    def __init__(self, conn: Any, heads: _Heads, batch: _BatchReads | None = None) -> None:
        self.conn = conn
        """The asyncpg connection, in the batch transaction (do not commit or roll back)."""
        self._heads = heads
        self._events = False
        self._topics: set[str] = set()
        self._batch = _BatchReads() if batch is None else batch

    async def ban_covering(self, workload_id: str) -> str | None:
        """The pattern of a ban in the table that covers `workload_id`, if any. The table is
        read once per batch: no other replica can change it while this batch holds the write
        lock, and a ban made on another replica is seen before this one's list refreshes."""
        patterns = self._batch.bans
        if patterns is None:
            rows = await self.conn.fetch(_BANS)
            patterns = self._batch.bans = frozenset(row[0] for row in rows)
        if not patterns:
            return None
        return next((p for p in patterns_covering(workload_id) if p in patterns), None)

    @property
    def heads(self) -> _Heads:
        """The sequence heads including what this operation appended."""
        return self._heads

    @property
    def appended_events(self) -> bool:
        return self._events

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._topics)

    def announce(self, topic: str) -> None:
        """NOTIFY listeners of `topic` (see postgres_notify) when the batch commits: something
        they re-read has changed. Appended events are announced without asking."""
        self._topics.add(topic)

    async def append_audit(self, entry: AuditEntry) -> AuditRecord:
        heads = self._heads
        seq = heads.audit_seq + 1
        digest = chain_hash(
            prev_hash=heads.audit_hash,
            seq=seq,
            kind=entry.kind,
            actor=entry.actor,
            at=entry.at,
            payload=entry.payload,
        )
        record = AuditRecord(
            seq=seq,
            kind=entry.kind,
            actor=entry.actor,
            at=entry.at,
            payload=entry.payload,
            prev_hash=heads.audit_hash,
            hash=digest,
        )
        await self.conn.execute(_INSERT_AUDIT, *codec.audit_to_row(record))
        self._heads = _Heads(seq, digest, heads.event_seq)
        return record

    async def append_event(self, new: NewRevocation) -> RevocationEvent:
        heads = self._heads
        event = RevocationEvent.numbered(heads.event_seq + 1, new)
        await self.conn.execute(_INSERT_EVENT, *codec.event_to_row(event))
        self._heads = _Heads(heads.audit_seq, heads.audit_hash, event.seq)
        self._events = True
        return event


WriteFn = Callable[[PgWriteTx], Awaitable[T]]


@dataclass(slots=True)
class _Op(Generic[T]):
    fn: WriteFn[T]
    future: asyncio.Future[T]


# (value, None) on success, (None, error) on failure.
_Outcome = tuple[Any, BaseException | None]


class _NotCommitted(Exception):
    """The connection failed before COMMIT was sent: nothing was written, a retry is safe."""


class PgBatchWriter:
    def __init__(
        self, *, max_batch: int = DEFAULT_MAX_BATCH, channel: str = postgres_notify.EVENTS_CHANNEL
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._max_batch = max_batch
        self._channel = channel
        self._queue: collections.deque[_Op[Any]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._pool: Any = None
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._counts = BatchCounts()
        self._audit_seen = 0  # the highest audit seq this process committed or read as head
        self._head_log = HeadLog()

    @property
    def stats(self) -> WriterStats:
        return self._counts.stats

    def observe(self, observer: BatchObserver) -> None:
        """Call `observer(operations, seconds)` after each committed batch (for metrics)."""
        self._counts.observer = observer

    def start(self, pool: Any) -> None:
        """Serve writes on connections from `pool` (an asyncpg pool, opened by the caller)."""
        self._pool = pool
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name="taskpass-postgres-writer")

    async def stop(self) -> None:
        """Refuse new operations and finish the queued ones (the caller closes the pool)."""
        self._accepting = False
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            await task
        self._pool = None

    async def submit(self, fn: WriteFn[T]) -> T:
        """Run `fn` in the next batch; returns its result once the batch is committed."""
        if not self._accepting:
            raise Unavailable("store is closed")
        op: _Op[T] = _Op(fn, asyncio.get_running_loop().create_future())
        self._queue.append(op)
        self._wakeup.set()
        return await op.future

    async def _run(self) -> None:
        try:
            await self._serve()
        finally:
            # Cancelled (loop shutting down): nobody will run what is still queued.
            self._accepting = False
            while self._queue:
                op = self._queue.popleft()
                if not op.future.done():
                    op.future.set_exception(Unavailable("store is closed"))

    async def _serve(self) -> None:
        while True:
            if not self._queue:
                if not self._accepting:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            take = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(take)]
            # A caller that was cancelled while queued does not want its write any more.
            batch = [op for op in batch if not op.future.done()]
            if not batch:
                continue
            started = time.perf_counter()
            try:
                outcomes = await self._apply_with_retry(batch)
            except BaseException as exc:
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(_lost(exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self._counts.committed(len(batch), time.perf_counter() - started)
            answer((op.future for op in batch), outcomes)

    async def _apply_with_retry(self, batch: list[_Op[Any]]) -> list[_Outcome]:
        # A pooled connection can be dead (the server restarted, a replica's TCP path broke),
        # and then so are its siblings: expire them all and retry once on a fresh connection.
        # Only when COMMIT was never sent, so nothing can be written twice.
        try:
            return await self._apply(batch)
        except _NotCommitted:
            await self._pool.expire_connections()
        try:
            return await self._apply(batch)
        except _NotCommitted as exc:
            raise store_error(exc.__cause__ or exc, write=True) from exc.__cause__

    async def _apply(self, batch: list[_Op[Any]]) -> list[_Outcome]:
        try:
            conn = await self._pool.acquire()
        except DISCONNECTED as exc:
            raise _NotCommitted() from exc
        try:
            return await self._run_batch(conn, batch)
        finally:
            await _release(self._pool, conn)

    async def _run_batch(self, conn: Any, batch: list[_Op[Any]]) -> list[_Outcome]:
        # Optimistic first: no savepoints, which cost two round trips per operation. If one
        # operation fails, the whole transaction is rolled back and the batch runs again with
        # a savepoint around each operation, so only the failing one fails (operations only
        # act through their WriteTx, so running one again repeats it exactly).
        outcomes = await self._attempt(conn, batch, careful=False)
        if outcomes is not None:
            return outcomes
        outcomes = await self._attempt(conn, batch, careful=True)
        assert outcomes is not None  # a careful attempt gives every operation its outcome
        return outcomes

    async def _attempt(
        self, conn: Any, batch: list[_Op[Any]], *, careful: bool
    ) -> list[_Outcome] | None:
        """The batch in one transaction; None when not careful and an operation failed."""
        outcomes: list[_Outcome] = []
        transaction = conn.transaction(isolation="read_committed")
        committing = False
        try:
            await transaction.start()
            await conn.execute(_LOCK, WRITE_LOCK)
            row = await conn.fetchrow(_HEADS)
            heads = _Heads(
                audit_seq=0 if row[1] is None else int(row[1]),
                audit_hash=GENESIS_HASH if row[2] is None else str(row[2]),
                event_seq=int(row[0]),
            )
            if heads.audit_seq < self._audit_seen:
                # Appending now would reuse the seqs of records that were cut off, and the
                # chain would verify again: refuse until an operator restores them.
                raise StoreCorrupted(
                    f"store corrupted: the audit log ends at record {heads.audit_seq}, but this "
                    f"server saw record {self._audit_seen}: records were cut off its end; "
                    "restore them from a backup"
                )
            events = False
            topics: set[str] = set()
            shared = _BatchReads()
            for op in batch:
                savepoint = conn.transaction() if careful else None
                if savepoint is not None:
                    await savepoint.start()
                tx = PgWriteTx(conn, heads, shared)
                try:
                    value = await op.fn(tx)
                except DISCONNECTED:
                    raise  # the connection, not the operation: see below
                except Exception as exc:
                    error = store_error(exc, write=True)
                    if savepoint is not None:
                        await savepoint.rollback()
                        outcomes.append((None, error))
                        continue
                    await _rollback(transaction)
                    # Alone in its batch, its error is the outcome; otherwise run carefully.
                    return [(None, error)] if len(batch) == 1 else None
                if savepoint is not None:
                    await savepoint.commit()
                heads, events = tx.heads, events or tx.appended_events
                topics |= tx.topics
                outcomes.append((value, None))
            event_seq = heads.event_seq if events else None
            for payload in postgres_notify.encode(event_seq=event_seq, topics=topics):
                await conn.execute(_NOTIFY, self._channel, payload)
            committing = True
            await transaction.commit()
            self._audit_seen = max(self._audit_seen, heads.audit_seq)
            self._head_log.committed(heads.audit_seq, heads.audit_hash)
        except BaseException as exc:
            await _rollback(transaction)
            if not committing and isinstance(exc, DISCONNECTED):
                raise _NotCommitted() from exc
            if isinstance(exc, Exception):
                # Whatever failed the transaction fails every operation in it.
                error = store_error(exc, write=True)
                return [(None, error) for _ in batch]
            raise
        return outcomes


async def _rollback(transaction: Any) -> None:
    # If this fails the connection is broken, and the pool discards it on release.
    with contextlib.suppress(Exception):
        await transaction.rollback()


async def _release(pool: Any, conn: Any) -> None:
    # Release resets the connection; if that fails, asyncpg terminates it and re-raises.
    with contextlib.suppress(Exception):
        await pool.release(conn)


def _lost(exc: BaseException) -> BaseException:
    """The batch did not run to a known end (writer cancelled or crashed)."""
    if isinstance(exc, TaskpassError):
        return exc
    error = Unavailable("store unavailable: the write was interrupted; retry later")
    error.__cause__ = exc
    return error
