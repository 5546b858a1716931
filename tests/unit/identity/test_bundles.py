from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from taskpass.server.errors import ConfigError
from taskpass.server.identity.bundles import TrustBundles
from taskpass.server.pki.builder import Usage
from taskpass.server.pki.devpki import spiffe_bundle_json
from tests.support.pki import TestPki, replace_file


def test_loads_x509_and_jwt_authorities_per_trust_domain(
    pki: TestPki, bundle_sources: dict[str, list[Path]]
) -> None:
    bundles = TrustBundles(bundle_sources)

    example = bundles.get("example.org")
    assert example is not None
    assert example.x509_authorities == (pki.example.root.cert,)
    assert example.x509_store is not None
    assert set(example.jwt_authorities) == {pki.example.jwt_kid}
    assert bundles.get("third.org") is None
    assert set(bundles.trust_domains) == {"example.org", "other.org"}
    assert bundles.generation == 1


def test_spiffe_bundle_x509_svid_entries_are_x509_authorities(pki: TestPki, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(
        spiffe_bundle_json(
            x509_authorities=[pki.example.root.cert],
            jwt_keys={pki.example.jwt_kid: pki.example.jwt_key},
        )
    )

    bundle = TrustBundles({"example.org": [path]}).get("example.org")

    assert bundle is not None
    assert bundle.x509_authorities == (pki.example.root.cert,)
    assert pki.example.jwt_kid in bundle.jwt_authorities


def test_same_ca_in_pem_and_spiffe_bundle_is_loaded_once(pki: TestPki, tmp_path: Path) -> None:
    (tmp_path / "root.pem").write_bytes(pki.example.root.pem)
    (tmp_path / "bundle.json").write_bytes(
        spiffe_bundle_json(x509_authorities=[pki.example.root.cert], jwt_keys={})
    )

    bundle = TrustBundles({"example.org": [tmp_path]}).get("example.org")

    assert bundle is not None and len(bundle.x509_authorities) == 1


def test_keys_of_unknown_use_are_ignored(pki: TestPki, tmp_path: Path) -> None:
    document = json.loads(
        spiffe_bundle_json(x509_authorities=[], jwt_keys={"k": pki.example.jwt_key})
    )
    document["keys"].append({"kty": "EC", "use": "something-else"})
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(document))

    bundle = TrustBundles({"example.org": [path]}).get("example.org")

    assert bundle is not None and set(bundle.jwt_authorities) == {"k"}


def _jwks(keys: list[object]) -> str:
    return json.dumps({"keys": keys})


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        pytest.param("bad.pem", "not a certificate", "not a PEM file", id="garbage-pem"),
        pytest.param("bad.json", "{not json", "not valid JSON", id="garbage-json"),
        pytest.param("bad.json", '["keys"]', "'keys' array", id="json-not-a-jwks"),
        pytest.param(
            "bad.json",
            _jwks([{"use": "jwt-svid", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]),
            "non-empty 'kid'",
            id="jwt-key-without-kid",
        ),
        pytest.param(
            "bad.json",
            _jwks([{"use": "jwt-svid", "kid": "k", "kty": "oct", "k": "c2VjcmV0"}]),
            "private key material",
            id="jwt-key-is-a-secret",
        ),
        pytest.param(
            "bad.json",
            _jwks([{"use": "jwt-svid", "kid": "k", "kty": "EC", "crv": "P-256", "x": "AA"}]),
            "not a valid EC public key",
            id="jwt-key-malformed",
        ),
        pytest.param(
            "bad.json",
            _jwks([{"use": "x509-svid", "kty": "EC", "x5c": ["!!"]}]),
            "x5c is not a base64 DER",
            id="x509-entry-bad-x5c",
        ),
        pytest.param(
            "bad.json",
            _jwks([{"use": "x509-svid", "kty": "EC"}]),
            "exactly one x5c",
            id="x509-entry-without-x5c",
        ),
        pytest.param("empty.json", _jwks([]), "no X.509 or JWT authority", id="empty-bundle"),
        pytest.param("bundle.txt", "whatever", "unknown file type", id="unknown-extension"),
    ],
)
def test_broken_file_at_startup_raises_config_error_naming_file_and_trust_domain(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(content)

    with pytest.raises(ConfigError) as caught:
        TrustBundles({"example.org": [path]})

    assert "example.org" in caught.value.message
    assert problem in caught.value.message
    if "authority" not in problem:
        assert str(path) in caught.value.message


def test_missing_file_at_startup_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"example\.org: .*missing\.pem: cannot read"):
        TrustBundles({"example.org": [tmp_path / "missing.pem"]})


