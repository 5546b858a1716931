"""The embedded SQLite backend: one file, WAL, durable batched writes (see sqlite_writer).

Writes go through the single BatchWriter; reads use a separate aiosqlite connection, which WAL
lets run beside the writer and which sees every committed batch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite

from taskpass.server.errors import ConfigError, Conflict, NotFound, Unavailable
from taskpass.server.store import sqlite_schema
from taskpass.server.store.base import check_page, reused_task
from taskpass.server.store.cascade import CascadeEvent, delegated_events, with_descendants
from taskpass.server.store.records import (
    AuditEntry,
    AuditRecord,
    CredentialRecord,
    NewRevocation,
    RevocationEvent,
    RevocationSnapshot,
    TaskRecord,
)
from taskpass.server.store.row_codec import Row
from taskpass.server.store.sqlite_approvals import SqliteApprovals
from taskpass.server.store.sqlite_bans import SqliteBans
from taskpass.server.store.sqlite_cascade import (
    check_parent,
    complete_revocation,
    revoke_descendants,
)
from taskpass.server.store.sqlite_codec import codec, to_db_time
from taskpass.server.store.sqlite_keys import SqliteKeys
from taskpass.server.store.sqlite_writer import (
    DEFAULT_MAX_BATCH,
    BatchObserver,
    BatchWriter,
    WriterStats,
    WriteTx,
)

# Column lists follow the order of row_codec's tables (TASKS, CREDENTIALS, EVENTS, AUDIT).
_INSERT_TASK = """
    INSERT INTO tasks (requester, task_id, digest, descriptor, created_at, completed_at)
    VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (requester, task_id) DO NOTHING"""
_TASK_STATE = "SELECT digest, completed_at FROM tasks WHERE requester = ? AND task_id = ?"
_SELECT_TASK = """
    SELECT requester, task_id, digest, descriptor, created_at, completed_at
    FROM tasks WHERE requester = ? AND task_id = ?"""
_COMPLETE_TASK = "UPDATE tasks SET completed_at = ? WHERE requester = ? AND task_id = ?"
_INSERT_CREDENTIAL = """
    INSERT INTO credentials (jti, requester, task_id, audience, scopes, issued_at, expires_at,
        policy_version, kid, cert_thumbprint, approval_id, parent_jti, revoked_at, revoke_reason)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_SELECT_CREDENTIAL = """
    SELECT jti, requester, task_id, audience, scopes, issued_at, expires_at,
        policy_version, kid, cert_thumbprint, approval_id, parent_jti, revoked_at, revoke_reason
    FROM credentials WHERE jti = ?"""
_CREDENTIAL_EXISTS = "SELECT 1 FROM credentials WHERE jti = ?"
_REVOKE_TASK_CREDENTIALS = """
    UPDATE credentials SET revoked_at = ?, revoke_reason = ?
    WHERE requester = ? AND task_id = ? AND revoked_at IS NULL
    RETURNING jti, requester, task_id, audience, scopes, issued_at, expires_at,
        policy_version, kid, cert_thumbprint, approval_id, parent_jti, revoked_at, revoke_reason"""
_REVOKE_CREDENTIAL = """
    UPDATE credentials SET revoked_at = ?, revoke_reason = ?
    WHERE jti = ? AND revoked_at IS NULL
    RETURNING jti, requester, task_id, audience, scopes, issued_at, expires_at,
        policy_version, kid, cert_thumbprint, approval_id, parent_jti, revoked_at, revoke_reason"""
_EVENTS_AFTER = """
    SELECT seq, kind, subject, task_id, jti, expires_at, at, set_token, reason
    FROM revocation_events WHERE seq > ? ORDER BY seq LIMIT ?"""
# One statement, so the events and the head seq come from the same snapshot; the LEFT JOIN
# yields one row (with NULL event columns) even when nothing is in force.
_EVENTS_IN_FORCE = """
    WITH head AS (SELECT coalesce(max(seq), 0) AS seq FROM revocation_events)
    SELECT head.seq,
        e.seq, e.kind, e.subject, e.task_id, e.jti, e.expires_at, e.at, e.set_token, e.reason
    FROM head LEFT JOIN revocation_events AS e ON e.expires_at > ?
    ORDER BY e.seq"""
_CURRENT_EVENT_SEQ = "SELECT coalesce(max(seq), 0) FROM revocation_events"
_AUDIT_AFTER = """
    SELECT seq, kind, actor, at, payload, prev_hash, hash
    FROM audit WHERE seq > ? ORDER BY seq LIMIT ?"""

