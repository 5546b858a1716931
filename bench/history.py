"""A large history, written straight into the SQLite file before the server starts.

Going through the API would take hours for a million credentials; this writes the same rows the
server writes (a task, a credential and a hash-chained audit record per issuance) in a few
large transactions with journaling and syncing off, then switches the file to WAL as the server
expects. The audit chain it leaves verifies, so the server's writer continues it as usual.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from taskpass.server.issuer.tokens import _JTI_FIRST, JTI_BYTES
from taskpass.server.store import sqlite_codec as codec
from taskpass.server.store import sqlite_schema
from taskpass.server.store.audit_chain import GENESIS_HASH, canonical_json, chain_hash
from taskpass.server.store.sqlite import _INSERT_CREDENTIAL, _INSERT_TASK
from taskpass.server.store.sqlite_writer import _INSERT_AUDIT

CHUNK = 50_000
REQUESTERS = 1000  # spread the history over many callers, as a real deployment would


def _jtis(count: int) -> Iterator[str]:
    """Shaped like issuer.tokens.new_jti's (a letter or digit, then 16 random bytes in
    base64url), from one urandom call: the same key length in the same B-tree."""
    stride = JTI_BYTES + 1
    raw = os.urandom(stride * count)
    for i in range(0, len(raw), stride):
        first = _JTI_FIRST[raw[i] % len(_JTI_FIRST)]
        yield first + base64.urlsafe_b64encode(raw[i + 1 : i + stride]).rstrip(b"=").decode()


def _rows(
    start: int, count: int, *, now: dt.datetime, audit: tuple[int, str]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]], tuple[int, str]]:
    tasks, credentials, audits = [], [], []
    seq, prev = audit
    for i, jti in zip(range(start, start + count), _jtis(count), strict=True):
        requester = f"spiffe://example.org/agents/history-{i % REQUESTERS}"
        task_id = f"history-{i}"
        # Spread over the last 30 days; most of the history has long expired.
        issued = now - dt.timedelta(seconds=(start + count - i) * 2)
        expires = issued + dt.timedelta(minutes=5)
        descriptor = {
            "task_id": task_id,
            "audience": "payments-api",
            "action": "read",
            "tool": "history",
            "sensitivity": "internal",
            "environment": "staging",
            "requested_ttl_seconds": 300,
            "deadline": None,
            "reason": "history",
            "attributes": {},
        }
        descriptor_json = canonical_json(descriptor)
        at = codec.to_db_time(issued)
        tasks.append(
            (
                requester,
                task_id,
                hashlib.sha256(descriptor_json.encode()).hexdigest(),
                descriptor_json,
                at,
                None,
            )
        )
        credentials.append(
            (
                jti,
                requester,
                task_id,
                "payments-api",
                '["payments:read"]',
                at,
                codec.to_db_time(expires),
                "sha256:history",
                "history-kid",
                None,
                None,
                None,
                None,
                "",
            )
        )
        payload = {
            "decision_id": f"dec_history{i}",
            "workload": {"id": requester, "method": "x509-svid", "cert_sha256": None},
            "task": descriptor,
            "outcome": "allow",
            "policy_version": "sha256:history",
            "matched_rules": ["grant.payments.read.agents"],
            "reason": "history",
            "jti": jti,
            "expires_at": expires.isoformat(),
        }
        seq += 1
        digest = chain_hash(
            prev_hash=prev, seq=seq, kind="issuance", actor=requester, at=issued, payload=payload
        )
        audits.append((seq, "issuance", requester, at, canonical_json(payload), prev, digest))
        prev = digest
    return tasks, credentials, audits, (seq, prev)


def fill(database: Path, count: int) -> float:
    """Create the database at `database` holding `count` issuances; returns the seconds taken."""
    began = time.perf_counter()
    database.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1000000")  # 1 GB: keeps the B-tree inserts in memory
        conn.execute("PRAGMA foreign_keys = ON")
        sqlite_schema.migrate(conn)
        now = dt.datetime.now(dt.UTC)
        audit = (0, GENESIS_HASH)
        for start in range(0, count, CHUNK):
            tasks, credentials, audits, audit = _rows(
                start, min(CHUNK, count - start), now=now, audit=audit
            )
            conn.execute("BEGIN")
            conn.executemany(_INSERT_TASK, tasks)
            conn.executemany(_INSERT_CREDENTIAL, credentials)
            conn.executemany(_INSERT_AUDIT, audits)
            conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    return time.perf_counter() - began
