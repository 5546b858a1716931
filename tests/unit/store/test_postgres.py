"""PostgreSQL-only behaviour: migrations, triggers and tampering, injected faults, driver errors,
dead pooled connections, durability settings, and group commit. Replicas and LISTEN are in
test_postgres_replicas.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import urllib.parse
from collections.abc import Awaitable
from pathlib import Path

import asyncpg
import pytest

from taskpass.server.errors import (
    ConfigError,
    InvalidRequest,
    PermissionDenied,
    StoreCorrupted,
    Unavailable,
)
from taskpass.server.store import postgres_schema
from taskpass.server.store.audit_chain import ChainProblem, verify_chain
from taskpass.server.store.base import MAX_PAGE, EventNotifier
from taskpass.server.store.postgres import PostgresStore, prepare_connection
from taskpass.server.store.postgres_schema import SCHEMA_KEY
from taskpass.server.store.postgres_writer import WRITE_LOCK
from taskpass.server.store.records import ApprovalState, AuditEntry
from taskpass.server.store.sqlite import SqliteStore
from tests.support.postgres import base_dsn, raw_connection, with_params

from . import test_approvals as approvals
from .builders import AGENT, T0, entry, issue, task_revocation

pytestmark = pytest.mark.postgres

TOOL = "spiffe://example.org/tools/runner"


async def audit_of_six(dsn: str) -> None:
    async with PostgresStore(dsn) as store:
        for n in range(1, 7):
            await store.audit.append(entry("decision", n=n))


# -- migrations ----------------------------------------------------------------------------------


async def test_migrate_records_each_version_once_and_is_safe_to_repeat(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)

    assert await store.migrate() == postgres_schema.LATEST_VERSION
    assert await store.migrate() == postgres_schema.LATEST_VERSION

    async with raw_connection(pg_dsn) as conn:
        versions = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
    assert [row["version"] for row in versions] == [m.version for m in postgres_schema.MIGRATIONS]


async def test_replicas_starting_together_migrate_once(pg_dsn: str) -> None:
    stores = [PostgresStore(pg_dsn) for _ in range(4)]

    versions = await asyncio.gather(*(s.migrate() for s in stores))

    assert versions == [postgres_schema.LATEST_VERSION] * 4
    async with raw_connection(pg_dsn) as conn:
        assert await conn.fetchval("SELECT count(*) FROM schema_version") == len(
            postgres_schema.MIGRATIONS
        )


async def test_a_schema_newer_than_the_code_is_refused(pg_dsn: str) -> None:
    await PostgresStore(pg_dsn).migrate()
    async with raw_connection(pg_dsn) as conn:
        await conn.execute("INSERT INTO schema_version (version) VALUES (99)")

    with pytest.raises(ConfigError, match="newer than this taskpass knows"):
        await PostgresStore(pg_dsn).open()


async def test_a_search_path_naming_no_schema_is_a_config_error() -> None:
    dsn = with_params(base_dsn(), search_path=f"taskpass_missing_{secrets.token_hex(4)}")

    with pytest.raises(ConfigError, match="no schema on the search_path exists"):
        await PostgresStore(dsn).migrate()


# -- triggers and tampering ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        pytest.param("UPDATE audit SET payload = '{}' WHERE seq = 2", "append-only", id="update"),
        pytest.param("DELETE FROM audit WHERE seq = 2", "append-only", id="delete"),
        pytest.param("TRUNCATE audit", "append-only", id="truncate"),
        pytest.param("UPDATE revocation_events SET reason = 'x'", "append-only", id="event"),
    ],
)
async def test_changing_an_audit_row_or_an_event_is_refused_by_a_trigger(
    pg_dsn: str, statement: str, message: str
) -> None:
    await audit_of_six(pg_dsn)
    async with PostgresStore(pg_dsn) as store:
        await issue(store, "jti-1")
        await store.credentials.complete_task(
            requester=AGENT, task_id="task-1", at=T0, audit=entry(), event=task_revocation()
        )

    async with raw_connection(pg_dsn) as conn:
        with pytest.raises(asyncpg.RaiseError, match=message):
            await conn.execute(statement)


async def test_approvals_move_forward_only_and_are_never_deleted(pg_dsn: str) -> None:
    await PostgresStore(pg_dsn).migrate()
    async with raw_connection(pg_dsn) as conn:
        await conn.execute(
            """INSERT INTO approvals (approval_id, requester, requester_method, task_id, digest,
                   descriptor, audience, action, sensitivity, scopes, ttl_seconds, rules,
                   approver_groups, policy_version, decision_id, state, created_at, expires_at)
               VALUES ('apr-1', 'r', 'x509-svid', 't', 'd', '{}', 'a', 'write', 'internal',
                   '{}', 60, '{}', '{}', 'v', 'dec', 'approved', now(), now())"""
        )
        with pytest.raises(asyncpg.RaiseError, match="forward only"):
            await conn.execute("UPDATE approvals SET state = 'pending'")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM approvals")


async def test_an_edit_made_past_the_triggers_is_found_by_the_chain(pg_dsn: str) -> None:
    await audit_of_six(pg_dsn)
    async with raw_connection(pg_dsn) as conn:
        # What someone with the table owner's rights can do: switch the triggers off.
        await conn.execute("ALTER TABLE audit DISABLE TRIGGER USER")
        await conn.execute("""UPDATE audit SET payload = '{"n":99}' WHERE seq = 4""")

    async with PostgresStore(pg_dsn) as store:
        result = verify_chain(await store.audit.read(limit=MAX_PAGE))

    assert (result.ok, result.problem, result.seq) == (False, ChainProblem.HASH_MISMATCH, 4)


async def test_a_running_server_refuses_to_append_after_records_were_cut_off_its_end(
    pg_dsn: str,
) -> None:
    async with PostgresStore(pg_dsn) as store:
        for n in range(1, 7):
            await store.audit.append(entry("decision", n=n))
        async with raw_connection(pg_dsn) as conn:
            await conn.execute("ALTER TABLE audit DISABLE TRIGGER USER")
            await conn.execute("DELETE FROM audit WHERE seq > 4")

        # Appending would reuse seqs 5 and 6, and the chain would verify again.
        with pytest.raises(StoreCorrupted) as refused:
            await store.audit.append(entry("decision", n=7))

    assert refused.value.message == (
        "store corrupted: the audit log ends at record 4, but this server saw record 6: records "
        "were cut off its end; restore them from a backup"
    )


@pytest.mark.parametrize("pattern", [AGENT, "spiffe://example.org/agents/*"])
async def test_an_issuance_is_refused_under_a_ban_another_replica_committed(
    pg_dsn: str, pattern: str
) -> None:
    async with PostgresStore(pg_dsn) as store:
        # Another replica's ban: in the table, not yet in this replica's ban list.
        async with raw_connection(pg_dsn) as conn:
            await conn.execute(
                "INSERT INTO bans (pattern, banned_at, banned_by, reason) "
                "VALUES ($1, now(), 'spiffe://example.org/security/admin', 'key leaked')",
                pattern,
            )
        with pytest.raises(PermissionDenied, match="is banned by security"):
            await issue(store, "jti-after-ban")
        await issue(store, "jti-other", requester=TOOL, task_id="task-2")  # not covered

        assert await store.credentials.get_credential("jti-after-ban") is None


async def test_an_approval_is_not_used_once_its_approver_was_banned_on_another_replica(
    pg_dsn: str,
) -> None:
    async with PostgresStore(pg_dsn) as store:
        await approvals.create(store, approvals.pending())
        await approvals.approve(store)
        async with raw_connection(pg_dsn) as conn:  # the ban, committed by another replica
            await conn.execute(
                "INSERT INTO bans (pattern, banned_at, banned_by, reason) "
                "VALUES ($1, now(), 'spiffe://example.org/security/admin', 'key stolen')",
                approvals.APPROVER,
            )
        with pytest.raises(PermissionDenied) as refused:
            await approvals.consume(store)
        still = await store.approvals.get("apr-1")

    assert refused.value.message == (
        f"approval apr-1 was given by {approvals.APPROVER}, who has been banned since; a new "
        "approval needs a new task_id"
    )
    assert still is not None and still.state is ApprovalState.APPROVED  # not used up


# -- faults and driver errors --------------------------------------------------------------------


async def test_a_database_fault_fails_only_its_operation_as_unavailable(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as store, raw_connection(pg_dsn) as conn:
        await conn.execute(
            """CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'injected disk fault'; END $$"""
        )
        await conn.execute(
            """CREATE TRIGGER fault BEFORE INSERT ON credentials FOR EACH ROW
               WHEN (NEW.jti = 'poison') EXECUTE FUNCTION fault()"""
        )
        jtis = [f"jti-{n}" for n in range(20)]
        jtis.insert(10, "poison")

        results = await asyncio.gather(
            *(issue(store, jti, task_id=f"task-{jti}") for jti in jtis), return_exceptions=True
        )

        failed = {
            jti: r for jti, r in zip(jtis, results, strict=True) if isinstance(r, BaseException)
        }
        assert list(failed) == ["poison"]
        error = failed["poison"]
        assert isinstance(error, Unavailable)
        assert "injected" not in str(error)  # the server's text stays in the cause, for the log
        assert isinstance(error.__cause__, asyncpg.PostgresError)
        assert await store.credentials.get_task(AGENT, "task-poison") is None
        records = await store.audit.read(limit=MAX_PAGE)
        assert [r.seq for r in records] == list(range(1, 21))
        assert verify_chain(records).ok


@pytest.mark.parametrize("together", [True, False], ids=["in-a-batch", "alone"])
async def test_a_fault_after_an_operation_appended_its_audit_record_leaves_no_trace(
    pg_dsn: str, together: bool
) -> None:
    async with PostgresStore(pg_dsn) as store, raw_connection(pg_dsn) as conn:
        tasks = [f"task-{n}" for n in range(12)]
        for task_id in tasks:
            await issue(store, f"jti-{task_id}", task_id=task_id)
        # complete_task appends its audit record, then its event: the event insert fails.
        await conn.execute(
            """CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'injected'; END $$"""
        )
        await conn.execute(
            """CREATE TRIGGER fault BEFORE INSERT ON revocation_events FOR EACH ROW
               WHEN (NEW.task_id = 'task-5') EXECUTE FUNCTION fault()"""
        )

        def complete(task_id: str) -> Awaitable[object]:
            return store.credentials.complete_task(
                requester=AGENT,
                task_id=task_id,
                at=T0,
                audit=entry("task_completed", task_id=task_id),
                event=task_revocation(task_id, at=T0),
            )

        results: list[object] = []
        if together:
            results = await asyncio.gather(*map(complete, tasks), return_exceptions=True)
        else:
            for task_id in tasks:
                [result] = await asyncio.gather(complete(task_id), return_exceptions=True)
                results.append(result)

        assert [isinstance(r, Unavailable) for r in results] == [n == 5 for n in range(12)]
        records = await store.audit.read(limit=MAX_PAGE)
        assert [r.seq for r in records] == list(range(1, 12 + 11 + 1))
        assert "task-5" not in [r.payload.get("task_id") for r in records[12:]]
        assert verify_chain(records).ok
        events = await store.revocations.read_after(0, limit=MAX_PAGE)
        assert [e.seq for e in events] == list(range(1, 12))
        untouched = await store.credentials.get_credential("jti-task-5")
        assert untouched is not None
        assert untouched.revoked_at is None
        task = await store.credentials.get_task(AGENT, "task-5")
        assert task is not None
        assert task.completed_at is None


async def test_a_value_postgres_cannot_store_is_an_invalid_request(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as store:
        results = await asyncio.gather(
            store.audit.append(entry(n=1)),
            store.audit.append(AuditEntry(kind="decision", actor="nul\x00byte", at=T0, payload={})),
            store.audit.append(entry(n=2)),
            return_exceptions=True,
        )

        assert isinstance(results[1], InvalidRequest)
        assert [r.seq for r in await store.audit.read(limit=10)] == [1, 2]


@pytest.mark.parametrize(
    ("dsn", "error", "message"),
    [
        pytest.param(
            "postgresql://postgres:hunter2@127.0.0.1:1/test",
            Unavailable,
            "unreachable",
            id="nothing-listening",
        ),
        pytest.param(
            "postgresql://nobody_{token}:hunter2@{host}/test",
            ConfigError,
            "refused the user or password",
            id="unknown-role",
        ),
        pytest.param(
            "postgresql://{user}:hunter2@{host}/taskpass_no_db_{token}",
            ConfigError,
            "does not exist",
            id="unknown-database",
        ),
        pytest.param("postgresql://{host}:99999999/x", ConfigError, "DSN", id="bad-port"),
    ],
)
async def test_a_store_that_cannot_connect_says_why_without_the_dsn(
    dsn: str, error: type[Exception], message: str
) -> None:
    parts = urllib.parse.urlsplit(base_dsn())
    dsn = dsn.format(
        token=secrets.token_hex(4),
        host=f"{parts.hostname}:{parts.port or 5432}",
        user=parts.username or "postgres",
    )

    with pytest.raises(error, match=message) as caught:
        async with PostgresStore(dsn, connect_timeout=dt.timedelta(seconds=5)):
            pass

    assert "hunter2" not in str(caught.value)
    assert dsn not in str(caught.value)


@pytest.mark.parametrize("first", ["read", "write"])
async def test_dead_pooled_connections_are_replaced_without_failing_a_call(
    pg_dsn: str, first: str
) -> None:
    name = f"taskpass-test-{secrets.token_hex(4)}"
    dsn = with_params(pg_dsn, application_name=name)
    async with PostgresStore(dsn, pool_min_size=3) as store:
        await issue(store, "jti-1")
        # The server restarted, or a firewall dropped the idle connections.
        async with raw_connection(pg_dsn) as admin:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1",
                name,
            )
        assert killed >= 1

        if first == "read":
            assert await store.credentials.get_credential("jti-1") is not None
        await issue(store, "jti-2", task_id="task-2")
        assert await store.credentials.get_credential("jti-2") is not None
        assert len(await store.audit.read(limit=10)) == 2


async def test_sessions_commit_synchronously_even_if_the_dsn_turns_it_off(pg_dsn: str) -> None:
    async with raw_connection(with_params(pg_dsn, synchronous_commit="off")) as conn:
        assert await conn.fetchval("SHOW synchronous_commit") == "off"

        await prepare_connection(conn)

        assert await conn.fetchval("SHOW synchronous_commit") == "on"


async def test_a_frozen_replica_inside_a_batch_does_not_hold_the_write_lock_for_long(
    pg_dsn: str,
) -> None:
    stuck_after = dt.timedelta(milliseconds=200)
    async with PostgresStore(pg_dsn, stuck_after=stuck_after) as store:
        async with raw_connection(pg_dsn) as frozen:
            # Another replica takes the write lock mid-batch, then stops (SIGSTOP, partition).
            await prepare_connection(frozen, stuck_after=stuck_after)
            await frozen.execute("BEGIN")
            await frozen.execute(f"SELECT pg_advisory_xact_lock($1, {SCHEMA_KEY})", WRITE_LOCK)

            # The timeout only turns a regression (waiting for the lock for ever) into a
            # failure; the server ends the frozen transaction after `stuck_after`.
            async with asyncio.timeout(10):
                await issue(store, "jti-1")

            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
                await frozen.execute("SELECT 1")  # the frozen session was ended
        assert await store.credentials.get_credential("jti-1") is not None


# -- batching ------------------------------------------------------------------------------------


async def test_concurrent_writes_share_one_commit(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as store:
        await asyncio.gather(*(store.audit.append(entry(n=n)) for n in range(64)))

        stats = store.writer_stats

    assert stats.operations == 64
    assert stats.batches <= 2
    assert stats.largest_batch >= 32


async def test_a_batch_never_exceeds_its_cap(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn, max_batch=8) as store:
        await asyncio.gather(*(store.audit.append(entry(n=n)) for n in range(64)))

        stats = store.writer_stats

    assert (stats.operations, stats.largest_batch, stats.batches) == (64, 8, 8)


async def test_writes_queued_when_the_writer_is_cancelled_fail_as_unavailable(
    pg_dsn: str,
) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    writer = next(t for t in asyncio.all_tasks() if t.get_name() == "taskpass-postgres-writer")
    pending = asyncio.create_task(store.audit.append(entry()))
    await asyncio.sleep(0)  # one loop turn: the write is queued
    writer.cancel()

    # The timeout only turns a regression (a write left waiting forever) into a failure.
    with pytest.raises(Unavailable):
        async with asyncio.timeout(10):
            await pending
    await store.close()


def test_only_the_postgres_store_announces_commits_of_other_replicas() -> None:
    assert isinstance(PostgresStore("postgresql://db/taskpass"), EventNotifier)
    assert not isinstance(SqliteStore(Path("t.db")), EventNotifier)
