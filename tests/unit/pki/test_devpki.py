from __future__ import annotations

import base64
import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from taskpass.server.clock import FixedClock
from taskpass.server.errors import ConfigError
from taskpass.server.identity.bundles import TrustBundles
from taskpass.server.identity.jwt_svid import JwtSvidVerifier
from taskpass.server.identity.workload import AttestationMethod
from taskpass.server.identity.x509_svid import X509SvidVerifier
from taskpass.server.pki.devpki import (
    DEFAULT_CA_TTL,
    DEFAULT_SVID_TTL,
    DevPki,
    init_dev_pki,
    issue_svid,
    mint_jwt_svid,
)

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
TD = "example.org"

EXPECTED_SVIDS = {
    "agents/billing-bot": "spiffe://example.org/agents/billing-bot",
    "agents/report-bot": "spiffe://example.org/agents/report-bot",
    "approvers/alice": "spiffe://example.org/humans/approvers/alice",
    "approvers/bob": "spiffe://example.org/humans/approvers/bob",
    "admins/sec-admin": "spiffe://example.org/security/admin",
    "auditors/auditor": "spiffe://example.org/security/auditor",
    "sidecars/payments-sidecar": "spiffe://example.org/sidecars/payments",
    "orchestrators/ci": "spiffe://example.org/orchestrators/ci",
    "tools/runner": "spiffe://example.org/tools/runner",
}


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(
        tmp_path_factory.mktemp("certs") / "dev", trust_domain=TD, clock=FixedClock(NOW)
    )


def cert_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_writes_the_documented_layout(dev: DevPki) -> None:
    out = dev.directory
    expected = {"ca.pem", "ca.key", "bundle.pem", "server.pem", "server.key"}
    expected |= {f"{prefix}.{ext}" for prefix in EXPECTED_SVIDS for ext in ("pem", "key")}
    expected |= {"jwt/signer.key", "jwt/bundle.json"}

    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}

    assert written == expected
    assert {k: v.spiffe_id for k, v in dev.svids.items()} == EXPECTED_SVIDS


def test_private_keys_are_0600(dev: DevPki) -> None:
    keys = list(dev.directory.rglob("*.key"))

    assert len(keys) == len(EXPECTED_SVIDS) + 3
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_every_svid_verifies_against_the_bundle(dev: DevPki) -> None:
    verifier = X509SvidVerifier(TrustBundles({TD: [dev.bundle]}), FixedClock(NOW))

    for files in [dev.server, *dev.svids.values()]:
        workload = verifier.verify_pem(files.cert.read_bytes())
        assert workload.id == files.spiffe_id


def test_server_svid_serves_tls_for_localhost(dev: DevPki) -> None:
    cert = cert_of(dev.server.cert)

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://example.org/taskpass/server"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_agent_svids_are_client_only(dev: DevPki) -> None:
    cert = cert_of(dev.svids["agents/billing-bot"].cert)

    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_lifetimes_are_30_days_for_svids_and_a_year_for_the_ca(dev: DevPki) -> None:
    assert (
        cert_of(dev.svids["agents/report-bot"].cert).not_valid_after_utc == NOW + DEFAULT_SVID_TTL
    )
    assert cert_of(dev.ca_cert).not_valid_after_utc == NOW + DEFAULT_CA_TTL
    assert dt.timedelta(days=30) == DEFAULT_SVID_TTL
    assert dt.timedelta(days=365) == DEFAULT_CA_TTL


def test_bundle_is_the_ca_certificate(dev: DevPki) -> None:
    assert dev.bundle.read_bytes() == dev.ca_cert.read_bytes()


def test_jwt_bundle_is_a_spiffe_bundle_with_the_signer_key(dev: DevPki) -> None:
    document = json.loads(dev.jwt_bundle.read_text())

    jwt_keys = [k for k in document["keys"] if k["use"] == "jwt-svid"]
    assert [k["kid"] for k in jwt_keys] == [dev.jwt_kid]
    assert "d" not in jwt_keys[0]
    assert [k["use"] for k in document["keys"]].count("x509-svid") == 1


def test_minted_jwt_svid_verifies_with_the_jwt_bundle(dev: DevPki) -> None:
    clock = FixedClock(NOW)
    token = mint_jwt_svid(
        dev.jwt_signer_key,
        spiffe_id="spiffe://example.org/agents/billing-bot",
        audience=["taskpass"],
        ttl=dt.timedelta(minutes=5),
        kid=dev.jwt_kid,
        clock=clock,
    )
    verifier = JwtSvidVerifier(TrustBundles({TD: [dev.jwt_bundle]}), "taskpass", clock)

    workload = verifier.verify(token)

    assert workload.method is AttestationMethod.JWT_SVID
    assert workload.expires_at == NOW + dt.timedelta(minutes=5)


