"""The published-keys aggregate on PostgreSQL: every replica's public signing key, the shared
JWKS (see base.KeyStore); the twin of sqlite_keys.

A publication is announced (NOTIFY "keys"), so the other replicas merge the key into their JWKS
at once rather than at their next poll.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from taskpass.server.store.audit_chain import canonical_json
from taskpass.server.store.base import different_key, keys_oldest_first
from taskpass.server.store.postgres_codec import codec
from taskpass.server.store.postgres_notify import KEYS_TOPIC
from taskpass.server.store.postgres_reader import PgReader
from taskpass.server.store.postgres_writer import PgBatchWriter, PgWriteTx
from taskpass.server.store.records import AuditEntry, PublishedKey

# Column order follows row_codec.PUBLISHED_KEYS.
_SELECT = """
    SELECT kid, jwk, published_by, published_at, publish_until
    FROM published_keys WHERE kid = $1 FOR UPDATE"""
_INSERT = """
    INSERT INTO published_keys (kid, jwk, published_by, published_at, publish_until)
    VALUES ($1, $2, $3, $4, $5)"""
_EXTEND = "UPDATE published_keys SET publish_until = $1, published_by = $2 WHERE kid = $3"
# Whether a row is published at a time (the publisher chose publish_until: see PublishedKey):
# list_published reads exactly these rows and remove_ended deletes exactly the others.
_PUBLISHED = "publish_until > $1"
_LIVE = f"""
    SELECT kid, jwk, published_by, published_at, publish_until
    FROM published_keys WHERE {_PUBLISHED} ORDER BY published_at, kid"""  # noqa: S608 - constants
_REMOVE_ENDED = f"""
    DELETE FROM published_keys WHERE NOT ({_PUBLISHED})
    RETURNING kid, jwk, published_by, published_at, publish_until"""  # noqa: S608 - constants


class PostgresKeys:
    def __init__(self, writer: PgBatchWriter, reader: PgReader) -> None:
        self._writer = writer
        self._reader = reader

    async def publish(self, key: PublishedKey, *, audit: AuditEntry) -> PublishedKey:
        row = codec.key_to_row(key)

        async def run(tx: PgWriteTx) -> PublishedKey:
            found = await tx.conn.fetchrow(_SELECT, key.kid)
            if found is None:
                await tx.conn.execute(_INSERT, *row)
                await tx.append_audit(audit)
                tx.announce(KEYS_TOPIC)
                return key
            stored = codec.key_from_row(found)
            if canonical_json(stored.jwk) != row[1]:
                raise different_key(key.kid)
            if key.publish_until <= stored.publish_until:
                return stored
            await tx.conn.execute(_EXTEND, key.publish_until, key.published_by, key.kid)
            tx.announce(KEYS_TOPIC)
            return dataclasses.replace(
                stored, published_by=key.published_by, publish_until=key.publish_until
            )

        return await self._writer.submit(run)

    async def list_published(self, now: dt.datetime) -> list[PublishedKey]:
        return [codec.key_from_row(row) for row in await self._reader.fetch(_LIVE, now)]

    async def remove_ended(
        self, now: dt.datetime, *, audit: Callable[[PublishedKey], AuditEntry]
    ) -> list[PublishedKey]:
        # Not announced: what list_published returns does not change, so no replica need re-read.
        async def run(tx: PgWriteTx) -> list[PublishedKey]:
            rows = await tx.conn.fetch(_REMOVE_ENDED, now)
            removed = keys_oldest_first(codec.key_from_row(row) for row in rows)
            for key in removed:
                await tx.append_audit(audit(key))
            return removed

        return await self._writer.submit(run)
