"""The bulk history path writes what the server writes: the server reads it and chains on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bench import history
from taskpass.server.issuer.tokens import JTI_LENGTH
from taskpass.server.store.audit_chain import verify_chain
from taskpass.server.store.base import MAX_PAGE
from taskpass.server.store.records import AuditEntry, CredentialRecord, TaskRecord
from taskpass.server.store.sqlite import SqliteStore

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
AGENT = "spiffe://example.org/agents/a"


def _issuance(n: int) -> tuple[TaskRecord, CredentialRecord, AuditEntry]:
    task = TaskRecord(requester=AGENT, task_id=f"new-{n}", digest="d", descriptor={}, created_at=T0)
    credential = CredentialRecord(
        jti=f"new-jti-{n}",
        requester=AGENT,
        task_id=f"new-{n}",
        audience="payments-api",
        scopes=("payments:read",),
        issued_at=T0,
        expires_at=T0 + dt.timedelta(minutes=5),
        policy_version="sha256:p",
        kid="k",
    )
    return task, credential, AuditEntry(kind="issuance", actor=AGENT, at=T0, payload={"n": n})


async def test_filled_history_is_readable_and_the_writer_continues_its_audit_chain(
    tmp_path: Path,
) -> None:
    database = tmp_path / "taskpass.db"
    history.fill(database, 120)  # more than one jti batch, less than a chunk

    async with SqliteStore(database) as store:
        task, credential, audit = _issuance(1)
        await store.credentials.record_issuance(task=task, credential=credential, audit=audit)
        records = await store.audit.read(limit=MAX_PAGE)
        stored = await store.credentials.get_credential(records[0].payload["jti"])

    assert [r.seq for r in records] == list(range(1, 122))
    assert verify_chain(records).ok
    assert stored is not None
    assert stored.task_id == records[0].payload["task"]["task_id"]


def test_history_jtis_are_distinct_and_shaped_like_issued_ones() -> None:
    jtis = list(history._jtis(1000))

    assert len(set(jtis)) == 1000
    assert {len(j) for j in jtis} == {JTI_LENGTH}
    assert not [j for j in jtis if j[0] in "-_"]
