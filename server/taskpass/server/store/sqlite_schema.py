"""SQLite schema: ordered migrations, the connection settings, and `migrate`.

Timestamps are INTEGER microseconds since the Unix epoch (UTC): exact, and ordered for the
expiry indexes. JSON columns hold canonical JSON text.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from taskpass.server.errors import ConfigError

BUSY_TIMEOUT_MS = 5000


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
                requester    TEXT NOT NULL,
                task_id      TEXT NOT NULL,
                digest       TEXT NOT NULL,
                descriptor   TEXT NOT NULL,
                created_at   INTEGER NOT NULL,
                completed_at INTEGER,
                PRIMARY KEY (requester, task_id)
            ) WITHOUT ROWID""",
            """CREATE TABLE credentials (
                jti             TEXT PRIMARY KEY,
                requester       TEXT NOT NULL,
                task_id         TEXT NOT NULL,
                audience        TEXT NOT NULL,
                scopes          TEXT NOT NULL,
                issued_at       INTEGER NOT NULL,
                expires_at      INTEGER NOT NULL,
                policy_version  TEXT NOT NULL,
                kid             TEXT NOT NULL,
                cert_thumbprint TEXT,
                approval_id     TEXT,
                parent_jti      TEXT,
                revoked_at      INTEGER,
                revoke_reason   TEXT NOT NULL DEFAULT '',
                FOREIGN KEY (requester, task_id) REFERENCES tasks (requester, task_id)
            )""",
            "CREATE INDEX credentials_by_task ON credentials (requester, task_id)",
            "CREATE INDEX credentials_by_expiry ON credentials (expires_at)",
            """CREATE TABLE audit (
                seq       INTEGER PRIMARY KEY,
                kind      TEXT NOT NULL,
                actor     TEXT NOT NULL,
                at        INTEGER NOT NULL,
                payload   TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash      TEXT NOT NULL
            )""",
            # No audit record is ever updated or deleted (DESIGN.md, security invariants). The
            # hash chain, not these triggers, is what catches someone with write access to the
            # file: the tampering tests drop the triggers on purpose, as such an attacker would.
            """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
               BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
            """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
               BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
            """CREATE TABLE revocation_events (
                seq        INTEGER PRIMARY KEY,
                kind       TEXT NOT NULL
                           CHECK (kind IN ('credential', 'task', 'identity', 'key', 'policy')),
                subject    TEXT NOT NULL,
                task_id    TEXT,
                jti        TEXT,
                expires_at INTEGER NOT NULL,
                at         INTEGER NOT NULL,
                set_token  TEXT NOT NULL,
                reason     TEXT NOT NULL
            )""",
            "CREATE INDEX revocation_events_in_force ON revocation_events (expires_at)",
            # Events may be pruned once expired, but never rewritten.
            """CREATE TRIGGER revocation_events_no_update BEFORE UPDATE ON revocation_events
               BEGIN SELECT RAISE(ABORT, 'revocation events are immutable'); END""",
        ),
    ),
    Migration(
        2,
        "approval requests and their decisions",
        (
            """CREATE TABLE approvals (
                approval_id      TEXT PRIMARY KEY,
                requester        TEXT NOT NULL,
                requester_method TEXT NOT NULL,
                cert_thumbprint  TEXT,
                task_id          TEXT NOT NULL,
                digest           TEXT NOT NULL,
                descriptor       TEXT NOT NULL,
                audience         TEXT NOT NULL,
                action           TEXT NOT NULL,
                sensitivity      TEXT NOT NULL,
                scopes           TEXT NOT NULL,
                ttl_seconds      INTEGER NOT NULL,
                rules            TEXT NOT NULL,
                approver_groups  TEXT NOT NULL,
                policy_version   TEXT NOT NULL,
                decision_id      TEXT NOT NULL,
                state            TEXT NOT NULL
                                 CHECK (state IN ('pending', 'approved', 'denied', 'consumed')),
                created_at       INTEGER NOT NULL,
                expires_at       INTEGER NOT NULL,
                decided_by       TEXT,
                decided_at       INTEGER,
                reason           TEXT NOT NULL DEFAULT '',
                consumed_at      INTEGER
            )""",
            "CREATE INDEX approvals_by_task ON approvals (requester, digest, created_at)",
            "CREATE INDEX approvals_pending ON approvals (state, expires_at)",
            # An approval is decided once and used once: a decided or consumed row never goes
            # back, and nothing else about the request ever changes.
            """CREATE TRIGGER approvals_forward_only BEFORE UPDATE ON approvals
               WHEN NOT (
                   (OLD.state = 'pending' AND NEW.state IN ('approved', 'denied'))
                   OR (OLD.state = 'approved' AND NEW.state = 'consumed'))
               BEGIN SELECT RAISE(ABORT, 'approval state moves forward only'); END""",
            """CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals
               BEGIN SELECT RAISE(ABORT, 'approval records are kept for the audit trail'); END""",
        ),
    ),
    Migration(
        3,
        "identity bans",
        (
            # A ban is state, not history: unban deletes the row; the audit log keeps both.
            """CREATE TABLE bans (
                pattern   TEXT PRIMARY KEY,
                banned_at INTEGER NOT NULL,
                banned_by TEXT NOT NULL,
                reason    TEXT NOT NULL
            ) WITHOUT ROWID""",
            # identity revocation scans live credentials by requester (exact or ID prefix)
            "CREATE INDEX credentials_live_by_requester ON credentials (requester, expires_at)"
            " WHERE revoked_at IS NULL",
        ),
    ),
    Migration(
        4,
        "published signing keys (the shared JWKS of replicas)",
        (
            # Public keys only: private keys stay in each replica's key_dir.
            """CREATE TABLE published_keys (
                kid           TEXT PRIMARY KEY,
                jwk           TEXT NOT NULL,
                published_by  TEXT NOT NULL,
                published_at  INTEGER NOT NULL,
                publish_until INTEGER NOT NULL
            ) WITHOUT ROWID""",
            "CREATE INDEX published_keys_until ON published_keys (publish_until)",
        ),
    ),
    Migration(
        5,
        "delegation: children by parent credential",
        # cascade revocation walks the delegation tree from parent to children (sqlite_cascade)
        (
            "CREATE INDEX credentials_by_parent ON credentials (parent_jti)"
            " WHERE parent_jti IS NOT NULL",
        ),
    ),
    Migration(
        6,
        "approvals of a delegated exchange bound to the parent credential",
        # NULL: asked without a parent, as every request stored before this migration was
        # (sqlite_approvals matches and consumes a grant only under the same parent)
        ("ALTER TABLE approvals ADD COLUMN parent_jti TEXT",),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection with the settings every taskpass connection needs.

    Autocommit mode (isolation_level=None): transactions are opened explicitly. WAL lets the
    reader run beside the writer; synchronous=FULL makes every commit durable before it returns.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        configure(conn, read_only=read_only)
    except sqlite3.Error as exc:
        raise ConfigError(
            f"cannot open the SQLite database at {path}: check that the directory exists "
            "and is writable by the taskpass user"
        ) from exc
    return conn


def configure(conn: sqlite3.Connection, *, read_only: bool) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if read_only:
        conn.execute("PRAGMA query_only = ON")
        return
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise ConfigError(
            f"SQLite refused WAL mode (got {mode!r}): put the database on a local filesystem"
        )
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every pending migration in one transaction; return the schema version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                   version    INTEGER PRIMARY KEY,
                   applied_at TEXT NOT NULL
               )"""
        )
        current = int(
            conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        )
        if current > LATEST_VERSION:
            raise ConfigError(
                f"the database schema is version {current}, newer than this taskpass knows "
                f"({LATEST_VERSION}): upgrade taskpass"
            )
        for migration in MIGRATIONS[current:]:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) "
                "VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                (migration.version,),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return LATEST_VERSION
