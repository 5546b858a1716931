"""The `taskpass` command against a real server: output and exit codes as the README says."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from taskpass.server.cli.main import main
from tests.integration.harness import AUDIENCE, BILLING_BOT, Harness
from tests.support.pki import TestPki


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def connection(harness: Harness, name: str = "billing-bot", leaf: object = None) -> list[str]:
    issued = leaf or harness.pki.leaf(BILLING_BOT)
    cert, key = TestPki.write_identity(harness.directory / "cli", name, issued)  # type: ignore[arg-type]
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


TASK = [
    "--task-id",
    "t-42",
    "--audience",
    "payments-api",
    "--sensitivity",
    "internal",
    "--ttl",
    "600",
]


async def test_exchange_json_prints_one_object(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await run(
        capsys, "exchange", *connection(harness), *TASK, "--action", "read", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert {"token", "jti", "expires_at", "scopes", "policy_version", "matched_rules"} <= set(
        result
    )
    assert result["scopes"] == ["payments:read"]
    assert result["matched_rules"] == ["grant.payments.read"]


async def test_denial_exits_3_naming_the_rules(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await run(capsys, "exchange", *connection(harness), *TASK, "--action", "delete")
    assert code == 3
    assert "deny.delete" in err


async def test_bad_request_exits_2_naming_the_field(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await run(
        capsys,
        "exchange",
        *connection(harness),
        *TASK[:2],
        "--audience",
        "bad audience",
        "--action",
        "read",
    )
    assert code == 2
    assert "task.audience" in err


async def test_attestation_failure_exits_4_naming_the_rule(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_leaf = harness.pki.leaf(BILLING_BOT, ca=True)
    code, _, err = await run(
        capsys, "exchange", *connection(harness, "ca-leaf", ca_leaf), *TASK, "--action", "read"
    )
    assert code == 4
    assert "[X-3]" in err


async def test_approval_required_exits_5(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await run(capsys, "exchange", *connection(harness), *TASK, "--action", "write")
    assert code == 5
    assert "security-approvers" in err


async def test_jwt_svid_exchange_and_complete(
    harness: Harness, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    token_file = tmp_path / "svid.jwt"
    token_file.write_text(harness.pki.jwt(BILLING_BOT, audience=AUDIENCE))
    bearer = [
        "--server",
        harness.tls_target,
        "--ca",
        str(harness.server_ca),
        "--jwt-svid",
        str(token_file),
    ]
    code, out, err = await run(
        capsys, "exchange", *bearer, *TASK, "--action", "read", "--token-only"
    )
    assert code == 0, err
    token = out.strip()
    code, out, err = await run(capsys, "complete", *bearer, "--task-id", "t-42", "--json")
    assert code == 0, err
    assert len(json.loads(out)["revoked_jtis"]) == 1
    code, out, _ = await run(capsys, "introspect", *connection(harness), token, "--json")
    assert code == 0
    assert json.loads(out) == {"active": False}


def test_unreachable_server_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pki = TestPki()
    cert, key = TestPki.write_identity(tmp_path, "x", pki.leaf(BILLING_BOT))
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.example.root.pem)
    code = main(
        [
            "exchange",
            "--server",
            "127.0.0.1:1",
            "--ca",
            str(ca),
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--timeout",
            "2",
            *TASK,
            "--action",
            "read",
        ]
    )
    assert code == 1
    assert "cannot reach the server" in capsys.readouterr().err


async def test_watch_exits_1_saying_why_when_the_server_cannot_be_reached(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    args = connection(harness)
    nowhere = ["--server", "127.0.0.1:1", *args[2:]]  # nothing listens on port 1

    code, out, err = await asyncio.wait_for(run(capsys, "watch", *nowhere), 30)

    assert (code, out) == (1, "")
    assert "cannot reach the server: nothing listens there" in err


async def test_introspect_prints_the_binding_one_member_a_line(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await run(
        capsys, "exchange", *connection(harness), *TASK, "--action", "read", "--token-only"
    )
    assert code == 0, err

    code, out, _ = await run(capsys, "introspect", *connection(harness), out.strip())

    assert code == 0
    lines = out.splitlines()
    assert "active: True" in lines
    assert any(line.startswith("cnf.x5t#S256: ") for line in lines)
    assert not any("{" in line for line in lines)  # no Python dict shown
