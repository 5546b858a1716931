"""The PostgreSQL backend (asyncpg): several replicas share one database.

Writes go through the PgBatchWriter (postgres_writer: batched, numbered under an advisory lock);
reads use the same connection pool. `listen` (postgres_listen) tells a replica when another one
committed revocation events; `follow` also says what changed (postgres_notify).

The DSN is libpq's URI form; any query parameter asyncpg does not know is a server setting, so
`postgresql://taskpass@db/taskpass?search_path=taskpass` keeps the tables in schema `taskpass`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import asyncpg

from taskpass.server.errors import Conflict, NotFound, Unavailable
from taskpass.server.store import postgres_notify, postgres_schema
from taskpass.server.store.base import StoreChange, banned, check_page, reused_task
from taskpass.server.store.cascade import CascadeEvent, delegated_events, with_descendants
from taskpass.server.store.postgres_approvals import PostgresApprovals
from taskpass.server.store.postgres_bans import PostgresBans
from taskpass.server.store.postgres_cascade import (
    check_parent,
    complete_revocation,
    revoke_descendants,
)
from taskpass.server.store.postgres_codec import codec
from taskpass.server.store.postgres_errors import (
    DISCONNECTED,
    DRIVER_ERRORS,
    startup_error,
)
from taskpass.server.store.postgres_keys import PostgresKeys
from taskpass.server.store.postgres_listen import (
    Callback,
    EventListener,
    PayloadCallback,
    ReconnectBackoff,
)
from taskpass.server.store.postgres_reader import PgReader
from taskpass.server.store.postgres_writer import (
    DEFAULT_MAX_BATCH,
    PgBatchWriter,
    PgWriteTx,
)
from taskpass.server.store.records import (
    AuditEntry,
    AuditRecord,
    CredentialRecord,
    NewRevocation,
    RevocationEvent,
    RevocationSnapshot,
    TaskRecord,
)
from taskpass.server.store.sqlite_writer import BatchObserver, WriterStats

# Column lists follow the order of row_codec's tables (TASKS, CREDENTIALS, EVENTS, AUDIT).
_INSERT_TASK = """
    INSERT INTO tasks (requester, task_id, digest, descriptor, created_at, completed_at)
    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (requester, task_id) DO NOTHING"""
_TASK_STATE = """
    SELECT digest, completed_at FROM tasks WHERE requester = $1 AND task_id = $2 FOR UPDATE"""
_SELECT_TASK = """
    SELECT requester, task_id, digest, descriptor, created_at, completed_at
    FROM tasks WHERE requester = $1 AND task_id = $2"""
_COMPLETE_TASK = "UPDATE tasks SET completed_at = $1 WHERE requester = $2 AND task_id = $3"
_INSERT_CREDENTIAL = """
    INSERT INTO credentials (jti, requester, task_id, audience, scopes, issued_at, expires_at,
        policy_version, kid, cert_thumbprint, approval_id, parent_jti, revoked_at, revoke_reason)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"""
_SELECT_CREDENTIAL = """
    SELECT jti, requester, task_id, audience, scopes, issued_at, expires_at,
        policy_version, kid, cert_thumbprint, approval_id, parent_jti, revoked_at, revoke_reason
    FROM credentials WHERE jti = $1"""
_CREDENTIAL_EXISTS = "SELECT 1 FROM credentials WHERE jti = $1"
_REVOKE_TASK_CREDENTIALS = """
    UPDATE credentials SET revoked_at = $1, revoke_reason = $2
    WHERE requester = $3 AND task_id = $4 AND revoked_at IS NULL
    RETURNING jti, requester, task_id, audience, scopes, issued_at, expires_at,
        policy_version, kid, cert_thumbprint, approval_id, parent_jti, revoked_at, revoke_reason"""
_REVOKE_CREDENTIAL = """
    UPDATE credentials SET revoked_at = $1, revoke_reason = $2
    WHERE jti = $3 AND revoked_at IS NULL
    RETURNING jti, requester, task_id, audience, scopes, issued_at, expires_at,
        policy_version, kid, cert_thumbprint, approval_id, parent_jti, revoked_at, revoke_reason"""
_EVENTS_AFTER = """
    SELECT seq, kind, subject, task_id, jti, expires_at, at, set_token, reason
    FROM revocation_events WHERE seq > $1 ORDER BY seq LIMIT $2"""
# One statement, so the events and the head seq come from the same snapshot; the LEFT JOIN
# yields one row (with NULL event columns) even when nothing is in force.
_EVENTS_IN_FORCE = """
    WITH head AS (SELECT coalesce(max(seq), 0) AS seq FROM revocation_events)
    SELECT head.seq,
        e.seq, e.kind, e.subject, e.task_id, e.jti, e.expires_at, e.at, e.set_token, e.reason
    FROM head LEFT JOIN revocation_events AS e ON e.expires_at > $1
    ORDER BY e.seq"""
_CURRENT_EVENT_SEQ = "SELECT coalesce(max(seq), 0) FROM revocation_events"
_AUDIT_AFTER = """
    SELECT seq, kind, actor, at, payload, prev_hash, hash
    FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"""

DEFAULT_CONNECT_TIMEOUT = dt.timedelta(seconds=10)
DEFAULT_COMMAND_TIMEOUT = dt.timedelta(seconds=30)
DEFAULT_PING_INTERVAL = dt.timedelta(seconds=30)
DEFAULT_BACKOFF = ReconnectBackoff()
DEFAULT_STUCK_AFTER = dt.timedelta(seconds=10)


async def prepare_connection(conn: Any, *, stuck_after: dt.timedelta = DEFAULT_STUCK_AFTER) -> None:
    """Settings for every new pooled connection."""
    # A replica that freezes (stopped, partitioned) inside a batch would hold the write lock
    # until TCP keepalive gives up, hours later, stopping every replica's writes: the server
    # ends a transaction left idle this long. A live batch is never idle between statements.
    ms = max(1, stuck_after // dt.timedelta(milliseconds=1))
    synchronous = await conn.fetchval(
        "SELECT set_config('idle_in_transaction_session_timeout', $1, false),"
        " current_setting('synchronous_commit')",
        str(ms),
        column=1,
    )
    # Durable before reply: a server configured with synchronous_commit=off would acknowledge
    # commits it can still lose, so taskpass sessions turn it back on.
    if synchronous == "off":
        await conn.execute("SET synchronous_commit TO on")


class PostgresCredentials:
    def __init__(self, writer: PgBatchWriter, reader: PgReader) -> None:
        self._writer = writer
        self._reader = reader

    async def record_issuance(
        self, *, task: TaskRecord, credential: CredentialRecord, audit: AuditEntry
    ) -> None:
        if (credential.requester, credential.task_id) != (task.requester, task.task_id):
            raise ValueError("the credential does not belong to the task it is recorded with")
        task_row = codec.task_to_row(task)
        credential_row = codec.credential_to_row(credential)

        async def run(tx: PgWriteTx) -> None:
            ban = await tx.ban_covering(credential.requester)
            if ban is not None:
                raise banned(credential.requester, ban)
            if credential.parent_jti is not None:
                await check_parent(tx, credential.parent_jti)
            if await tx.conn.execute(_INSERT_TASK, *task_row) == "INSERT 0 0":
                state = await tx.conn.fetchrow(_TASK_STATE, task.requester, task.task_id)
                conflict = reused_task(
                    task, digest=state["digest"], completed_at=state["completed_at"]
                )
                if conflict is not None:
                    raise conflict
            try:
                await tx.conn.execute(_INSERT_CREDENTIAL, *credential_row)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict("credential jti already recorded: generate a new jti") from exc
            await tx.append_audit(audit)

        await self._writer.submit(run)

    async def get_credential(self, jti: str) -> CredentialRecord | None:
        row = await self._reader.fetch_one(_SELECT_CREDENTIAL, jti)
        return None if row is None else codec.credential_from_row(row)

    async def get_task(self, requester: str, task_id: str) -> TaskRecord | None:
        row = await self._reader.fetch_one(_SELECT_TASK, requester, task_id)
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
        async def run(tx: PgWriteTx) -> tuple[list[CredentialRecord], RevocationEvent | None]:
            state = await tx.conn.fetchrow(_TASK_STATE, requester, task_id)
            if state is None:
                raise NotFound(f"no task {task_id!r} for this requester")
            if state["completed_at"] is not None:
                raise Conflict(f"task already completed ({task_id!r})")
            await tx.conn.execute(_COMPLETE_TASK, at, requester, task_id)
            rows = await tx.conn.fetch(_REVOKE_TASK_CREDENTIALS, at, reason, requester, task_id)
            return await complete_revocation(
                tx,
                (codec.credential_from_row(row) for row in rows),
                at=at,
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
        async def run(tx: PgWriteTx) -> tuple[CredentialRecord, RevocationEvent | None]:
            row = await tx.conn.fetchrow(_REVOKE_CREDENTIAL, at, reason, jti)
            if row is None:
                if await tx.conn.fetchval(_CREDENTIAL_EXISTS, jti) is not None:
                    raise Conflict(f"credential already revoked (jti {jti!r})")
                raise NotFound(f"no credential with jti {jti!r}")
            revoked = codec.credential_from_row(row)
            descendants = await revoke_descendants(tx, [jti], at=at, reason=reason)
            await tx.append_audit(with_descendants(audit, descendants))
            stored = None if event is None else await tx.append_event(event.covering([revoked]))
            for new in delegated_events(descendants, cascade):
                await tx.append_event(new)
            return revoked, stored

        return await self._writer.submit(run)


class PostgresRevocations:
    def __init__(self, reader: PgReader) -> None:
        self._reader = reader

    async def read_after(self, seq: int, *, limit: int) -> list[RevocationEvent]:
        check_page(after=seq, limit=limit)
        rows = await self._reader.fetch(_EVENTS_AFTER, seq, limit)
        return [codec.event_from_row(row) for row in rows]

    async def in_force(self, now: dt.datetime) -> RevocationSnapshot:
        rows = await self._reader.fetch(_EVENTS_IN_FORCE, now)
        head = int(rows[0][0])
        events = tuple(codec.event_from_row(row[1:]) for row in rows if row[1] is not None)
        return RevocationSnapshot(events=events, seq=head)

    async def current_seq(self) -> int:
        row = await self._reader.fetch_one(_CURRENT_EVENT_SEQ)
        return 0 if row is None else int(row[0])


class PostgresAudit:
    def __init__(self, writer: PgBatchWriter, reader: PgReader) -> None:
        self._writer = writer
        self._reader = reader

    async def append(self, entry: AuditEntry) -> AuditRecord:
        return await self._writer.submit(lambda tx: tx.append_audit(entry))

    async def read(self, *, after_seq: int = 0, limit: int) -> list[AuditRecord]:
        check_page(after=after_seq, limit=limit)
        rows = await self._reader.fetch(_AUDIT_AFTER, after_seq, limit)
        return [codec.audit_from_row(row) for row in rows]


class PostgresStore:
    """The Store on a PostgreSQL database. Any number of replicas may open the same one.

    max_batch: the most queued writes committed in one transaction.
    events_channel: the NOTIFY channel ([store] notify_channel, see postgres_notify); every
        replica of one deployment must use the same, and each deployment sharing the database
        its own. ValueError if it is not a valid channel name.
    pool_min_size, pool_max_size: connections kept / allowed (one writes, the others read).
    connect_timeout: how long to wait for a new connection before failing as Unavailable.
    command_timeout: the longest one statement (including waiting for the write lock) may take.
    listen_backoff: waits between attempts to re-make a lost LISTEN connection.
    listen_ping_interval: how often an idle LISTEN connection is checked to be alive.
    stuck_after: the server ends a transaction of this store left idle this long (a frozen
        replica's), so it cannot hold the write lock of every replica for long.
    """

    def __init__(
        self,
        dsn: str,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        events_channel: str = postgres_notify.EVENTS_CHANNEL,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout: dt.timedelta = DEFAULT_CONNECT_TIMEOUT,
        command_timeout: dt.timedelta = DEFAULT_COMMAND_TIMEOUT,
        listen_backoff: ReconnectBackoff = DEFAULT_BACKOFF,
        listen_ping_interval: dt.timedelta = DEFAULT_PING_INTERVAL,
        stuck_after: dt.timedelta = DEFAULT_STUCK_AFTER,
    ) -> None:
        if not 1 <= pool_min_size <= pool_max_size:
            raise ValueError("the pool needs 1 <= pool_min_size <= pool_max_size")
        self._dsn = dsn
        self._pool_sizes = (pool_min_size, pool_max_size)
        self._connect_s = connect_timeout.total_seconds()
        self._command_s = command_timeout.total_seconds()
        self._listen_backoff = listen_backoff
        self._listen_ping = listen_ping_interval
        self._stuck_after = stuck_after
        self._channel = postgres_notify.check_channel(events_channel)
        self._writer = PgBatchWriter(max_batch=max_batch, channel=events_channel)
        self._reader = PgReader()
        self._credentials = PostgresCredentials(self._writer, self._reader)
        self._revocations = PostgresRevocations(self._reader)
        self._audit = PostgresAudit(self._writer, self._reader)
        self._approvals = PostgresApprovals(self._writer, self._reader)
        self._bans = PostgresBans(self._writer, self._reader)
        self._keys = PostgresKeys(self._writer, self._reader)
        self._listeners: set[EventListener] = set()
        self._pool: Any = None

    @property
    def credentials(self) -> PostgresCredentials:
        return self._credentials

    @property
    def revocations(self) -> PostgresRevocations:
        return self._revocations

    @property
    def audit(self) -> PostgresAudit:
        return self._audit

    @property
    def approvals(self) -> PostgresApprovals:
        return self._approvals

    @property
    def bans(self) -> PostgresBans:
        return self._bans

    @property
    def keys(self) -> PostgresKeys:
        return self._keys

    @property
    def writer_stats(self) -> WriterStats:
        """Batches committed and operations run: operations / batches is the batching effect."""
        return self._writer.stats

    def observe_writes(self, observer: BatchObserver) -> None:
        """Tell `observer(operations, seconds)` about each committed write batch (metrics)."""
        self._writer.observe(observer)

    @property
    def notify_channel(self) -> str:
        """The LISTEN/NOTIFY channel this store announces its commits on and listens to."""
        return self._channel

    @property
    def listener_pids(self) -> frozenset[int]:
        """Backend pids of the LISTEN connections now up (diagnostics, and the tests)."""
        return frozenset(pid for x in self._listeners if (pid := x.server_pid) is not None)

    async def _connect(self) -> Any:
        return await asyncpg.connect(
            self._dsn, timeout=self._connect_s, command_timeout=self._command_s
        )

    async def migrate(self) -> int:
        if self._pool is not None:
            try:
                async with self._pool.acquire() as conn:
                    return await self._migrate(conn)
            except DRIVER_ERRORS as exc:  # acquiring or releasing; _migrate translates its own
                raise startup_error(exc, doing="connect to PostgreSQL") from exc
        try:
            conn = await self._connect()
        except (*DRIVER_ERRORS, ValueError) as exc:
            raise startup_error(exc, doing="connect to PostgreSQL") from exc
        try:
            return await self._migrate(conn)
        finally:
            try:
                await conn.close()
            except DRIVER_ERRORS:
                conn.terminate()  # already broken: nothing to say goodbye to

    @staticmethod
    async def _migrate(conn: Any) -> int:
        try:
            return await postgres_schema.migrate(conn)
        except Exception as exc:
            error = startup_error(exc, doing="migrate the PostgreSQL schema")
            if error is exc:
                raise
            raise error from exc

    async def open(self) -> None:
        if self._pool is not None:
            return
        min_size, max_size = self._pool_sizes
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=self._connect_s,
                command_timeout=self._command_s,
                init=functools.partial(prepare_connection, stuck_after=self._stuck_after),
            )
        except (*DRIVER_ERRORS, ValueError) as exc:
            raise startup_error(exc, doing="connect to PostgreSQL") from exc
        try:
            async with pool.acquire() as conn:
                await self._migrate(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._reader.pool = pool
        self._writer.start(pool)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        for listener in self._listeners:
            listener.stop()
        await self._writer.stop()
        self._reader.pool = None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._command_s)
            except (TimeoutError, *DISCONNECTED):
                pool.terminate()

    async def listen(self, callback: Callback) -> None:
        """Call `callback()` whenever a batch that appended revocation events commits (on any
        replica), and once each time the LISTEN connection is (re)established, so a consumer
        that re-reads the table then misses nothing. Runs until the store closes or the task
        is cancelled; a dropped connection is re-made with backoff."""
        await self._listen(lambda _payload: callback())

    async def follow(self, callback: Callable[[StoreChange], None]) -> None:
        """As listen, saying what changed (see base.ChangeNotifier and postgres_notify)."""
        everything = StoreChange(everything=True)

        def changed(payload: str | None) -> None:
            callback(everything if payload is None else postgres_notify.decode(payload))

        await self._listen(changed)

    async def _listen(self, callback: PayloadCallback) -> None:
        if self._pool is None:
            raise Unavailable("store is closed")
        listener = EventListener(
            self._connect,
            channel=self._channel,
            backoff=self._listen_backoff,
            ping_interval=self._listen_ping,
        )
        self._listeners.add(listener)
        try:
            await listener.run_with_payloads(callback)
        finally:
            self._listeners.discard(listener)

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
