"""The single SQLite writer: queued write operations, group-committed in batches.

Why: with synchronous=FULL every commit waits for an fsync, so one commit per request caps
throughput at the disk's fsync rate. Here a writer task takes every operation waiting (up to
`max_batch`), runs them in ONE transaction, commits once, then answers each caller. Each
operation runs in its own SAVEPOINT: one that fails is rolled back alone and its caller gets the
error, the others still commit.

Why a plain sqlite3 connection on a dedicated thread rather than aiosqlite here: an operation is
several statements with decisions between them, and aiosqlite pays one thread round trip per
statement (measured ~60 us each); running a whole batch as one function on the writer's own
thread costs one round trip per batch. Reads keep using aiosqlite (sqlite.py).

Why a thread of its own rather than `run_in_executor` per batch: the executor hand-off (a
concurrent future chained to an asyncio one, callbacks both ways) cost about 30 us of the event
loop and 20 of the writer per batch. Here the writer task puts the batch in a slot and sets an
event; the thread runs and commits it, then answers every caller and the writer task with one
`call_soon_threadsafe`. The pacing is the executor's: the next batch is taken when the loop has
the last one's answer, so what queued meanwhile shares a commit (an fsync) with it.

Sequence numbers for audit records and revocation events, and the audit chain's last hash, live
in this writer (loaded at start) and advance only when an operation's savepoint is released, and
become current only when the batch commits: gap-free in commit order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_string  # what json.dumps uses
from pathlib import Path
from typing import Any, Generic, TypeVar

from taskpass.server.errors import TaskpassError, Unavailable
from taskpass.server.store import sqlite_schema
from taskpass.server.store.audit_chain import GENESIS_HASH, HeadLog, canonical_json
from taskpass.server.store.records import (
    AuditEntry,
    AuditRecord,
    NewRevocation,
    RevocationEvent,
    utc,
)
from taskpass.server.store.sqlite_codec import codec, to_db_time

T = TypeVar("T")

DEFAULT_MAX_BATCH = 256

# Column order follows row_codec.AUDIT / EVENTS.
_INSERT_AUDIT = """
    INSERT INTO audit (seq, kind, actor, at, payload, prev_hash, hash)
    VALUES (?, ?, ?, ?, ?, ?, ?)"""
_INSERT_EVENT = """
    INSERT INTO revocation_events (seq, kind, subject, task_id, jti, expires_at, at, set_token,
        reason)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"""


@dataclass(frozen=True, slots=True)
class _Heads:
    audit_seq: int
    audit_hash: str
    event_seq: int


class WriteTx:
    """What one write operation sees, on the writer thread, inside its own savepoint."""

    __slots__ = ("_heads", "conn")

    def __init__(self, conn: sqlite3.Connection, heads: _Heads) -> None:
        self.conn = conn
        self._heads = heads

    @property
    def heads(self) -> _Heads:
        """The sequence heads including what this operation appended."""
        return self._heads

    def append_audit(self, entry: AuditEntry) -> AuditRecord:
        heads = self._heads
        seq = heads.audit_seq + 1
        payload_json = canonical_json(entry.payload)
        digest = chain_hash_of_json(
            prev_hash=heads.audit_hash,
            seq=seq,
            kind=entry.kind,
            actor=entry.actor,
            at=entry.at,
            payload_json=payload_json,
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
        # The row of codec.audit_to_row, with the payload JSON already made for the hash.
        row = (seq, entry.kind, entry.actor, to_db_time(entry.at), payload_json)
        self.conn.execute(_INSERT_AUDIT, (*row, heads.audit_hash, digest))
        self._heads = _Heads(seq, digest, heads.event_seq)
        return record

    def append_event(self, new: NewRevocation) -> RevocationEvent:
        heads = self._heads
        event = RevocationEvent.numbered(heads.event_seq + 1, new)
        self.conn.execute(_INSERT_EVENT, codec.event_to_row(event))
        self._heads = _Heads(heads.audit_seq, heads.audit_hash, event.seq)
        return event


def chain_hash_of_json(
    *, prev_hash: str, seq: int, kind: str, actor: str, at: dt.datetime, payload_json: str
) -> str:
    """audit_chain.chain_hash, given the payload's canonical JSON instead of the payload.

    Hot path: every issuance appends an audit record, and its payload (the decision, the task)
    was encoded twice, once for the hash and once for the row (~5 us of the writer thread's
    ~45 us per issuance). The hashed document is canonical JSON with sorted keys, so it is the
    five members in this order with the payload's own canonical JSON spliced in;
    tests/unit/store/test_sqlite_writer.py holds this equal to chain_hash for any input.
    """
    document = (
        f'{{"actor":{_json_string(actor)},"at":{_json_string(utc(at, "at").isoformat())},'
        f'"kind":{_json_string(kind)},"payload":{payload_json},"seq":{int(seq)}}}'
    )
    return hashlib.sha256((prev_hash + document).encode("utf-8")).hexdigest()


WriteFn = Callable[[WriteTx], T]
BatchObserver = Callable[[int, float], None]
"""Told (operations in the batch, seconds to run and commit it) after each committed batch."""


@dataclass(frozen=True, slots=True)
class WriterStats:
    batches: int
    operations: int
    largest_batch: int


@dataclass(slots=True)
class _Op(Generic[T]):
    fn: WriteFn[T]
    future: asyncio.Future[T]


# (value, None) on success, (None, error) on failure.
_Outcome = tuple[Any, BaseException | None]


class BatchCounts:
    """What a writer (this one or PostgreSQL's) counts of its committed batches, and tells its
    observer."""

    __slots__ = ("_batches", "_largest", "_operations", "observer")

    def __init__(self) -> None:
        self._batches = 0
        self._operations = 0
        self._largest = 0
        self.observer: BatchObserver | None = None

    @property
    def stats(self) -> WriterStats:
        return WriterStats(self._batches, self._operations, self._largest)

    def committed(self, size: int, seconds: float) -> None:
        self._batches += 1
        self._operations += size
        self._largest = max(self._largest, size)
        if self.observer is not None:
            self.observer(size, seconds)


def answer(futures: Iterable[asyncio.Future[Any]], outcomes: list[_Outcome]) -> None:
    """Settle each caller's future with its outcome (one a caller cancelled stays as it is)."""
    for future, (value, error) in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def _as_store_error(exc: BaseException) -> BaseException:
    """Our errors pass through; a database error becomes Unavailable; a bug stays a bug."""
    if isinstance(exc, sqlite3.Error):
        error = Unavailable("store unavailable: the database write failed; retry later")
        error.__cause__ = exc
        return error
    return exc


class BatchWriter:
    def __init__(self, path: Path, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._path = path
        self._max_batch = max_batch
        self._queue: collections.deque[_Op[Any]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The batch handed to the thread, with the future _answer settles; `_work` wakes it.
        self._slot: tuple[list[_Op[Any]], asyncio.Future[None]] | None = None
        self._work = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._exited: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None
        self._heads = _Heads(0, GENESIS_HASH, 0)
        self._head_log = HeadLog()
        self._accepting = False
        self._counts = BatchCounts()

    @property
    def stats(self) -> WriterStats:
        return self._counts.stats

    def observe(self, observer: BatchObserver) -> None:
        """Call `observer(operations, seconds)` after each committed batch (for metrics)."""
        self._counts.observer = observer

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        connected: asyncio.Future[None] = loop.create_future()
        exited: asyncio.Future[None] = loop.create_future()
        self._exited = exited
        self._stopping = False
        # A daemon: a loop that ends without stop() must not keep the process alive; what
        # was not committed was never acknowledged, as after a crash.
        self._thread = threading.Thread(
            target=self._thread_main,
            args=(connected, exited),
            name="taskpass-sqlite-writer",
            daemon=True,
        )
        self._thread.start()
        try:
            await connected
        except BaseException:
            await self._stop_thread()
            raise
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name="taskpass-sqlite-writer")

    async def stop(self) -> None:
        """Refuse new operations, finish the queued ones, close the connection."""
        self._accepting = False
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            await task
        await self._stop_thread()

    async def submit(self, fn: WriteFn[T]) -> T:
        """Run `fn` in the next batch; returns its result once the batch is committed."""
        if not self._accepting:
            raise Unavailable("store is closed")
        op: _Op[T] = _Op(fn, asyncio.get_running_loop().create_future())
        self._queue.append(op)
        self._wakeup.set()
        return await op.future

    # -- event loop side ---------------------------------------------------------------------

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
        loop = asyncio.get_running_loop()
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
            answered: asyncio.Future[None] = loop.create_future()
            self._slot = (batch, answered)
            self._work.set()
            try:
                await answered  # set by _answer, once every caller in the batch has its answer
            except BaseException as exc:
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(_lost(exc))
                raise

    def _answer(
        self,
        batch: list[_Op[Any]],
        outcomes: list[_Outcome],
        seconds: float | None,
        answered: asyncio.Future[None],
    ) -> None:
        """On the loop: count the batch (`seconds` is None when it did not run to an end),
        answer its callers, then let the writer task take the next batch."""
        if seconds is not None:
            self._counts.committed(len(batch), seconds)
        answer((op.future for op in batch), outcomes)
        _settle(answered, None)

    async def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._work.set()
        if self._exited is not None:
            await self._exited
        thread.join()

    # -- writer thread side ------------------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` on the loop (it may be closed already: then nobody waits)."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _thread_main(self, connected: asyncio.Future[None], exited: asyncio.Future[None]) -> None:
        try:
            self._connect()
        except BaseException as exc:
            self._post(_settle, connected, exc)
            self._post(_settle, exited, None)
            return
        self._post(_settle, connected, None)
        try:
            while True:
                self._work.wait()
                self._work.clear()
                slot, self._slot = self._slot, None
                if slot is not None:
                    batch, answered = slot
                    self._post(self._answer, batch, *self._run_batch(batch), answered)
                if self._stopping:  # set once the writer task hands nothing more over
                    return
        finally:
            self._disconnect()
            self._post(_settle, exited, None)

    def _run_batch(self, batch: list[_Op[Any]]) -> tuple[list[_Outcome], float | None]:
        started = time.perf_counter()
        try:
            outcomes = self._apply(batch)
        except BaseException as exc:  # a bug: the batch did not run to a known end
            lost = _lost(exc)
            return [(None, lost) for _ in batch], None
        return outcomes, time.perf_counter() - started

    def _connect(self) -> None:
        conn = sqlite_schema.connect(self._path)
        try:
            row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            event_seq = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM revocation_events"
            ).fetchone()[0]
        except BaseException:
            conn.close()
            raise
        self._heads = _Heads(
            audit_seq=row[0] if row else 0,
            audit_hash=row[1] if row else GENESIS_HASH,
            event_seq=int(event_seq),
        )
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _apply(self, batch: list[_Op[Any]]) -> list[_Outcome]:
        conn = self._conn
        if conn is None:
            raise Unavailable("store is closed")
        heads = self._heads
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                conn.execute("SAVEPOINT op")
                tx = WriteTx(conn, heads)
                try:
                    value = op.fn(tx)
                except Exception as exc:
                    # If SQLite already rolled back the whole transaction (I/O error, disk
                    # full), ROLLBACK TO fails and the except below fails the whole batch.
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((None, _as_store_error(exc)))
                    continue
                conn.execute("RELEASE op")
                heads = tx.heads
                outcomes.append((value, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            return [(None, _as_store_error(exc)) for _ in batch]
        except BaseException:
            self._rollback(conn)
            raise
        self._heads = heads
        self._head_log.committed(heads.audit_seq, heads.audit_hash)
        return outcomes

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            # If even this fails, the next BEGIN reports it and that batch fails cleanly.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _lost(exc: BaseException) -> BaseException:
    """The batch did not run to a known end (writer cancelled or crashed)."""
    if isinstance(exc, TaskpassError):
        return exc
    error = Unavailable("store unavailable: the write was interrupted; retry later")
    error.__cause__ = exc
    return error
