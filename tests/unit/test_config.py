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


# -- bounds: a value the server cannot use is refused at startup, naming the key -----------------


def with_key(table: str, line: str, text: str = MINIMAL) -> str:
    """`text` with `line` added to [table] (under its header, or in a new table)."""
    header = f"\n[{table}]\n"
    if header in text:
        return text.replace(header, f"{header}{line}\n", 1)
    return f"{text}{header}{line}\n"


HUGE_INTEGER = "1" + "0" * 400  # TOML integers are unbounded; float() of this overflows


@pytest.mark.parametrize(
    ("table", "line", "message"),
    [
        pytest.param(
            "attestation",
            "bundle_reload_seconds = 86401",
            "config: attestation.bundle_reload_seconds must be at most 86400 seconds (1 day)",
            id="bundle-reload-over-a-day",
        ),
        pytest.param(
            "policy",
            "reload_seconds = 1e15",  # timedelta would raise OverflowError
            "config: policy.reload_seconds must be at most 86400 seconds (1 day)",
            id="policy-reload-beyond-timedelta",
        ),
        pytest.param(
            "approvals",
            "ttl_seconds = 1e12",  # accepted once, then every approval-needing exchange failed
            "config: approvals.ttl_seconds must be at most 604800 seconds (7 days)",
            id="approval-ttl-beyond-datetime",
        ),
        pytest.param(
            "approvals",
            f"ttl_seconds = {HUGE_INTEGER}",
            "config: approvals.ttl_seconds must be at most 604800 seconds (7 days)",
            id="approval-ttl-integer-beyond-float",
        ),
        pytest.param(
            "approvals",
            "recheck_seconds = 3601",
            "config: approvals.recheck_seconds must be at most 3600 seconds (1 hour)",
            id="recheck-over-an-hour",
        ),
        pytest.param(
            "revocation",
            "heartbeat_seconds = 3601",
            "config: revocation.heartbeat_seconds must be at most 3600 seconds (1 hour)",
            id="heartbeat-over-an-hour",
        ),
        pytest.param(
            "revocation",
            "poll_seconds = 3601",
            "config: revocation.poll_seconds must be at most 3600 seconds (1 hour)",
            id="poll-over-an-hour",
        ),
        pytest.param(
            "revocation",
            "stuck_grace_seconds = 3601",
            "config: revocation.stuck_grace_seconds must be at most 3600 seconds (1 hour)",
            id="stuck-grace-over-an-hour",
        ),
        pytest.param(
            "revocation",
            "bans_refresh_seconds = 3601",
            "config: revocation.bans_refresh_seconds must be at most 3600 seconds (1 hour)",
            id="bans-refresh-over-an-hour",
        ),
        pytest.param(
            "issuer",
            "rotation_grace_seconds = 604801",
            "config: issuer.rotation_grace_seconds must be at most 604800 seconds (7 days)",
            id="rotation-grace-over-a-week",
        ),
        pytest.param(
            "issuer",
            "rotation_check_seconds = 86401",
            "config: issuer.rotation_check_seconds must be at most 86400 seconds (1 day)",
            id="rotation-check-over-a-day",
        ),
        pytest.param(
            "listen",
            f"max_message_bytes = {2**31}",  # grpc server creation raised OverflowError
            "config: listen.max_message_bytes must be at most 67108864 (64 MiB)",
            id="message-size-beyond-grpc",
        ),
        pytest.param(
            "revocation",
            "queue_size = 100001",
            "config: revocation.queue_size must be at most 100000",
            id="revocation-queue-too-long",
        ),
        pytest.param(
            "revocation",
            f"queue_size = {HUGE_INTEGER}",
            "config: revocation.queue_size must be at most 100000",
            id="revocation-queue-huge",
        ),
        pytest.param(
            "delegation",
            "max_depth = 17",
            "config: delegation.max_depth must be at most 16",
            id="delegation-deeper-than-approvals-follow",
        ),
    ],
)
def test_a_value_beyond_its_key_s_bound_is_refused(
    tmp_path: Path, table: str, line: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_key(table, line), base_dir=tmp_path)
    assert info.value.message == message


@pytest.mark.parametrize(
    ("table", "key"),
    [
        pytest.param("attestation", "bundle_reload_seconds", id="bundle-reload"),
        pytest.param("policy", "reload_seconds", id="policy-reload"),
        pytest.param("approvals", "ttl_seconds", id="approval-ttl"),
        pytest.param("approvals", "recheck_seconds", id="approval-recheck"),
        pytest.param("revocation", "heartbeat_seconds", id="heartbeat"),
        pytest.param("revocation", "poll_seconds", id="poll"),
        pytest.param("revocation", "stuck_grace_seconds", id="stuck-grace"),
        pytest.param("revocation", "bans_refresh_seconds", id="bans-refresh"),
        pytest.param("issuer", "rotation_check_seconds", id="rotation-check"),
    ],
)
@pytest.mark.parametrize("value", ["0", "1e-9"], ids=["zero", "rounds-to-zero"])
def test_an_interval_a_loop_sleeps_for_must_be_greater_than_zero(
    tmp_path: Path, table: str, key: str, value: str
) -> None:
    # zero would make the loop spin on sleep(0), starving the event loop
    with pytest.raises(ConfigError) as info:
        parse_config(with_key(table, f"{key} = {value}"), base_dir=tmp_path)
    assert info.value.message == f"config: {table}.{key} must be greater than zero"


@pytest.mark.parametrize("value", ["0", "59.9"], ids=["zero", "under-the-jwks-max-age"])
def test_rotation_grace_must_outlast_the_jwks_cache(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_key("issuer", f"rotation_grace_seconds = {value}"), base_dir=tmp_path)
    assert info.value.message == (
        "config: issuer.rotation_grace_seconds must be at least 60 seconds: relying parties may "
        "cache the JWKS that long (it is served with that max-age), and a key that signs before "
        "they have it fails to verify"
    )


def test_every_bound_itself_is_accepted(tmp_path: Path) -> None:
    text = MINIMAL
    for table, line in [
        ("listen", "max_message_bytes = 67108864"),
        ("attestation", "bundle_reload_seconds = 86400"),
        ("policy", "reload_seconds = 86400"),
        ("approvals", "ttl_seconds = 604800\nrecheck_seconds = 3600"),
        ("issuer", "rotation_grace_seconds = 60\nrotation_check_seconds = 86400"),
        ("revocation", "queue_size = 100000\nheartbeat_seconds = 3600\npoll_seconds = 3600"),
        ("revocation", "stuck_grace_seconds = 3600\nbans_refresh_seconds = 3600"),
        ("delegation", "max_depth = 16"),
    ]:
        text = with_key(table, line, text)
    config = parse_config(text, base_dir=tmp_path)
    assert config.listen.max_message_bytes == 64 * 1024 * 1024
    assert config.approvals.ttl == dt.timedelta(days=7)
    assert config.issuer.rotation_grace == dt.timedelta(seconds=60)
    assert config.revocation.queue_size == 100_000
    assert config.revocation.bans_refresh_interval == dt.timedelta(hours=1)
    assert config.delegation.max_depth == 16
