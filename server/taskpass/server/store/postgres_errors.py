"""asyncpg and network errors -> taskpass errors, in one place.

Messages never carry the DSN (it may hold a password), SQL text or the server's message (which
can quote row values); the driver's exception is chained as the cause, for the log only.
"""

from __future__ import annotations

import asyncio

import asyncpg

from taskpass.server.errors import ConfigError, Conflict, InvalidRequest, TaskpassError, Unavailable
from taskpass.server.store.row_guard import timestamp_out_of_range

# What is wrong with the deployment rather than with one request: at startup these are
# ConfigErrors; while serving, Unavailable (a caller can do nothing about them but wait).
_DEPLOYMENT_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (
        asyncpg.InvalidAuthorizationSpecificationError,
        "PostgreSQL refused the user or password in store.dsn",
    ),
    (asyncpg.InvalidCatalogNameError, "the database named in store.dsn does not exist"),
    (
        asyncpg.InsufficientPrivilegeError,
        "PostgreSQL refused an operation: grant the taskpass role rights on its schema",
    ),
    (
        asyncpg.UndefinedTableError,
        "a taskpass table is missing: run `taskpass db migrate`, and check ?search_path=",
    ),
    (asyncpg.InvalidSchemaNameError, "the schema named by ?search_path= in store.dsn is missing"),
    (asyncpg.ClientConfigurationError, "store.dsn is not a usable PostgreSQL DSN"),
)

DISCONNECTED = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # What asyncpg raises on a pooled connection the server has just terminated (it got the
    # FATAL message but not yet the close): the connection is unusable, not the statement.
    asyncpg.InternalClientError,
)
"""Errors of the connection itself (refused, dropped, timed out), not of a statement."""

DRIVER_ERRORS = (asyncpg.PostgresError, *DISCONNECTED)
"""Everything the driver or the network can raise."""


def _chained(error: TaskpassError, cause: BaseException) -> TaskpassError:
    error.__cause__ = cause
    return error


def startup_error(exc: BaseException, *, doing: str) -> BaseException:
    """An error while connecting or migrating: misconfiguration is a ConfigError."""
    if isinstance(exc, TaskpassError):
        return exc
    for kind, message in _DEPLOYMENT_ERRORS:
        if isinstance(exc, kind):
            return _chained(ConfigError(f"cannot {doing}: {message}"), exc)
    if isinstance(exc, ValueError):
        return _chained(ConfigError(f"cannot {doing}: store.dsn is not a valid DSN"), exc)
    if isinstance(exc, DRIVER_ERRORS):
        return _chained(
            Unavailable(f"cannot {doing}: PostgreSQL is unreachable or failing; retry later"),
            exc,
        )
    return exc


def store_error(exc: BaseException, *, write: bool) -> BaseException:
    """An error while serving. Our errors pass through; a bug (any other exception) stays one."""
    if isinstance(exc, TaskpassError):
        return exc
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return _chained(Conflict("the change conflicts with what is already stored"), exc)
    if isinstance(exc, asyncpg.DataError):
        return _chained(
            InvalidRequest("value", "cannot be stored (a NUL character or a value out of range)"),
            exc,
        )
    if isinstance(exc, OverflowError):
        # The driver decoding a row a write operation read (RETURNING, SELECT ... FOR UPDATE):
        # the operations compute no dates of their own (reads: see PgReader, which names the
        # table).
        return _chained(timestamp_out_of_range(None), exc)
    for kind, message in _DEPLOYMENT_ERRORS:
        if isinstance(exc, kind):
            return _chained(Unavailable(f"store unavailable: {message}"), exc)
    if isinstance(exc, DRIVER_ERRORS):
        action = "write" if write else "read"
        return _chained(
            Unavailable(f"store unavailable: the database {action} failed; retry later"), exc
        )
    return exc