def test_minted_jwt_svid_header_is_es256_kid_jwt(dev: DevPki) -> None:
    token = mint_jwt_svid(
        dev.jwt_signer_key,
        spiffe_id="spiffe://example.org/agents/billing-bot",
        audience=["taskpass"],
        ttl=dt.timedelta(minutes=5),
        kid=None,
        clock=FixedClock(NOW),
    )
    segment = token.split(".")[0]
    header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))

    assert header == {"alg": "ES256", "kid": dev.jwt_kid, "typ": "JWT"}


def test_refuses_to_overwrite_an_existing_pki(dev: DevPki) -> None:
    with pytest.raises(ConfigError, match="already holds a dev PKI"):
        init_dev_pki(dev.directory, trust_domain=TD)


def test_overwrite_replaces_the_ca(tmp_path: Path) -> None:
    first = init_dev_pki(tmp_path, trust_domain=TD, clock=FixedClock(NOW))
    old_ca = first.ca_cert.read_bytes()

    second = init_dev_pki(tmp_path, trust_domain=TD, clock=FixedClock(NOW), overwrite=True)

    assert second.ca_cert.read_bytes() != old_ca
    assert stat.S_IMODE(second.ca_key.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "trust_domain",
    [
        pytest.param("Example.org", id="ID-2-upper-case"),
        pytest.param("example.org/agents", id="ID-2-path-is-not-a-trust-domain"),
        pytest.param("", id="ID-2-empty"),
    ],
)
def test_invalid_trust_domain_is_a_config_error(tmp_path: Path, trust_domain: str) -> None:
    with pytest.raises(ConfigError, match="ID-2"):
        init_dev_pki(tmp_path, trust_domain=trust_domain)
    assert not (tmp_path / "ca.key").exists()


def test_issue_svid_writes_a_verifiable_svid(dev: DevPki, tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    prefix = tmp_path / "extra" / "worker"

    issue_svid(
        dev.directory,
        "spiffe://example.org/jobs/worker",
        prefix,
        ttl=dt.timedelta(hours=1),
        clock=clock,
    )

    assert stat.S_IMODE((tmp_path / "extra" / "worker.key").stat().st_mode) == 0o600
    verifier = X509SvidVerifier(TrustBundles({TD: [dev.bundle]}), clock)
    workload = verifier.verify_pem((tmp_path / "extra" / "worker.pem").read_bytes())
    assert workload.id == "spiffe://example.org/jobs/worker"
    assert workload.expires_at == NOW + dt.timedelta(hours=1)


def test_issue_svid_lifetime_is_capped_by_the_ca(dev: DevPki, tmp_path: Path) -> None:
    issue_svid(
        dev.directory,
        "spiffe://example.org/jobs/long",
        tmp_path / "long",
        ttl=dt.timedelta(days=5000),
        clock=FixedClock(NOW),
    )

    cert = cert_of(tmp_path / "long.pem")
    assert cert.not_valid_after_utc == cert_of(dev.ca_cert).not_valid_after_utc


def test_issue_svid_with_dns_names_is_a_server_cert(dev: DevPki, tmp_path: Path) -> None:
    issue_svid(
        dev.directory,
        "spiffe://example.org/svc/api",
        tmp_path / "api",
        ttl=dt.timedelta(hours=1),
        dns_names=("api.local",),
        clock=FixedClock(NOW),
    )

    eku = cert_of(tmp_path / "api.pem").extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku.value


@pytest.mark.parametrize(
    "spiffe_id",
    [
        pytest.param("spiffe://example.org", id="ID-root-is-not-an-svid"),
        pytest.param("spiffe://example.org/a/", id="ID-3-trailing-slash"),
        pytest.param("https://example.org/a", id="ID-1-not-spiffe"),
    ],
)
def test_issue_svid_rejects_invalid_ids(dev: DevPki, tmp_path: Path, spiffe_id: str) -> None:
    with pytest.raises(ConfigError):
        issue_svid(dev.directory, spiffe_id, tmp_path / "x", ttl=dt.timedelta(hours=1))
    assert not (tmp_path / "x.key").exists()


def test_mint_jwt_svid_rejects_a_missing_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        mint_jwt_svid(
            tmp_path / "nope.key",
            spiffe_id="spiffe://example.org/a",
            audience=["x"],
            ttl=dt.timedelta(minutes=1),
        )
