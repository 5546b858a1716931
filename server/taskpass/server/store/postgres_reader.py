"""Reads on the PostgreSQL pool, errors translated; one retry if a pooled connection is dead."""

from __future__ import annotations

from typing import Any

from taskpass.server.errors import Unavailable
from taskpass.server.store.postgres_errors import DISCONNECTED, store_error
from taskpass.server.store.row_guard import timestamp_out_of_range


class PgReader:
    def __init__(self) -> None:
        self.pool: Any = None
        """The asyncpg pool while the store is open, None when closed."""

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        for attempt in (1, 2):
            pool = self.pool
            if pool is None:
                raise Unavailable("store is closed")
            try:
                rows: list[Any] = await pool.fetch(sql, *args)
                return rows
            except DISCONNECTED as exc:
                # A pooled connection can be dead (server restarted), and then so are its
                # siblings: expire them all; a read is safe to retry.
                if attempt == 2:
                    raise store_error(exc, write=False) from exc
                await pool.expire_connections()
            except OverflowError as exc:  # decoding a timestamp PostgreSQL holds, Python cannot
                raise timestamp_out_of_range(sql) from exc
            except Exception as exc:
                error = store_error(exc, write=False)
                if error is exc:
                    raise
                raise error from exc
        raise AssertionError("unreachable")

    async def fetch_one(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None
