"""`taskpass db migrate`: bring the store's schema up to date, SQLite or PostgreSQL.

The server migrates on startup too; this command lets an operator do it first (and see the
version), e.g. before rolling out replicas of a new release. Replicas that start together are
safe either way: PostgreSQL migrations take an advisory lock.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from taskpass.server.config import dev_config, load_config
from taskpass.server.store.factory import open_store
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
