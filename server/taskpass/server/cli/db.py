"""`taskpass db migrate`: bring the store's schema up to date, SQLite or PostgreSQL.
`taskpass db copy --from sqlite:///... --to postgresql://...`: move to replicas (see store/copy).

The server migrates on startup too; this command lets an operator do it first (and see the
version), e.g. before rolling out replicas of a new release. Replicas that start together are
safe either way: PostgreSQL migrations take an advisory lock.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from taskpass.server.config import dev_config, load_config
from taskpass.server.errors import ConfigError
from taskpass.server.store.copy import copy_sqlite_to_postgres
from taskpass.server.store.factory import open_store
from taskpass.server.store.postgres import PostgresStore
from taskpass.server.store.sqlite import SqliteStore


async def _run_migrations(dsn: str) -> tuple[str, int]:
    store = open_store(dsn)
    if isinstance(store, SqliteStore):
        # As `serve` does for the data directory: migrating is what creates the database.
        store.path.parent.mkdir(parents=True, exist_ok=True)
        backend = f"SQLite {store.path}"
    else:
        backend = "PostgreSQL"  # never the DSN: it may hold a password
    return backend, await store.migrate()


def _migrate(args: argparse.Namespace) -> int:
    config = dev_config(Path.cwd()) if args.dev else load_config(args.config)
    backend, version = asyncio.run(_run_migrations(config.store.dsn))
    print(f"{backend}: schema at version {version}")
    return 0


def _copy(args: argparse.Namespace) -> int:
    source, destination = open_store(args.source), open_store(args.destination)
    if not isinstance(source, SqliteStore) or not isinstance(destination, PostgresStore):
        raise ConfigError(
            "db copy moves a SQLite store into PostgreSQL: --from sqlite:///PATH "
            "--to postgresql://..."
        )
    report = asyncio.run(copy_sqlite_to_postgres(source.path, args.destination))
    copied = ", ".join(f"{count} {table.replace('_', ' ')}" for table, count in report.rows.items())
    print(f"copied into PostgreSQL: {copied}")  # never the DSN: it may hold a password
    audit = report.audit
    print(f"audit log ok: {audit.checked} records chained, head {audit.last_seq} {audit.last_hash}")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("db", help="manage the store's database")
    sub = p.add_subparsers(dest="db_command", required=True, metavar="SUBCOMMAND")
    migrate = sub.add_parser(
        "migrate", help="apply pending schema migrations (the server also does on startup)"
    )
    source = migrate.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="TOML config; its store.dsn is migrated")
    source.add_argument("--dev", action="store_true", help="the embedded dev config's store")
    migrate.set_defaults(func=_migrate)
    copy = sub.add_parser(
        "copy",
        help="copy a SQLite store into an empty PostgreSQL one (stop the server first)",
        description="Copies tasks, credentials, revocation events, the audit log (seq and "
        "hashes kept, the chain verified), approvals, bans and published keys, in one "
        "transaction: all of it or, on any problem, nothing.",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="sqlite:///PATH")
    copy.add_argument("--to", dest="destination", required=True, metavar="postgresql://...")
    copy.set_defaults(func=_copy)
