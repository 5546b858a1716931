"""Pick the store backend from a DSN.

    sqlite:///relative/file.db      SQLite, path relative to the working directory
    sqlite:////absolute/file.db     SQLite, absolute path (as SQLAlchemy spells it)
    /path/to/file.db, file.db       a bare path: SQLite
    postgresql://... , postgres://  PostgreSQL (asyncpg; ?search_path=SCHEMA picks the schema)

Error messages name the scheme only: a PostgreSQL DSN can carry a password.
"""

from __future__ import annotations

import re
from pathlib import Path

from taskpass.server.errors import ConfigError
from taskpass.server.store.base import Store
from taskpass.server.store.postgres import PostgresStore
from taskpass.server.store.postgres_notify import EVENTS_CHANNEL
from taskpass.server.store.sqlite import SqliteStore

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


def open_store(dsn: str, *, notify_channel: str = EVENTS_CHANNEL) -> Store:
    """The store for `dsn`, not yet connected: `await store.open()` (or `async with store`)
    connects and migrates; `await store.migrate()` alone serves `taskpass db migrate`.
    `notify_channel` is PostgreSQL's NOTIFY channel (SQLite, one process, has none)."""
    dsn = dsn.strip()
    if not dsn:
        raise ConfigError("the store DSN is empty: give sqlite:///PATH or postgresql://...")
    match = _SCHEME.match(dsn)
    if match is None:
        return SqliteStore(_sqlite_path(dsn))
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        if not dsn.lower().startswith(_SQLITE_PREFIX):
            raise ConfigError("a SQLite DSN is sqlite:///PATH (three slashes, then the path)")
        return SqliteStore(_sqlite_path(dsn[len(_SQLITE_PREFIX) :]))
    if scheme in _POSTGRES_SCHEMES:
        try:
            return PostgresStore(dsn, events_channel=notify_channel)
        except ValueError as exc:  # the channel name (the pool sizes are the defaults here)
            raise ConfigError(f"store.notify_channel: {exc}") from exc
    raise ConfigError(
        f"unsupported store DSN scheme {scheme!r}: use sqlite:///PATH or postgresql://..."
    )


def _sqlite_path(raw: str) -> Path:
    if not raw or raw == ":memory:" or raw.startswith("file:"):
        raise ConfigError(
            "the SQLite store needs a file path (not in-memory, not a URI): "
            "its reader and writer share the file"
        )
    return Path(raw)