def test_leaf_certificate_in_a_bundle_is_a_config_error(pki: TestPki, tmp_path: Path) -> None:
    path = tmp_path / "leaf.pem"
    path.write_bytes(pki.leaf().pem)

    with pytest.raises(ConfigError, match="not a CA certificate"):
        TrustBundles({"example.org": [path]})


@pytest.mark.parametrize(
    ("knobs", "problem"),
    [
        pytest.param({"key_usage": None}, "keyCertSign", id="ca-without-key-usage"),
        pytest.param(
            {"key_usage": frozenset({Usage.CRL_SIGN})}, "keyCertSign", id="ca-without-cert-sign"
        ),
    ],
)
def test_ca_that_cannot_sign_certificates_is_a_config_error(
    pki: TestPki, tmp_path: Path, knobs: dict[str, Any], problem: str
) -> None:
    path = tmp_path / "root.pem"
    path.write_bytes(pki.ca("weak root", **knobs).pem)

    with pytest.raises(ConfigError, match=problem):
        TrustBundles({"example.org": [path]})


def test_private_key_material_is_never_echoed(pki: TestPki, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    secret = "c3VwZXItc2VjcmV0LWtleS1ieXRlcw"
    path.write_text(_jwks([{"use": "jwt-svid", "kid": "k", "kty": "oct", "k": secret}]))

    with pytest.raises(ConfigError) as caught:
        TrustBundles({"example.org": [path]})

    assert secret not in caught.value.message


@pytest.mark.parametrize(
    "trust_domain",
    [pytest.param("Example.org", id="ID-2-upper-case"), pytest.param("", id="ID-2-empty")],
)
def test_invalid_trust_domain_name_in_config_is_rejected(
    pki: TestPki, tmp_path: Path, trust_domain: str
) -> None:
    (tmp_path / "root.pem").write_bytes(pki.example.root.pem)

    with pytest.raises(ConfigError):
        TrustBundles({trust_domain: [tmp_path / "root.pem"]})


def test_reload_without_changes_does_nothing(bundle_sources: dict[str, list[Path]]) -> None:
    bundles = TrustBundles(bundle_sources)

    result = bundles.reload_if_changed()

    assert not result.reloaded and result.error is None
    assert bundles.generation == 1


def test_reload_picks_up_a_rotated_file_without_restart(
    pki: TestPki, bundle_sources: dict[str, list[Path]]
) -> None:
    bundles = TrustBundles(bundle_sources)
    new_root = pki.ca("rotated root", trust_domain="example.org")
    pem = bundle_sources["example.org"][0]
    replace_file(pem, pem.read_bytes() + new_root.pem)

    result = bundles.reload_if_changed()

    assert result.reloaded and result.error is None
    assert bundles.generation == 2
    example = bundles.get("example.org")
    assert example is not None
    assert new_root.cert in example.x509_authorities


def test_reload_picks_up_a_new_file_in_a_bundle_directory(pki: TestPki, tmp_path: Path) -> None:
    directory = tmp_path / "example.org.d"
    directory.mkdir()
    (directory / "root.pem").write_bytes(pki.example.root.pem)
    bundles = TrustBundles({"example.org": [directory]})
    new_root = pki.ca("second root", trust_domain="example.org")

    (directory / "second.pem").write_bytes(new_root.pem)
    result = bundles.reload_if_changed()

    assert result.reloaded
    example = bundles.get("example.org")
    assert example is not None
    assert set(example.x509_authorities) == {pki.example.root.cert, new_root.cert}


def test_broken_file_on_reload_keeps_the_old_set_and_returns_the_error(
    pki: TestPki, bundle_sources: dict[str, list[Path]]
) -> None:
    bundles = TrustBundles(bundle_sources)
    before = bundles.get("example.org")
    pem = bundle_sources["example.org"][0]

    replace_file(pem, b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    result = bundles.reload_if_changed()

    assert not result.reloaded
    assert result.error is not None and str(pem) in result.error.message
    assert bundles.generation == 1
    assert bundles.get("example.org") is before
    # Not retried (nor logged again) until the file changes again; then it recovers.
    assert bundles.reload_if_changed() == type(result)(reloaded=False)
    replace_file(pem, pki.example.root.pem)
    assert bundles.reload_if_changed().reloaded
    assert bundles.generation == 2


def test_deleted_file_on_reload_keeps_the_old_set(bundle_sources: dict[str, list[Path]]) -> None:
    bundles = TrustBundles(bundle_sources)
    bundle_sources["other.org"][1].unlink()

    result = bundles.reload_if_changed()

    assert not result.reloaded
    assert result.error is not None and "cannot read" in result.error.message
    assert bundles.get("other.org") is not None
