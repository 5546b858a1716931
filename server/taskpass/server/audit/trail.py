"""Reading the audit log for auditors: export by cursor or time, and verify the whole chain."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

from taskpass.server.store.audit_chain import (
    GENESIS_HASH,
    Head,
    VerifyResult,
    check_head,
    verify_chain,
)
from taskpass.server.store.base import MAX_PAGE, AuditLog
from taskpass.server.store.records import AuditRecord


class AuditTrail:
    def __init__(self, log: AuditLog, *, page_size: int = MAX_PAGE) -> None:
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE}")
        self._log = log
        self._page = page_size

    async def export(
        self, *, after_seq: int = 0, since: dt.datetime | None = None
    ) -> AsyncIterator[AuditRecord]:
        """Records after `after_seq`, at or after `since` if given, oldest first, to the end."""
        cursor = after_seq
        while True:
            page = await self._log.read(after_seq=cursor, limit=self._page)
            for record in page:
                if since is None or record.at >= since:
                    yield record
            if len(page) < self._page:
                return
            cursor = page[-1].seq

    async def verify(self, expect: Head | None = None) -> VerifyResult:
        """Check the chain from the first record to the last; stop at the first bad one. With
        `expect`, a head seen earlier, the log must still hold that record with that hash."""
        last_seq, last_hash, checked = 0, GENESIS_HASH, 0
        hash_at_expected: str | None = None
        while True:
            page = await self._log.read(after_seq=last_seq, limit=self._page)
            result = verify_chain(page, after_seq=last_seq, after_hash=last_hash)
            checked += result.checked
            if expect is not None and last_seq < expect.seq <= result.last_seq:
                hash_at_expected = page[expect.seq - last_seq - 1].hash
            if not result.ok or len(page) < self._page:
                result = dataclasses.replace(result, checked=checked)
                if result.ok and expect is not None:
                    return check_head(result, expect, hash_at_expected)
                return result
            last_seq, last_hash = result.last_seq, result.last_hash
