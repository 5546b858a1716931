"""Config: a typed TOML file; every mistake is a ConfigError naming the key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from taskpass.server.config import dev_config, load_config, parse_config
from taskpass.server.errors import ConfigError

MINIMAL = """
[listen]
cert_file = "server.pem"
key_file = "server.key"
client_ca_files = ["bundle.pem"]

[trust_domains."example.org"]
bundles = ["bundle.pem"]

[attestation]
jwt_audience = "spiffe://example.org/taskpass/server"

[policy]
file = "policy.yaml"

[issuer]
issuer = "https://taskpass.example.org"
"""


def test_minimal_config_fills_defaults_and_resolves_paths(tmp_path: Path) -> None:
    config = parse_config(MINIMAL, base_dir=tmp_path)
    assert config.listen.mtls_address == "127.0.0.1:8443"
    assert config.listen.tls_address is None
    assert config.listen.cert_file == tmp_path / "server.pem"
    assert config.trust_domains[0].name == "example.org"
    assert config.trust_domains[0].bundle_files == (tmp_path / "bundle.pem",)
    assert config.attestation.jwt_leeway == dt.timedelta(seconds=30)
    assert config.issuer.algorithm == "ES256"
    assert config.issuer.key_dir == tmp_path / "data" / "keys"
    assert config.store.dsn == f"sqlite:///{tmp_path / 'data' / 'taskpass.db'}"
    assert config.dev_mode is False


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(lambda t: t + "\n[listen2]\n", "unknown key(s) listen2", id="unknown-table"),
        pytest.param(
            lambda t: t.replace('key_file = "server.key"', 'key_file = "server.key"\nkeyfile = 1'),
            "unknown key(s) listen.keyfile",
            id="unknown-key",
        ),
        pytest.param(
            lambda t: t.replace('cert_file = "server.pem"\n', ""),
            "missing required key listen.cert_file",
            id="missing-required",
        ),
        pytest.param(
            lambda t: t.replace(
                'issuer = "https://taskpass.example.org"', 'issuer = "x"\nalgorithm = "HS256"'
            ),
            "issuer.algorithm must be ES256 or EdDSA",
            id="bad-algorithm",
        ),
        pytest.param(
            lambda t: t.replace("[attestation]", "[attestation]\njwt_leeway_seconds = -1"),
            "attestation.jwt_leeway_seconds must be a non-negative number",
            id="negative-duration",
        ),
        pytest.param(
            lambda t: t.replace("[attestation]", "[attestation]\njwt_leeway_seconds = inf"),
            "attestation.jwt_leeway_seconds must be a non-negative number",
            id="infinite-duration",
        ),
        pytest.param(
            lambda t: t.replace("[attestation]", "[attestation]\njwt_leeway_seconds = nan"),
            "attestation.jwt_leeway_seconds must be a non-negative number",
            id="nan-duration",
        ),
        pytest.param(
            # J-8: a day of leeway would accept day-old JWT-SVIDs
            lambda t: t.replace("[attestation]", "[attestation]\njwt_leeway_seconds = 86400"),
            "attestation.jwt_leeway_seconds must be at most 300 seconds",
            id="leeway-beyond-clock-skew",
        ),
        pytest.param(
            lambda t: t.replace('bundles = ["bundle.pem"]', "bundles = 3"),
            "trust_domains.example.org.bundles must be a list of strings",
            id="wrong-type",
        ),
        pytest.param(lambda t: t + "\n[[[", "not valid TOML", id="not-toml"),
        pytest.param(
            lambda t: t.replace('[trust_domains."example.org"]\nbundles = ["bundle.pem"]', ""),
            "at least one [trust_domains",
            id="no-trust-domain",
        ),
    ],
)
def test_config_mistakes_name_the_key(tmp_path: Path, edit: object, message: str) -> None:
    assert callable(edit)
    with pytest.raises(ConfigError) as info:
        parse_config(edit(MINIMAL), base_dir=tmp_path)
    assert message in info.value.message


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "nope.toml")


def test_mapped_cert_rule_needs_a_matcher(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[attestation.mapped_certs]]\nissuer_ca_file = "ca.pem"\nidentity = "x"\n'
    with pytest.raises(ConfigError, match="needs dns_san or subject_cn"):
        parse_config(text, base_dir=tmp_path)


def test_embedded_dev_config_parses(tmp_path: Path) -> None:
    config = dev_config(tmp_path)
    assert config.dev_mode is True
    assert config.listen.cert_file == tmp_path / "certs/dev/server.pem"
    assert config.listen.tls_address is not None


def test_policy_signatures_are_required_by_default_and_approvals_expire_in_15_minutes(
    tmp_path: Path,
) -> None:
    config = parse_config(MINIMAL, base_dir=tmp_path)
    assert config.policy.require_signature is True
    assert config.policy.signers == ()
    assert config.approvals.ttl == dt.timedelta(minutes=15)


def test_policy_signers_and_approval_ttl_are_read(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'file = "policy.yaml"', 'file = "policy.yaml"\nsigners = ["keys/a.pem"]\nreload_seconds = 1'
    )
    approvals = "\n[approvals]\nttl_seconds = 60\nrecheck_seconds = 30\n"
    config = parse_config(text + approvals, base_dir=tmp_path)
    assert config.policy.signers == (tmp_path / "keys/a.pem",)
    assert config.policy.reload_interval == dt.timedelta(seconds=1)
    assert config.approvals.ttl == dt.timedelta(seconds=60)
    assert config.approvals.recheck == dt.timedelta(seconds=30)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            "",
            "policy.require_signature = false is allowed only with dev_mode",
            id="unsigned-outside-dev-mode",
        ),
        pytest.param("\n[approvals]\nttl_seconds = 0\n", "approvals.ttl_seconds", id="zero-ttl"),
        pytest.param(
            "\n[approvals]\nrecheck_seconds = 0\n", "approvals.recheck_seconds", id="no-recheck"
        ),
    ],
)
def test_governance_settings_that_would_weaken_security_are_refused(
    tmp_path: Path, extra: str, message: str
) -> None:
    text = MINIMAL
    if not extra:
        text = text.replace(
            'file = "policy.yaml"', 'file = "policy.yaml"\nrequire_signature = false'
        )
    with pytest.raises(ConfigError, match=message):
        parse_config(text + extra, base_dir=tmp_path)


def test_dev_mode_accepts_unsigned_policy_unless_told_otherwise(tmp_path: Path) -> None:
    config = parse_config("dev_mode = true\n" + MINIMAL, base_dir=tmp_path)
    assert config.policy.require_signature is False


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        pytest.param("", 3, id="default"),
        pytest.param("\n[delegation]\nmax_depth = 1\n", 1, id="no-further-delegation"),
    ],
)
def test_delegation_max_depth_is_read_with_a_default_of_three(
    tmp_path: Path, table: str, expected: int
) -> None:
    assert parse_config(MINIMAL + table, base_dir=tmp_path).delegation.max_depth == expected


@pytest.mark.parametrize("value", ["0", "-1", "true", '"3"'])
def test_delegation_max_depth_must_be_a_positive_integer(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"delegation\.max_depth must be a positive integer"):
        parse_config(MINIMAL + f"\n[delegation]\nmax_depth = {value}\n", base_dir=tmp_path)
