"""`taskpass verify` against a real server: keys over HTTP or gRPC, the binding, exit codes."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from taskpass.client import Task
from taskpass.client.cli_verify import EXIT_INVALID_TOKEN
from taskpass.client.jwks import JWKS_PATH
from taskpass.server.cli.main import main
from taskpass.server.pki.builder import Issued
from tests.integration.harness import BILLING_BOT, ISSUER, REPORT_BOT, Harness
from tests.support.pki import TestPki


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def token_of(harness: Harness, leaf: Issued) -> str:
    async with harness.client(leaf) as client:
        issued = await client.exchange(
            Task(task_id="t-cli", audience="payments-api", action="read")
        )
    return issued.token


def keys_over_http(harness: Harness) -> list[str]:
    url = f"http://127.0.0.1:{harness.server.ports.http}{JWKS_PATH}"
    return ["--jwks-url", url, "--issuer", ISSUER, "--audience", "payments-api"]


def pem_file(harness: Harness, name: str, leaf: Issued) -> str:
    cert, _ = TestPki.write_identity(harness.directory / "verify", name, leaf)
    return str(cert)


async def test_verify_prints_the_verified_claims(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    leaf = harness.pki.leaf(BILLING_BOT)
    token = await token_of(harness, leaf)
    peer = pem_file(harness, "caller", leaf)
    code, out, err = await run(
        capsys, "verify", token, *keys_over_http(harness), "--peer-cert", peer, "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["valid"] is True
    assert result["subject"] == BILLING_BOT
    assert result["scopes"] == ["payments:read"]
    assert result["task_id"] == "t-cli"


async def test_verify_fetches_keys_over_grpc_without_a_jwks_url(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    leaf = harness.pki.leaf(BILLING_BOT)
    token = await token_of(harness, leaf)
    cert, key = TestPki.write_identity(harness.directory / "verify", "sidecar", leaf)
    code, out, err = await run(
        capsys,
        "verify",
        token,
        *("--issuer", ISSUER, "--audience", "payments-api", "--peer-cert", str(cert)),
        *("--server", harness.mtls_target, "--ca", str(harness.server_ca)),
        *("--cert", str(cert), "--key", str(key)),
    )
    assert code == 0, err
    assert f"subject: {BILLING_BOT}" in out


async def test_a_token_presented_by_another_workload_exits_6_with_the_reason(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    token = await token_of(harness, harness.pki.leaf(BILLING_BOT))
    thief = pem_file(harness, "thief", harness.pki.leaf(REPORT_BOT))
    code, _, err = await run(
        capsys, "verify", token, *keys_over_http(harness), "--peer-cert", thief
    )
    assert code == EXIT_INVALID_TOKEN
    assert "certificate_mismatch" in err
    assert token not in err


async def test_a_bound_token_without_the_peer_certificate_says_to_give_it(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    token = await token_of(harness, harness.pki.leaf(BILLING_BOT))
    code, out, err = await run(capsys, "verify", token, *keys_over_http(harness), "--json")
    assert code == EXIT_INVALID_TOKEN
    assert json.loads(out) == {
        "valid": False,
        "reason": "certificate_required",
        "message": json.loads(out)["message"],
    }
    assert "peer_certificate" in err


async def test_verify_reads_the_token_from_stdin(
    harness: Harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    leaf = harness.pki.leaf(BILLING_BOT)
    token = await token_of(harness, leaf)
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    peer = pem_file(harness, "caller", leaf)
    code, _, err = await run(capsys, "verify", "-", *keys_over_http(harness), "--peer-cert", peer)
    assert code == 0, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --jwks-url, or --ca"),
        (["--jwks-url", "ftp://x/jwks"], "http:// or https://"),
        (["--jwks-url", "http://x/jwks", "--peer-cert", "/nonexistent.pem"], "nonexistent"),
    ],
    ids=["no-key-source", "bad-url", "missing-peer-file"],
)
async def test_bad_usage_exits_2_and_says_what_to_fix(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["verify", "a.b.c", "--issuer", ISSUER, "--audience", "payments-api", *extra]
    code, _, err = await run(capsys, *argv)
    assert code == 2
    assert message in err


async def test_an_unreachable_jwks_url_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    token = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJhdCtqd3QifQ.e30.c2ln"
    argv = ["verify", token, "--issuer", ISSUER, "--audience", "payments-api"]
    code, _, err = await run(capsys, *argv, "--jwks-url", "http://127.0.0.1:9/jwks.json")
    assert code == 1
    assert "cannot fetch the JWKS" in err
