"""A row edited outside taskpass with a value it cannot read (out of range, malformed) is a clear
StoreCorrupted (DATA_LOSS, not a retryable UNAVAILABLE) naming the table and the column, read
through the public store API, never an OverflowError or ValueError from inside a codec (see
store/row_guard.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from taskpass.server.errors import ErrorCode, StoreCorrupted
from taskpass.server.store.base import MAX_PAGE, Store
from taskpass.server.store.postgres import PostgresStore
from taskpass.server.store.records import BanRecord
from taskpass.server.store.sqlite import SqliteStore
from tests.support.postgres import raw_connection

from .builders import AGENT, T0, credential_revocation, entry, issue
from .test_keys import published
from .test_postgres_replicas import pending_approval

LONG_AGO = T0 - dt.timedelta(days=365)
RESTORE = (
    "the database may have been edited outside taskpass or damaged: "
    "restore the row from a backup, or correct it"
)
# In the SQLite edits, 4611686018427387904 (2**62) microseconds since 1970 is about 146,000
# years: far past datetime's year 9999.

Read = Callable[[Store], Awaitable[object]]


def bad_column(table: str, column: str) -> str:
    return (
        f"store corrupted: column {column} of table {table} holds a value taskpass cannot "
        f"have written (out of range or malformed); {RESTORE}"
    )


def bad_timestamp(where: str) -> str:
    return (
        f"store corrupted: a timestamp in {where} is outside the years 1 to 9999 that "
        f"taskpass reads; {RESTORE}"
    )


async def fill(store: Store) -> None:
    """One row in every table a reader reads: a task with its credential, an event, an audit
    record, an approval, a published key and a ban."""
    await issue(store, "jti-1")
    await issue(store, "jti-2", task_id="task-2")
    await store.credentials.revoke_credential(
        jti="jti-2",
        at=T0,
        reason="revoked",
        audit=entry("revoke"),
        event=credential_revocation("jti-2", expires_at=T0 + dt.timedelta(hours=1)),
    )
    await store.approvals.create_or_reuse(pending_approval(), audit=entry(), now=T0)
    await store.keys.publish(published(), audit=entry("key_shared"))
    await store.bans.ban(
        ban=BanRecord(
            pattern="spiffe://example.org/agents/x",
            banned_at=T0,
            banned_by="spiffe://example.org/admin",
            reason="compromised",
        ),
        audit=entry("ban"),
        event=None,
    )


async def revoke_jti_1(store: Store) -> object:
    return await store.credentials.revoke_credential(
        jti="jti-1", at=T0, reason="revoked", audit=entry("revoke"), event=None
    )


async def in_force(store: Store) -> object:
    return await store.revocations.in_force(LONG_AGO)


READS: dict[str, Read] = {
    "credential": lambda s: s.credentials.get_credential("jti-1"),
    "task": lambda s: s.credentials.get_task(AGENT, "task-1"),
    "events-in-force": in_force,
    "events-after": lambda s: s.revocations.read_after(0, limit=MAX_PAGE),
    "audit": lambda s: s.audit.read(limit=MAX_PAGE),
    "approval": lambda s: s.approvals.get("apr-1"),
    "keys": lambda s: s.keys.list_published(LONG_AGO),
    "bans": lambda s: s.bans.list_bans(),
    "revoke": revoke_jti_1,
}


# -- SQLite: the file edited directly --------------------------------------------------------


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """The file opened directly, as anyone with write access to it could; without the triggers
    that refuse edits of audit records, events and decided approvals (as such a person would)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        triggers = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        for (name,) in triggers.fetchall():
            conn.execute(f'DROP TRIGGER "{name}"')
        yield conn
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("edit", "read", "message"),
    [
        pytest.param(
            "UPDATE credentials SET expires_at = 4611686018427387904 WHERE jti = 'jti-1'",
            "credential",
            bad_column("credentials", "expires_at"),
            id="credential-expiry-beyond-datetime",
        ),
        pytest.param(
            "UPDATE credentials SET scopes = 'payments:read' WHERE jti = 'jti-1'",
            "credential",
            bad_column("credentials", "scopes"),
            id="credential-scopes-not-json",
        ),
        pytest.param(
            "UPDATE credentials SET expires_at = 4611686018427387904 WHERE jti = 'jti-1'",
            "revoke",
            bad_column("credentials", "expires_at"),
            id="credential-read-by-a-write",
        ),
        pytest.param(
            "UPDATE tasks SET created_at = 'yesterday' WHERE task_id = 'task-1'",
            "task",
            bad_column("tasks", "created_at"),
            id="task-time-as-text",
        ),
        pytest.param(
            "UPDATE revocation_events SET seq = -1",
            "events-in-force",
            bad_column("revocation_events", "seq"),
            id="event-negative-seq",
        ),
        pytest.param(
            "UPDATE revocation_events SET expires_at = -4611686018427387904",
            "events-after",
            bad_column("revocation_events", "expires_at"),
            id="event-expiry-before-year-1",
        ),
        pytest.param(
            "UPDATE audit SET at = 4611686018427387904 WHERE seq = 2",
            "audit",
            bad_column("audit", "at"),
            id="audit-time-beyond-datetime",
        ),
        pytest.param(
            "UPDATE approvals SET ttl_seconds = -300",
            "approval",
            bad_column("approvals", "ttl_seconds"),
            id="approval-negative-ttl",
        ),
        pytest.param(
            "UPDATE approvals SET ttl_seconds = '300s'",
            "approval",
            bad_column("approvals", "ttl_seconds"),
            id="approval-ttl-as-text",
        ),
        pytest.param(
            "UPDATE published_keys SET publish_until = 4611686018427387904",
            "keys",
            bad_column("published_keys", "publish_until"),
            id="key-publication-beyond-datetime",
        ),
        pytest.param(
            "UPDATE bans SET banned_at = 4611686018427387904",
            "bans",
            bad_column("bans", "banned_at"),
            id="ban-time-beyond-datetime",
        ),
    ],
)
async def test_sqlite_a_value_edited_out_of_range_is_store_corrupted_naming_table_and_column(
    tmp_path: Path, edit: str, read: str, message: str
) -> None:
    path = tmp_path / "taskpass.db"
    async with SqliteStore(path) as store:
        await fill(store)
        with raw(path) as conn:
            conn.execute(edit)

        with pytest.raises(StoreCorrupted) as caught:
            await READS[read](store)

    assert caught.value.message == message
    assert caught.value.code is ErrorCode.DATA_LOSS


