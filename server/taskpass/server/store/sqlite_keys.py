"""The published-keys aggregate on SQLite: the shared JWKS (see base.KeyStore).

With one SQLite process there is only one replica, but the table is the same as PostgreSQL's,
so `taskpass db copy` carries the published keys over and a single server behaves as one
replica of many.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from taskpass.server.store.audit_chain import canonical_json
from taskpass.server.store.base import different_key, keys_oldest_first
from taskpass.server.store.records import AuditEntry, PublishedKey
from taskpass.server.store.row_codec import Row
from taskpass.server.store.sqlite_codec import codec, to_db_time
from taskpass.server.store.sqlite_writer import BatchWriter, WriteTx

# Column order follows row_codec.PUBLISHED_KEYS.
_SELECT = """
    SELECT kid, jwk, published_by, published_at, publish_until
    FROM published_keys WHERE kid = ?"""
_INSERT = """
    INSERT INTO published_keys (kid, jwk, published_by, published_at, publish_until)
    VALUES (?, ?, ?, ?, ?)"""
_EXTEND = "UPDATE published_keys SET publish_until = ?, published_by = ? WHERE kid = ?"
# Whether a row is published at a time (the publisher chose publish_until: see PublishedKey):
# list_published reads exactly these rows and remove_ended deletes exactly the others.
_PUBLISHED = "publish_until > ?"
_LIVE = f"""
    SELECT kid, jwk, published_by, published_at, publish_until
    FROM published_keys WHERE {_PUBLISHED} ORDER BY published_at, kid"""  # noqa: S608 - constants
_REMOVE_ENDED = f"""
    DELETE FROM published_keys WHERE NOT ({_PUBLISHED})
    RETURNING kid, jwk, published_by, published_at, publish_until"""  # noqa: S608 - constants


class _Reads(Protocol):
    async def fetch_all(self, sql: str, params: tuple[Any, ...]) -> list[Row]: ...


class SqliteKeys:
    def __init__(self, writer: BatchWriter, reader: _Reads) -> None:
        self._writer = writer
        self._reader = reader

    async def publish(self, key: PublishedKey, *, audit: AuditEntry) -> PublishedKey:
        row = codec.key_to_row(key)

        def run(tx: WriteTx) -> PublishedKey:
            found = tx.conn.execute(_SELECT, (key.kid,)).fetchall()
            if not found:
                tx.conn.execute(_INSERT, row)
                tx.append_audit(audit)
                return key
            stored = codec.key_from_row(found[0])
            if canonical_json(stored.jwk) != row[1]:
                raise different_key(key.kid)
            if key.publish_until <= stored.publish_until:
                return stored
            tx.conn.execute(_EXTEND, (row[4], key.published_by, key.kid))
            return dataclasses.replace(
                stored, published_by=key.published_by, publish_until=key.publish_until
            )

        return await self._writer.submit(run)

    async def list_published(self, now: dt.datetime) -> list[PublishedKey]:
        rows = await self._reader.fetch_all(_LIVE, (to_db_time(now),))
        return [codec.key_from_row(row) for row in rows]

    async def remove_ended(
        self, now: dt.datetime, *, audit: Callable[[PublishedKey], AuditEntry]
    ) -> list[PublishedKey]:
        at = (to_db_time(now),)

        def run(tx: WriteTx) -> list[PublishedKey]:
            rows = tx.conn.execute(_REMOVE_ENDED, at).fetchall()
            removed = keys_oldest_first(codec.key_from_row(row) for row in rows)
            for key in removed:
                tx.append_audit(audit(key))
            return removed

        return await self._writer.submit(run)
