"""`taskpass certs` and `taskpass policy check` as a user runs them."""

from __future__ import annotations

import stat
from pathlib import Path

import jwt as pyjwt
import pytest
from cryptography import x509

from taskpass.server.cli.main import main

POLICY = Path(__file__).resolve().parents[2] / "server/taskpass/server/policy/dev_policy.yaml"


def test_certs_init_writes_the_dev_pki_with_private_keys_0600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dev"
    assert main(["certs", "init", "--trust-domain", "example.org", "--out", str(out)]) == 0
    for name in ("bundle.pem", "server.pem", "agents/billing-bot.pem", "jwt/bundle.json"):
        assert (out / name).is_file(), name
    for key in ("ca.key", "server.key", "agents/billing-bot.key", "jwt/signer.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600, key
    leaf = x509.load_pem_x509_certificate((out / "agents/billing-bot.pem").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://example.org/agents/billing-bot"
    ]
    # a second init refuses to overwrite the CA
    assert main(["certs", "init", "--trust-domain", "example.org", "--out", str(out)]) == 2
    assert "already holds a dev PKI" in capsys.readouterr().err


def test_certs_issue_and_jwt_svid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dev"
    main(["certs", "init", "--out", str(out)])
    prefix = tmp_path / "new-bot"
    spiffe_id = "spiffe://example.org/agents/new-bot"
    assert (
        main(
            ["certs", "issue", "--spiffe-id", spiffe_id, "--out", str(prefix), "--ca-dir", str(out)]
        )
        == 0
    )
    assert (tmp_path / "new-bot.pem").is_file()
    capsys.readouterr()
    assert (
        main(
            [
                "certs",
                "jwt-svid",
                "--spiffe-id",
                spiffe_id,
                "--audience",
                "spiffe://example.org/taskpass/server",
                "--signer",
                str(out / "jwt/signer.key"),
            ]
        )
        == 0
    )
    token = capsys.readouterr().out.strip()
    claims = pyjwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == spiffe_id
    assert claims["aud"] in (
        "spiffe://example.org/taskpass/server",
        ["spiffe://example.org/taskpass/server"],
    )


def test_certs_issue_rejects_an_invalid_spiffe_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dev"
    main(["certs", "init", "--out", str(out)])
    capsys.readouterr()
    code = main(
        [
            "certs",
            "issue",
            "--spiffe-id",
            "spiffe://Example.org/x",
            "--out",
            str(tmp_path / "x"),
            "--ca-dir",
            str(out),
        ]
    )
    assert code == 2
    assert "upper" in capsys.readouterr().err.lower()


def test_policy_check_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(POLICY)]) == 0
    assert "version sha256:" in capsys.readouterr().out


def test_policy_check_names_the_broken_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "p.yaml"
    broken.write_text(
        "rules:\n  - id: r1\n    effect: grant\n    scopes: [a]\n    when: task.sensitivty > 1\n"
    )
    assert main(["policy", "check", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "r1" in err and "sensitivty" in err
