"""The PostgreSQL server the tests use: where it is, and a fresh schema per test.

    TASKPASS_TEST_PG_DSN   the server (default: postgresql://postgres@127.0.0.1:5432/test)
    TASKPASS_REQUIRE_PG=1  a missing server FAILS the tests instead of skipping them (CI sets it)

Each test gets its own schema (`taskpass_test_<random>`), named in the DSN as
`?search_path=...`, and dropped afterwards: tests never see each other's rows, even when several
test runs share the server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_CONNECT_TIMEOUT_S = 5.0

NOT_RUN = "PostgreSQL tests NOT RUN"

_unreachable: str | None = None
"""Why the server could not be reached, remembered so a missing server costs one timeout."""


def base_dsn() -> str:
    return os.environ.get("TASKPASS_TEST_PG_DSN") or DEFAULT_DSN


def required() -> bool:
    return bool(os.environ.get("TASKPASS_REQUIRE_PG"))


def with_params(dsn: str, **params: str) -> str:
    """`dsn` with query parameters added or replaced (asyncpg makes unknown ones settings)."""
    parts = urllib.parse.urlsplit(dsn)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(params)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def admin_connection() -> Any:
    """A connection to the test server, or a skip (a failure when TASKPASS_REQUIRE_PG is set)."""
    global _unreachable
    if _unreachable is None:
        try:
            return await asyncpg.connect(base_dsn(), timeout=_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _unreachable = f"{type(exc).__name__}: {exc}"
    message = (
        f"{NOT_RUN}: no server at TASKPASS_TEST_PG_DSN ({_unreachable}). "
        "Start PostgreSQL or point TASKPASS_TEST_PG_DSN at one"
    )
    if required():
        pytest.fail(message + " (TASKPASS_REQUIRE_PG is set, so this is a failure)")
    pytest.skip(message)


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A DSN whose search_path is a new, empty schema, dropped when the block ends."""
    admin = await admin_connection()
    schema = f"taskpass_test_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield with_params(base_dsn(), search_path=schema)
        finally:
            # A store a failed test left open must not hang the run: fail the drop instead.
            await admin.execute("SET lock_timeout = '10s'")
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def raw_connection(dsn: str) -> AsyncIterator[Any]:
    """A plain asyncpg connection to `dsn`, as an operator (or an attacker) could open."""
    conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
    try:
        yield conn
    finally:
        await conn.close()


def report_skips(terminalreporter: Any) -> None:
    """From a conftest's pytest_terminal_summary: a banner when PostgreSQL tests were skipped,
    so a green run without them does not pass for a full one."""
    skipped = terminalreporter.stats.get("skipped", [])
    count = sum(NOT_RUN in str(getattr(report, "longrepr", "")) for report in skipped)
    if count:
        terminalreporter.write_sep(
            "!", f"{count} {NOT_RUN}: no server at TASKPASS_TEST_PG_DSN", red=True
        )