_UNIQUE_VIOLATIONS = frozenset({"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"})


def _one(tx: WriteTx, sql: str, params: tuple[Any, ...]) -> Row | None:
    # fetchall, not fetchone: it runs the statement to its end, so no statement is still in
    # progress when the savepoint is released.
    rows = tx.conn.execute(sql, params).fetchall()
    return rows[0] if rows else None


class _Reader:
    """The read connection: aiosqlite, query_only, errors translated."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        db = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            await db.execute_fetchall(f"PRAGMA busy_timeout = {sqlite_schema.BUSY_TIMEOUT_MS}")
            await db.execute_fetchall("PRAGMA query_only = ON")
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def fetch_all(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        if self._db is None:
            raise Unavailable("store is closed")
        try:
            return list(await self._db.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise Unavailable("store unavailable: the database read failed; retry later") from exc

    async def fetch_one(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


class SqliteCredentials:
    def __init__(self, writer: BatchWriter, reader: _Reader) -> None:
        self._writer = writer
        self._reader = reader

    async def record_issuance(
        self, *, task: TaskRecord, credential: CredentialRecord, audit: AuditEntry
    ) -> None:
        if (credential.requester, credential.task_id) != (task.requester, task.task_id):
            raise ValueError("the credential does not belong to the task it is recorded with")
        task_row = codec.task_to_row(task)
        credential_row = codec.credential_to_row(credential)
        task_key = (task.requester, task.task_id)

        def run(tx: WriteTx) -> None:
            if credential.parent_jti is not None:
                check_parent(tx, credential.parent_jti)
            if tx.conn.execute(_INSERT_TASK, task_row).rowcount == 0:
                state = _one(tx, _TASK_STATE, task_key)
                assert state is not None  # the insert just found it
                digest, completed_at = state
                conflict = reused_task(task, digest=digest, completed_at=completed_at)
                if conflict is not None:
                    raise conflict
            try:
                tx.conn.execute(_INSERT_CREDENTIAL, credential_row)
            except sqlite3.IntegrityError as exc:
                if exc.sqlite_errorname in _UNIQUE_VIOLATIONS:
                    raise Conflict("credential jti already recorded: generate a new jti") from exc
                raise
            tx.append_audit(audit)

        await self._writer.submit(run)

    async def get_credential(self, jti: str) -> CredentialRecord | None:
        row = await self._reader.fetch_one(_SELECT_CREDENTIAL, (jti,))
        return None if row is None else codec.credential_from_row(row)

    async def get_task(self, requester: str, task_id: str) -> TaskRecord | None:
        row = await self._reader.fetch_one(_SELECT_TASK, (requester, task_id))
        return None if row is None else codec.task_from_row(row)

    async def complete_task(
        self,
        *,
        requester: str,
        task_id: str,
        at: dt.datetime,
        reason: str = "task completed",
        audit: AuditEntry,
        event: NewRevocation | None,
        cascade: CascadeEvent | None = None,
    ) -> tuple[list[CredentialRecord], RevocationEvent | None]:
        at_db = to_db_time(at)
        task_key = (requester, task_id)

        def run(tx: WriteTx) -> tuple[list[CredentialRecord], RevocationEvent | None]:
            state = _one(tx, _TASK_STATE, task_key)
            if state is None:
                raise NotFound(f"no task {task_id!r} for this requester")
            if state[1] is not None:
                raise Conflict(f"task already completed ({task_id!r})")
            tx.conn.execute(_COMPLETE_TASK, (at_db, *task_key))
            rows = tx.conn.execute(_REVOKE_TASK_CREDENTIALS, (at_db, reason, *task_key)).fetchall()
            return complete_revocation(
                tx,
                (codec.credential_from_row(row) for row in rows),
                at_db=at_db,
                reason=reason,
                audit=audit,
                event=event,
                cascade=cascade,
            )

        return await self._writer.submit(run)

    async def revoke_credential(
        self,
        *,
        jti: str,
        at: dt.datetime,
        reason: str,
        audit: AuditEntry,
        event: NewRevocation | None,
        cascade: CascadeEvent | None = None,
    ) -> tuple[CredentialRecord, RevocationEvent | None]:
        at_db = to_db_time(at)

        def run(tx: WriteTx) -> tuple[CredentialRecord, RevocationEvent | None]:
            row = _one(tx, _REVOKE_CREDENTIAL, (at_db, reason, jti))
            if row is None:
                if _one(tx, _CREDENTIAL_EXISTS, (jti,)) is not None:
                    raise Conflict(f"credential already revoked (jti {jti!r})")
                raise NotFound(f"no credential with jti {jti!r}")
            revoked = codec.credential_from_row(row)
            descendants = revoke_descendants(tx, [jti], at_db=at_db, reason=reason)
            tx.append_audit(with_descendants(audit, descendants))
            stored = None if event is None else tx.append_event(event.covering([revoked]))
            for new in delegated_events(descendants, cascade):
                tx.append_event(new)
            return revoked, stored

        return await self._writer.submit(run)


class SqliteRevocations:
    def __init__(self, reader: _Reader) -> None:
        self._reader = reader

    async def read_after(self, seq: int, *, limit: int) -> list[RevocationEvent]:
        check_page(after=seq, limit=limit)
        rows = await self._reader.fetch_all(_EVENTS_AFTER, (seq, limit))
        return [codec.event_from_row(row) for row in rows]

    async def in_force(self, now: dt.datetime) -> RevocationSnapshot:
        rows = await self._reader.fetch_all(_EVENTS_IN_FORCE, (to_db_time(now),))
        head = int(rows[0][0])
        events = tuple(codec.event_from_row(row[1:]) for row in rows if row[1] is not None)
        return RevocationSnapshot(events=events, seq=head)

    async def current_seq(self) -> int:
        row = await self._reader.fetch_one(_CURRENT_EVENT_SEQ, ())
        return 0 if row is None else int(row[0])


class SqliteAudit:
    def __init__(self, writer: BatchWriter, reader: _Reader) -> None:
        self._writer = writer
        self._reader = reader

    async def append(self, entry: AuditEntry) -> AuditRecord:
        return await self._writer.submit(lambda tx: tx.append_audit(entry))

    async def read(self, *, after_seq: int = 0, limit: int) -> list[AuditRecord]:
        check_page(after=after_seq, limit=limit)
        rows = await self._reader.fetch_all(_AUDIT_AFTER, (after_seq, limit))
        return [codec.audit_from_row(row) for row in rows]


class SqliteStore:
    """The Store on one SQLite file. Open it once per process: it must be the only writer."""

    def __init__(self, path: Path, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._path = path
        self._writer = BatchWriter(path, max_batch=max_batch)
        self._reader = _Reader(path)
        self._credentials = SqliteCredentials(self._writer, self._reader)
        self._revocations = SqliteRevocations(self._reader)
        self._audit = SqliteAudit(self._writer, self._reader)
        self._approvals = SqliteApprovals(self._writer, self._reader)
        self._bans = SqliteBans(self._writer, self._reader)
        self._keys = SqliteKeys(self._writer, self._reader)
        self._open = False

    @property
    def path(self) -> Path:
        return self._path

    @property
    def credentials(self) -> SqliteCredentials:
        return self._credentials

    @property
    def revocations(self) -> SqliteRevocations:
        return self._revocations

    @property
    def audit(self) -> SqliteAudit:
        return self._audit

    @property
    def approvals(self) -> SqliteApprovals:
        return self._approvals

    @property
    def bans(self) -> SqliteBans:
        return self._bans

    @property
    def keys(self) -> SqliteKeys:
        return self._keys

    @property
    def writer_stats(self) -> WriterStats:
        """Batches committed and operations run: operations / batches is the batching effect."""
        return self._writer.stats

    def observe_writes(self, observer: BatchObserver) -> None:
        """Tell `observer(operations, seconds)` about each committed write batch (metrics)."""
        self._writer.observe(observer)

    async def migrate(self) -> int:
        return await asyncio.to_thread(self._migrate)

    def _migrate(self) -> int:
        conn = sqlite_schema.connect(self._path)
        try:
            return sqlite_schema.migrate(conn)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot migrate the SQLite database at {self._path}: is it a taskpass database, "
                "and is no other process writing to it?"
            ) from exc
        finally:
            conn.close()

    async def open(self) -> None:
        if self._open:
            return
        await self.migrate()
        await self._writer.start()
        try:
            await self._reader.open()
        except sqlite3.Error as exc:
            await self._writer.stop()
            raise ConfigError(f"cannot open the SQLite database at {self._path}") from exc
        except BaseException:
            await self._writer.stop()
            raise
        self._open = True

    async def close(self) -> None:
        self._open = False
        await self._writer.stop()
        await self._reader.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
