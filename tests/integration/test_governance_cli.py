"""The governance CLI against a real server: exchange --wait-approval, approvals, policy
sign/verify/load, audit verify/export; output and exit codes as the README says."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskpass.server.cli.main import main
from taskpass.server.store.sqlite import SqliteStore
from tests.integration.governance import ALICE, POLICY, approvals_of, soon, start_governance
from tests.integration.harness import ADMIN, BILLING_BOT, Harness
from tests.support.pki import TestPki

WRITE = [
    "--task-id",
    "t-cli",
    "--audience",
    "payments-api",
    "--action",
    "write",
    "--ttl",
    "300",
]


@pytest.fixture
async def gov(tmp_path: Path, pki: TestPki) -> AsyncIterator[Harness]:
    harness = await start_governance(tmp_path, pki)
    try:
        yield harness
    finally:
        await harness.server.stop(grace=0.5)


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def connection(harness: Harness, spiffe_id: str) -> list[str]:
    name = spiffe_id.rsplit("/", 1)[-1]
    cert, key = TestPki.write_identity(harness.directory / "cli", name, harness.pki.leaf(spiffe_id))
    return [
        "--server",
        harness.mtls_target,
        "--ca",
        str(harness.server_ca),
        "--cert",
        str(cert),
        "--key",
        str(key),
    ]


async def test_exchange_without_waiting_exits_5_printing_the_approval_id(
    gov: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await run(capsys, "exchange", *connection(gov, BILLING_BOT), *WRITE, "--json")

    assert code == 5
    pending = json.loads(out)
    assert pending["approval_id"].startswith("apr_")
    assert pending["approver_groups"] == ["security-approvers"]
    assert pending["approval_id"] in err


async def test_exchange_wait_approval_completes_as_soon_as_an_approver_approves(
    gov: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    exchange = asyncio.create_task(
        run(
            capsys,
            "exchange",
            *connection(gov, BILLING_BOT),
            *WRITE,
            "--wait-approval",
            "120",
            "--json",
        )
    )
    async with gov.agent(ALICE) as alice:
        async for approval in approvals_of(alice).watch():
            if approval.state == "pending":
                await approvals_of(alice).approve(approval.approval_id)
                break

    code, out, err = await soon(exchange)

    assert code == 0, err
    assert loop.time() - started < 30  # it was ready to wait 120 s
    assert f"approval {approval.approval_id} pending" in err
    assert json.loads(out)["scopes"] == ["payments:write"]


async def test_approvers_list_approve_and_deny_from_the_cli(
    gov: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    for task_id in ("t-a", "t-b"):
        await run(
            capsys, "exchange", *connection(gov, BILLING_BOT), *WRITE[2:], "--task-id", task_id
        )
    alice = connection(gov, ALICE)

    code, out, _ = await run(capsys, "approvals", "list", *alice, "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    code_watch, watched, _ = await run(capsys, "approvals", "watch", *alice, "--count", "1")
    code_a, approved, _ = await run(
        capsys, "approvals", "approve", *alice, listed[0]["approval_id"], "--json"
    )
    code_d, denied, _ = await run(
        capsys, "approvals", "deny", *alice, listed[1]["approval_id"], "--reason", "dup", "--json"
    )
    code_again, _, err = await run(capsys, "approvals", "approve", *alice, listed[1]["approval_id"])

    assert (code, code_watch, code_a, code_d) == (0, 0, 0, 0)
    assert [a["task"]["task_id"] for a in listed] == ["t-a", "t-b"]
    assert listed[0]["requester"] == BILLING_BOT
    assert listed[0]["rules"] == ["approval.payments.write"]
    assert watched.startswith("[pending] " + listed[0]["approval_id"])
    assert "asks to write payments-api" in watched
    assert json.loads(approved)["state"] == "approved"
    assert (json.loads(denied)["state"], json.loads(denied)["reason"]) == ("denied", "dup")
    assert code_again == 1
    assert "denied" in err


async def test_the_requester_cannot_approve_itself_from_the_cli(
    gov: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = connection(gov, BILLING_BOT)
    _, out, _ = await run(capsys, "exchange", *agent, *WRITE, "--json")

    code, _, err = await run(capsys, "approvals", "approve", *agent, json.loads(out)["approval_id"])

    assert code == 3
    assert "its own request" in err


async def test_sign_verify_and_load_a_policy_from_the_cli(
    gov: Harness, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(POLICY.read_bytes().replace(b"governance-1", b"governance-cli"))
    public = gov.policy_key.parent / "policy-signer.pub.pem"

    sign_code, sign_out, _ = await run(
        capsys, "policy", "sign", str(policy), "--key", str(gov.policy_key)
    )
    verify_code, verify_out, _ = await run(
        capsys, "policy", "verify", str(policy), "--signer", str(public)
    )
    load_code, load_out, load_err = await run(
        capsys, "policy", "load", *connection(gov, ADMIN), str(policy), "--json"
    )

    assert (sign_code, verify_code, load_code) == (0, 0, 0), load_err
    assert Path(f"{policy}.sig").exists()
    assert "signed" in sign_out
    assert "signature ok" in verify_out
    assert json.loads(load_out)["label"] == "governance-cli"


async def test_a_policy_edited_after_signing_is_refused_by_verify_and_by_the_server(
    gov: Harness, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(POLICY.read_bytes())
    await run(capsys, "policy", "sign", str(policy), "--key", str(gov.policy_key))
    policy.write_bytes(POLICY.read_bytes() + b"# sneaky edit\n")
    public = gov.policy_key.parent / "policy-signer.pub.pem"

    verify_code, _, verify_err = await run(
        capsys, "policy", "verify", str(policy), "--signer", str(public)
    )
    load_code, _, load_err = await run(
        capsys, "policy", "load", *connection(gov, ADMIN), str(policy)
    )
    agent_code, _, agent_err = await run(
        capsys, "policy", "load", *connection(gov, BILLING_BOT), str(policy)
    )

    assert (verify_code, load_code, agent_code) == (2, 2, 3)
    assert "bad signature" in verify_err
    assert "bad signature" in load_err
    assert "admins" in agent_err


async def test_policy_keygen_writes_a_key_pair_it_will_not_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = tmp_path / "signer.key"

    first, out, _ = await run(capsys, "policy", "keygen", "--out", str(key))
    second, _, err = await run(capsys, "policy", "keygen", "--out", str(key))

    assert (first, second) == (0, 2)
    assert key.stat().st_mode & 0o777 == 0o600
    assert Path(f"{key}.pub.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert "signers" in out
    assert "refusing to overwrite" in err


async def test_audit_verify_and_export_from_the_cli(
    gov: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = connection(gov, BILLING_BOT)
    await run(capsys, "exchange", *agent, *WRITE)
    auditor = connection(gov, ADMIN)

    ok_code, ok_out, _ = await run(capsys, "audit", "verify", *auditor)
    export_code, export_out, _ = await run(
        capsys, "audit", "export", *auditor, "--since", "2000-01-01T00:00:00Z"
    )
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    _, none_out, _ = await run(capsys, "audit", "export", *auditor, "--since", future)
    store = gov.server.store
    assert isinstance(store, SqliteStore)
    conn = sqlite3.connect(store.path)
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit WHERE seq = 2")
    conn.commit()
    conn.close()
    bad_code, bad_out, _ = await run(capsys, "audit", "verify", *auditor)
    denied_code, _, denied_err = await run(capsys, "audit", "verify", *agent)

    assert (ok_code, export_code) == (0, 0)
    assert ok_out.startswith("audit log ok: 4 records")
    records = [json.loads(line) for line in export_out.splitlines()]
    kinds = ["policy_loaded", "key_shared", "approval_requested", "decision"]
    assert [r["kind"] for r in records] == kinds
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[1]["prev_hash"] == records[0]["hash"]
    assert none_out == ""
    assert bad_code == 6
    assert "AUDIT LOG TAMPERED" in bad_out
    assert "record(s) 2 missing before record 3" in bad_out
    assert denied_code == 3
    assert "auditors" in denied_err


async def test_audit_verify_checks_a_head_printed_by_an_earlier_run(
    gov: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    auditor = connection(gov, ADMIN)
    _, first, _ = await run(capsys, "audit", "verify", *auditor)
    head = first.split("head ", 1)[1].split(" ", 1)[0]  # SEQ:HASH, as printed
    seq = int(head.split(":")[0])

    same_code, same_out, _ = await run(capsys, "audit", "verify", *auditor, "--expect", head)
    cut_code, cut_out, _ = await run(
        capsys, "audit", "verify", *auditor, "--expect", f"{seq + 3}:{'e' * 64}"
    )
    with pytest.raises(SystemExit) as usage:  # argparse's own exit for a malformed argument
        await run(capsys, "audit", "verify", *auditor, "--expect", "x")

    assert (same_code, cut_code, usage.value.code) == (0, 6, 2)
    assert same_out.startswith("audit log ok")
    assert f"ends at record {seq}, before record {seq + 3}" in cut_out
    assert "give SEQ:HASH" in capsys.readouterr().err
