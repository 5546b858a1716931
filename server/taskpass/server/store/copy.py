"""`taskpass db copy`: move a SQLite deployment's data into PostgreSQL, to run replicas.

Everything the store holds is copied as it is: tasks, credentials, revocation events (their seq
and signed SETs), the audit log (its seq, prev_hash and hash: the chain is carried, not
re-made), approvals, bans and published keys. In one PostgreSQL transaction, under the write
lock every replica takes, into an empty schema:

    read the SQLite file in one read transaction (a consistent snapshot)
    refuse a destination that holds any row (a copy never merges)
    COPY each table, in the order its references need
    read the audit log back and verify its chain, ending at the source's head
    COMMIT (or, on any problem, roll back: nothing was copied)

Stop the SQLite server first: what it writes after the snapshot would not be copied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from taskpass.server.errors import ConfigError, Conflict
from taskpass.server.store import row_codec, sqlite_schema
from taskpass.server.store.audit_chain import GENESIS_HASH, VerifyResult, verify_chain
from taskpass.server.store.postgres import PostgresStore
from taskpass.server.store.postgres_codec import codec as pg
from taskpass.server.store.postgres_errors import DRIVER_ERRORS, startup_error
from taskpass.server.store.postgres_schema import SCHEMA_KEY
from taskpass.server.store.postgres_writer import WRITE_LOCK
from taskpass.server.store.sqlite_codec import codec as sq

PAGE = 1000
_AUDIT_PAGE = """
    SELECT seq, kind, actor, at, payload, prev_hash, hash
    FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"""


@dataclass(frozen=True, slots=True)
class _Table:
    table: row_codec.Table[Any]
    """Its name and columns: the SQLite codec's rows, in the order the PostgreSQL codec's are."""
    order: str
    """SQLite ORDER BY: rows go in their original order (approvals' tie-break depends on it)."""
    convert: Callable[[row_codec.Row], tuple[Any, ...]]
    """A SQLite row to a PostgreSQL row."""

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def columns(self) -> tuple[str, ...]:
        return self.table.names


# Tasks before the credentials that reference them; the rest in any order.
TABLES: tuple[_Table, ...] = (
    _Table(
        row_codec.TASKS,
        "created_at, requester, task_id",
        lambda row: pg.task_to_row(sq.task_from_row(row)),
    ),
    _Table(
        row_codec.CREDENTIALS,
        "rowid",
        lambda row: pg.credential_to_row(sq.credential_from_row(row)),
    ),
    _Table(row_codec.EVENTS, "seq", lambda row: pg.event_to_row(sq.event_from_row(row))),
    _Table(row_codec.AUDIT, "seq", lambda row: pg.audit_to_row(sq.audit_from_row(row))),
    _Table(
        row_codec.APPROVALS,
        "rowid",
        lambda row: pg.approval_to_row(sq.approval_from_row(row)),
    ),
    _Table(row_codec.BANS, "banned_at, pattern", lambda row: pg.ban_to_row(sq.ban_from_row(row))),
    _Table(
        row_codec.PUBLISHED_KEYS,
        "published_at, kid",
        lambda row: pg.key_to_row(sq.key_from_row(row)),
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyReport:
    rows: dict[str, int]
    """Rows copied, by table."""
    audit: VerifyResult
    """The destination's audit chain, verified after the copy (ok, records, head)."""


def _open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ConfigError(f"no SQLite database at {path}: give the file the server's store used")
    conn = sqlite_schema.connect(path, read_only=True)
    try:
        version = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise ConfigError(f"{path} is not a taskpass database (no schema_version)") from exc
    if int(version[0]) != sqlite_schema.LATEST_VERSION:
        conn.close()
        raise ConfigError(
            f"the SQLite database is at schema version {version[0]}, this taskpass copies "
            f"version {sqlite_schema.LATEST_VERSION}: run `taskpass db migrate` on it first"
        )
    return conn


def _rows(conn: sqlite3.Connection, table: _Table) -> Iterator[tuple[Any, ...]]:
    # Table, columns and order come from TABLES above, never from input.
    sql = f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order}"  # noqa: S608
    cursor = conn.execute(sql)
    while page := cursor.fetchmany(PAGE):
        for row in page:
            yield table.convert(row)


async def _verify_audit(conn: Any, *, head: tuple[int, str]) -> VerifyResult:
    """The copied chain, checked page by page from genesis; it must end at the source's head."""
    last_seq, last_hash, checked = 0, GENESIS_HASH, 0
    while rows := await conn.fetch(_AUDIT_PAGE, last_seq, PAGE):
        page = verify_chain(
            [pg.audit_from_row(row) for row in rows], after_seq=last_seq, after_hash=last_hash
        )
        if not page.ok:
            raise Conflict(
                f"the audit chain does not verify after copying ({page.message}); nothing was "
                "copied: check the source with `taskpass audit verify`"
            )
        last_seq, last_hash, checked = page.last_seq, page.last_hash, checked + page.checked
    if (last_seq, last_hash) != head:
        raise Conflict(
            f"the copied audit log ends at record {last_seq}, the source's at {head[0]}; "
            "nothing was copied"
        )
    return VerifyResult(ok=True, checked=checked, last_seq=last_seq, last_hash=last_hash)


async def _empty(conn: Any) -> None:
    for table in TABLES:
        sql = f"SELECT EXISTS (SELECT 1 FROM {table.name})"  # noqa: S608 - a name from TABLES
        if await conn.fetchval(sql):
            raise Conflict(
                f"the destination already holds {table.name}: copy into an empty database "
                "(or a new schema, ?search_path=...); a copy never merges"
            )


async def _copy(
    conn: Any, reader: sqlite3.Connection, *, head: tuple[int, str]
) -> tuple[dict[str, int], VerifyResult]:
    async with conn.transaction():
        # The lock every replica's writer takes: nothing else writes while the copy runs.
        await conn.execute(f"SELECT pg_advisory_xact_lock($1, {SCHEMA_KEY})", WRITE_LOCK)
        await _empty(conn)
        copied = {}
        for table in TABLES:
            status = await conn.copy_records_to_table(
                table.name, records=_rows(reader, table), columns=list(table.columns)
            )
            copied[table.name] = int(status.split()[-1])
        return copied, await _verify_audit(conn, head=head)


async def copy_sqlite_to_postgres(source: Path, dsn: str) -> CopyReport:
    """Copy the SQLite store at `source` into the (empty) PostgreSQL store at `dsn`."""
    reader = _open_source(source)
    try:
        await PostgresStore(dsn).migrate()  # the destination's tables, at this version
        reader.execute("BEGIN")  # one snapshot for every table
        last = reader.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        head = (0, GENESIS_HASH) if last is None else (int(last[0]), str(last[1]))
        try:
            conn = await asyncpg.connect(dsn)
        except (*DRIVER_ERRORS, ValueError) as exc:
            raise startup_error(exc, doing="connect to PostgreSQL") from exc
        try:
            copied, audit = await _copy(conn, reader, head=head)
        except DRIVER_ERRORS as exc:
            raise startup_error(exc, doing="copy into PostgreSQL (nothing was copied)") from exc
        finally:
            await conn.close()
    finally:
        reader.close()
    return CopyReport(rows=copied, audit=audit)
