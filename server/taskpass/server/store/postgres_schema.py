"""PostgreSQL schema: ordered migrations and `migrate`, the twin of sqlite_schema.

Tables live in the connection's current schema (the first existing one on its search_path), so
one database can hold several taskpass deployments (and the tests one schema each): put
`?search_path=NAME` in the DSN to choose it.

Timestamps are timestamptz (microseconds, like Python). JSON columns hold canonical JSON TEXT,
not jsonb: jsonb rewrites numbers (1e20 comes back as an integer) and would change what the
audit hash covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskpass.server.errors import ConfigError

# First key of the two-key advisory locks; the second is hashtext(current_schema()), so
# deployments in different schemas of one database never wait for each other.
MIGRATION_LOCK = 0x74706D67  # "tpmg"
SCHEMA_KEY = "hashtext(coalesce(current_schema(), ''))"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tasks, credentials, hash-chained audit log, revocation events",
        (
            """CREATE TABLE tasks (
                requester    text NOT NULL,
                task_id      text NOT NULL,
                digest       text NOT NULL,
                descriptor   text NOT NULL,
                created_at   timestamptz NOT NULL,
                completed_at timestamptz,
                PRIMARY KEY (requester, task_id)
            )""",
            """CREATE TABLE credentials (
                jti             text PRIMARY KEY,
                requester       text NOT NULL,
                task_id         text NOT NULL,
                audience        text NOT NULL,
                scopes          text[] NOT NULL,
                issued_at       timestamptz NOT NULL,
                expires_at      timestamptz NOT NULL,
                policy_version  text NOT NULL,
                kid             text NOT NULL,
                cert_thumbprint text,
                approval_id     text,
                parent_jti      text,
                revoked_at      timestamptz,
                revoke_reason   text NOT NULL DEFAULT '',
                FOREIGN KEY (requester, task_id) REFERENCES tasks (requester, task_id)
            )""",
            "CREATE INDEX credentials_by_task ON credentials (requester, task_id)",
            "CREATE INDEX credentials_by_expiry ON credentials (expires_at)",
            """CREATE TABLE audit (
                seq       bigint PRIMARY KEY CHECK (seq > 0),
                kind      text NOT NULL,
                actor     text NOT NULL,
                at        timestamptz NOT NULL,
                payload   text NOT NULL,
                prev_hash text NOT NULL,
                hash      text NOT NULL
            )""",
            # No audit record is ever updated or deleted (DESIGN.md, security invariants). The
            # hash chain, not these triggers, is what catches someone who can drop them.
            """CREATE FUNCTION taskpass_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                   RAISE EXCEPTION 'taskpass: % rows are append-only', TG_TABLE_NAME;
               END $$""",
            """CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
               FOR EACH ROW EXECUTE FUNCTION taskpass_refuse_change()""",
            """CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
               FOR EACH STATEMENT EXECUTE FUNCTION taskpass_refuse_change()""",
            """CREATE TABLE revocation_events (
                seq        bigint PRIMARY KEY CHECK (seq > 0),
                kind       text NOT NULL
                           CHECK (kind IN ('credential', 'task', 'identity', 'key', 'policy')),
                subject    text NOT NULL,
                task_id    text,
                jti        text,
                expires_at timestamptz NOT NULL,
                at         timestamptz NOT NULL,
                set_token  text NOT NULL,
                reason     text NOT NULL
            )""",
            "CREATE INDEX revocation_events_in_force ON revocation_events (expires_at)",
            # Events may be pruned once expired, but never rewritten.
            """CREATE TRIGGER revocation_events_no_update BEFORE UPDATE ON revocation_events
               FOR EACH ROW EXECUTE FUNCTION taskpass_refuse_change()""",
        ),
    ),
    Migration(
        2,
        "approval requests and their decisions",
        (
            """CREATE TABLE approvals (
                approval_id      text PRIMARY KEY,
                requester        text NOT NULL,
                requester_method text NOT NULL,
                cert_thumbprint  text,
                task_id          text NOT NULL,
                digest           text NOT NULL,
                descriptor       text NOT NULL,
                audience         text NOT NULL,
                action           text NOT NULL,
                sensitivity      text NOT NULL,
                scopes           text[] NOT NULL,
                ttl_seconds      bigint NOT NULL,
                rules            text[] NOT NULL,
                approver_groups  text[] NOT NULL,
                policy_version   text NOT NULL,
                decision_id      text NOT NULL,
                state            text NOT NULL
                                 CHECK (state IN ('pending', 'approved', 'denied', 'consumed')),
                created_at       timestamptz NOT NULL,
                expires_at       timestamptz NOT NULL,
                decided_by       text,
                decided_at       timestamptz,
                reason           text NOT NULL DEFAULT '',
                consumed_at      timestamptz,
                -- insertion order, the tie-break SQLite gets from rowid
                ord              bigint GENERATED ALWAYS AS IDENTITY
            )""",
            "CREATE INDEX approvals_by_task ON approvals (requester, digest, created_at)",
            "CREATE INDEX approvals_pending ON approvals (state, expires_at)",
            # An approval is decided once and used once: a decided or consumed row never goes
            # back, and nothing else about the request ever changes.
            """CREATE FUNCTION taskpass_approval_forward_only() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   IF NOT ((OLD.state = 'pending' AND NEW.state IN ('approved', 'denied'))
                           OR (OLD.state = 'approved' AND NEW.state = 'consumed')) THEN
                       RAISE EXCEPTION 'taskpass: approval state moves forward only';
                   END IF;
                   RETURN NEW;
               END $$""",
            """CREATE TRIGGER approvals_forward_only BEFORE UPDATE ON approvals
               FOR EACH ROW EXECUTE FUNCTION taskpass_approval_forward_only()""",
            """CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals
               FOR EACH ROW EXECUTE FUNCTION taskpass_refuse_change()""",
        ),
    ),
    Migration(
        3,
        "identity bans",
        (
            # A ban is state, not history: unban deletes the row; the audit log keeps both.
            """CREATE TABLE bans (
                pattern   text PRIMARY KEY,
                banned_at timestamptz NOT NULL,
                banned_by text NOT NULL,
                reason    text NOT NULL
            )""",
            # Identity revocation scans live credentials by requester (exact or ID prefix); "C"
            # collation so the prefix range is byte order, whatever the database's locale.
            """CREATE INDEX credentials_live_by_requester
               ON credentials ((requester COLLATE "C"), expires_at) WHERE revoked_at IS NULL""",
        ),
    ),
    Migration(
        4,
        "published signing keys (the shared JWKS of replicas)",
        (
            # Public keys only: private keys stay in each replica's key_dir.
            """CREATE TABLE published_keys (
                kid           text PRIMARY KEY,
                jwk           text NOT NULL,
                published_by  text NOT NULL,
                published_at  timestamptz NOT NULL,
                publish_until timestamptz NOT NULL
            )""",
            "CREATE INDEX published_keys_until ON published_keys (publish_until)",
        ),
    ),
    Migration(
        5,
        "delegation: children by parent credential",
        # cascade revocation walks the delegation tree from parent to children (postgres_cascade)
        (
            "CREATE INDEX credentials_by_parent ON credentials (parent_jti)"
            " WHERE parent_jti IS NOT NULL",
        ),
    ),
    Migration(
        6,
        "approvals of a delegated exchange bound to the parent credential",
        # NULL: asked without a parent, as every request stored before this migration was
        # (postgres_approvals matches and consumes a grant only under the same parent)
        ("ALTER TABLE approvals ADD COLUMN parent_jti text",),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


async def migrate(conn: Any) -> int:
    """Apply every pending migration in one transaction; return the schema version.

    `conn` is an asyncpg connection. An advisory lock makes replicas that start together take
    turns: the first migrates, the others then find nothing to do.
    """
    schema = await conn.fetchval("SELECT current_schema()")
    if schema is None:
        raise ConfigError(
            "PostgreSQL: no schema on the search_path exists: create the schema named by "
            "?search_path= in store.dsn, or drop that parameter to use public"
        )
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock($1, {SCHEMA_KEY})", MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                   version    integer PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now()
               )"""
        )
        current = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
        if current > LATEST_VERSION:
            raise ConfigError(
                f"the database schema is version {current}, newer than this taskpass knows "
                f"({LATEST_VERSION}): upgrade taskpass"
            )
        for migration in MIGRATIONS[current:]:
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version) VALUES ($1)", migration.version
            )
    return LATEST_VERSION