# -- PostgreSQL: the rows edited by a superuser, triggers off --------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("edit", "read", "message"),
    [
        pytest.param(
            "UPDATE credentials SET expires_at = '20000-01-01' WHERE jti = 'jti-1'",
            "credential",
            bad_timestamp("table credentials"),
            id="credential-expiry-beyond-datetime",
        ),
        pytest.param(
            "UPDATE credentials SET issued_at = '20000-01-01' WHERE jti = 'jti-1'",
            "revoke",
            bad_timestamp("the database"),
            id="credential-read-by-a-write",
        ),
        pytest.param(
            "UPDATE tasks SET created_at = 'infinity' WHERE task_id = 'task-1'",
            "task",
            bad_column("tasks", "created_at"),
            id="task-time-infinity",
        ),
        pytest.param(
            "ALTER TABLE revocation_events DROP CONSTRAINT revocation_events_seq_check;"
            "UPDATE revocation_events SET seq = -1",
            "events-in-force",
            bad_column("revocation_events", "seq"),
            id="event-negative-seq",
        ),
        pytest.param(
            "UPDATE revocation_events SET at = '4000-01-01 BC'",
            "events-after",
            bad_timestamp("table revocation_events"),
            id="event-time-before-year-1",
        ),
        pytest.param(
            "UPDATE audit SET at = '-infinity' WHERE seq = 2",
            "audit",
            bad_column("audit", "at"),
            id="audit-time-minus-infinity",
        ),
        pytest.param(
            "UPDATE approvals SET ttl_seconds = -300",
            "approval",
            bad_column("approvals", "ttl_seconds"),
            id="approval-negative-ttl",
        ),
        pytest.param(
            "UPDATE published_keys SET publish_until = 'infinity'",
            "keys",
            bad_column("published_keys", "publish_until"),
            id="key-publication-infinity",
        ),
        pytest.param(
            "UPDATE bans SET banned_at = '20000-01-01'",
            "bans",
            bad_timestamp("table bans"),
            id="ban-time-beyond-datetime",
        ),
    ],
)
async def test_postgres_a_value_edited_out_of_range_is_store_corrupted_naming_table_and_column(
    pg_dsn: str, edit: str, read: str, message: str
) -> None:
    async with PostgresStore(pg_dsn) as store:
        await fill(store)
        async with raw_connection(pg_dsn) as conn:
            await conn.execute("SET session_replication_role = replica")  # no triggers
            await conn.execute(edit)

        with pytest.raises(StoreCorrupted) as caught:
            await READS[read](store)

    assert caught.value.message == message
    assert caught.value.code is ErrorCode.DATA_LOSS
