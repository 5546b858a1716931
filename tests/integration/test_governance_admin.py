"""Admin RPCs over real mTLS: only admins load policy, only auditors and admins read the audit
log, every refusal is audited; only signed policy loads; tampering with the audit log is found."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from taskpass.client import Denied, InvalidRequest, PermissionDenied, Task
from taskpass.client.admin import AdminClient, AuditRecord
from taskpass.server.policy import signing
from taskpass.server.store.audit_chain import chain_hash
from taskpass.server.store.sqlite import SqliteStore
from tests.integration.governance import ALICE, AUDITOR, POLICY, admin, audit_log, start_governance
from tests.integration.harness import ADMIN, BILLING_BOT, SIDECAR, Harness
from tests.support.pki import TestPki

READ = Task(task_id="t-read", audience="payments-api", action="read")
NEW_POLICY = POLICY.read_bytes().replace(b'version: "governance-1"', b'version: "governance-2"')
# governance-3 no longer lets agents read payments
NO_READS = NEW_POLICY.replace(b'version: "governance-2"', b'version: "governance-3"').replace(
    b"actions: [read]", b"actions: [list]"
)


@pytest.fixture
async def gov(tmp_path: Path, pki: TestPki) -> AsyncIterator[Harness]:
    harness = await start_governance(tmp_path, pki)
    try:
        yield harness
    finally:
        await harness.server.stop(grace=0.5)


def sign(harness: Harness, document: bytes) -> bytes:
    return signing.sign(document, signing.load_private_key(harness.policy_key))


ADMIN_CALLS: dict[str, Callable[[AdminClient], Awaitable[object]]] = {
    "LoadPolicy": lambda a: a.load_policy(b"rules: []", None),
    "GetPolicy": lambda a: a.get_policy(),
    "ExportAudit": lambda a: anext(a.export_audit()),
    "VerifyAudit": lambda a: a.verify_audit(),
}


@pytest.mark.parametrize(
    ("caller", "method"),
    [
        pytest.param(BILLING_BOT, "LoadPolicy", id="agent-loads-policy"),
        pytest.param(ALICE, "LoadPolicy", id="approver-loads-policy"),
        pytest.param(AUDITOR, "LoadPolicy", id="auditor-loads-policy"),
        pytest.param(AUDITOR, "GetPolicy", id="auditor-reads-policy"),
        pytest.param(BILLING_BOT, "ExportAudit", id="agent-exports-audit"),
        pytest.param(SIDECAR, "VerifyAudit", id="sidecar-verifies-audit"),
        pytest.param(ALICE, "VerifyAudit", id="approver-verifies-audit"),
    ],
)
async def test_admin_rpcs_refuse_everyone_outside_the_group_and_audit_it(
    gov: Harness, caller: str, method: str
) -> None:
    async with gov.agent(caller) as client:
        with pytest.raises(PermissionDenied, match="needs membership"):
            await ADMIN_CALLS[method](AdminClient.over(client))

    denied = [r for r in await audit_log(gov) if r.kind == "access_denied"]
    assert [(r.actor, r.payload["method"].rsplit("/", 1)[-1]) for r in denied] == [(caller, method)]
    assert denied[0].payload["workload"]["cert_sha256"]


async def test_an_auditor_exports_and_verifies_the_audit_log(gov: Harness) -> None:
    async with gov.agent(AUDITOR) as client:
        auditor = AdminClient.over(client)
        records = [r async for r in auditor.export_audit()]
        result = await auditor.verify_audit()

    assert records[0].kind == "policy_loaded"
    assert result.ok
    assert (result.checked, result.last_seq) == (len(records), records[-1].seq)


async def test_an_auditor_checks_the_log_against_a_head_kept_from_before(gov: Harness) -> None:
    async with gov.agent(AUDITOR) as client:
        auditor = AdminClient.over(client)
        earlier = await auditor.verify_audit()
        async with gov.agent() as agent:
            await agent.exchange(READ)  # the log grows past the kept head

        still = await auditor.verify_audit((earlier.last_seq, earlier.last_hash))
        beyond = await auditor.verify_audit((still.last_seq + 5, "f" * 64))
        with pytest.raises(InvalidRequest, match="64 hex digit hash"):
            await auditor.verify_audit((earlier.last_seq, "not-a-hash"))

    assert still.ok and still.last_seq > earlier.last_seq
    assert (beyond.ok, beyond.problem, beyond.bad_seq) == (False, "cut_off", still.last_seq + 5)


async def test_an_admin_loads_a_signed_policy_and_decisions_follow_it(gov: Harness) -> None:
    async with gov.agent() as agent:
        before = await agent.exchange(READ)
    async with admin(gov) as client:
        info, previous = await AdminClient.over(client).load_policy(NO_READS, sign(gov, NO_READS))
        shown, document = await AdminClient.over(client).get_policy()

    assert previous == before.policy_version
    assert (info.label, info.loaded_by) == ("governance-3", ADMIN)
    assert info.signer.startswith("sha256:")
    assert (shown.version, document) == (info.version, NO_READS)
    async with gov.agent() as agent:
        with pytest.raises(Denied):
            await agent.exchange(Task(task_id="t-read-2", audience="payments-api", action="read"))
    loaded = [r for r in await audit_log(gov) if r.kind == "policy_loaded"][-1]
    assert (loaded.actor, loaded.payload["policy_version"]) == (ADMIN, info.version)
    assert loaded.payload["previous_version"] == before.policy_version


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(None, id="unsigned"),
        pytest.param(b"c2lnbmF0dXJl\n", id="garbage"),
        pytest.param("other-document", id="signature-of-another-document"),
        pytest.param("stranger", id="signed-by-an-unlisted-key"),
    ],
)
async def test_an_unsigned_or_badly_signed_policy_is_refused_and_the_old_one_kept(
    gov: Harness, signature: bytes | str | None
) -> None:
    presented = signature if isinstance(signature, bytes) else None
    if signature == "other-document":
        presented = sign(gov, NEW_POLICY)
    elif signature == "stranger":
        presented = signing.sign(NO_READS, signing.generate_key())
    async with admin(gov) as client:
        before, _ = await AdminClient.over(client).get_policy()
        with pytest.raises(InvalidRequest, match=r"signature|unsigned"):
            await AdminClient.over(client).load_policy(NO_READS, presented)
        after, _ = await AdminClient.over(client).get_policy()

    assert after.version == before.version
    async with gov.agent() as agent:
        await agent.exchange(READ)  # the old policy still grants reads
    refused = [r for r in await audit_log(gov) if r.kind == "policy_refused"]
    assert [(r.actor, r.payload["kept_version"]) for r in refused] == [(ADMIN, before.version)]


async def test_the_server_picks_up_a_new_signed_policy_file_and_refuses_an_unsigned_one(
    gov: Harness,
) -> None:
    async with admin(gov) as client:
        original, _ = await AdminClient.over(client).get_policy()

        gov.policy_file.write_bytes(NO_READS)  # no new signature: refused, old policy stays
        gov.policy_file.with_name("policy.yaml.sig").unlink()
        refused = await until(gov, "policy_refused")
        assert "unsigned policy refused" in refused.payload["reason"]
        assert (await AdminClient.over(client).get_policy())[0].version == original.version

        signing.signature_path(gov.policy_file).write_bytes(sign(gov, NO_READS))
        loaded = await until(gov, "policy_loaded", after=refused.seq)
        info, _ = await AdminClient.over(client).get_policy()

    assert loaded.payload["how"] == "file"
    assert info.label == "governance-3"


async def until(harness: Harness, kind: str, *, after: int = 0) -> AuditRecord:
    """The first audit record of `kind` after seq `after`, waiting for the 0.2 s file watcher."""
    for _ in range(100):
        for record in await audit_log(harness):
            if record.kind == kind and record.seq > after:
                return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} audit record appeared")


# -- tampering: an attacker with write access to the SQLite file drops the triggers first ------


def tamper(store: SqliteStore, *statements: str) -> None:
    conn = sqlite3.connect(store.path)
    try:
        conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


async def some_history(harness: Harness) -> None:
    """A few audit records: policy load, decisions, issuances."""
    async with harness.agent() as agent:
        for n in range(3):
            await agent.exchange(Task(task_id=f"t-{n}", audience="payments-api", action="read"))


def insert_forged(store: SqliteStore, seq: int) -> None:
    """An attacker's record at `seq` (the others shifted up first), chained correctly to the
    record before it, as someone who knows the hashing scheme would do."""
    conn = sqlite3.connect(store.path)
    try:
        (prev_hash,) = conn.execute("SELECT hash FROM audit WHERE seq = ?", (seq - 1,)).fetchone()
        at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        actor = "spiffe://example.org/agents/ghost"
        digest = chain_hash(
            prev_hash=prev_hash, seq=seq, kind="issuance", actor=actor, at=at, payload={}
        )
        conn.execute(
            "INSERT INTO audit (seq, kind, actor, at, payload, prev_hash, hash) "
            "VALUES (?, 'issuance', ?, ?, '{}', ?, ?)",
            (seq, actor, int(at.timestamp() * 1_000_000), prev_hash, digest),
        )
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("attack", "problem", "bad_seq"),
    [
        pytest.param("edit", "hash_mismatch", 3, id="edited"),
        pytest.param("delete", "seq_gap", 4, id="deleted"),
        pytest.param("insert", "broken_link", 4, id="inserted"),
        pytest.param("reorder", "broken_link", 3, id="reordered"),
    ],
)
async def test_audit_verify_names_the_first_tampered_record(
    gov: Harness, attack: str, problem: str, bad_seq: int
) -> None:
    await some_history(gov)
    store = gov.server.store
    assert isinstance(store, SqliteStore)
    if attack == "edit":
        tamper(store, """UPDATE audit SET payload = '{"outcome":"deny"}' WHERE seq = 3""")
    elif attack == "delete":
        tamper(store, "DELETE FROM audit WHERE seq = 3")
    elif attack == "insert":
        tamper(store, "UPDATE audit SET seq = seq + 1000 WHERE seq >= 3")
        tamper(store, "UPDATE audit SET seq = seq - 999 WHERE seq >= 1003")
        insert_forged(store, 3)
    else:
        tamper(
            store,
            "UPDATE audit SET seq = -3 WHERE seq = 3",
            "UPDATE audit SET seq = 3 WHERE seq = 4",
            "UPDATE audit SET seq = 4 WHERE seq = -3",
        )

    async with admin(gov) as client:
        result = await AdminClient.over(client).verify_audit()

    assert not result.ok
    assert (result.problem, result.bad_seq) == (problem, bad_seq)
    assert f"record {bad_seq}" in result.message or f"before record {bad_seq}" in result.message
