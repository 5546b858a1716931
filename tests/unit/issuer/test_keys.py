from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwk

from taskpass.server.clock import FixedClock
from taskpass.server.errors import ConfigError, Conflict, NotFound
from taskpass.server.issuer.keys import METADATA_FILE, KeyRing, KeyState, key_id
from tests.unit.issuer.factories import RingFactory

# RFC 8037 Appendix A.1 / A.3: an Ed25519 key and its RFC 7638 thumbprint.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def reference_thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 §3 written out: required members, sorted, no whitespace, SHA-256, base64url."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[public_jwk["kty"]]
    canonical = json.dumps({name: public_jwk[name] for name in required}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pem_path(key_dir: Path, kid: str) -> Path:
    return key_dir / f"{kid}.pem"


# -- identity of a key -----------------------------------------------------------------------------


def test_key_id_matches_the_rfc_8037_thumbprint_example() -> None:
    private_key = ed25519.Ed25519PrivateKey.from_private_bytes(b64decode(RFC8037_D))

    assert key_id(private_key.public_key()) == RFC8037_THUMBPRINT


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"], ids=["es256", "eddsa"])
def test_kid_is_the_rfc_7638_thumbprint_of_the_public_key(
    make_ring: RingFactory, algorithm: str
) -> None:
    ring = make_ring(algorithm)
    published = ring.jwks()["keys"][0]

    assert ring.active.kid == reference_thumbprint(published)
    assert ring.active.kid == jwk.import_key(published).thumbprint()
    assert published["kid"] == ring.active.kid


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("ES256", {"kty": "EC", "crv": "P-256", "alg": "ES256"}),
        ("EdDSA", {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA"}),
    ],
    ids=["es256-p256", "eddsa-ed25519"],
)
def test_algorithm_option_selects_the_key_type(
    make_ring: RingFactory, algorithm: str, expected: dict[str, str]
) -> None:
    ring = make_ring(algorithm)
    published = ring.jwks()["keys"][0]

    assert ring.active.alg == algorithm
    assert {name: published[name] for name in expected} == expected
    assert published["use"] == "sig"


def test_unsupported_algorithm_is_a_config_error(key_dir: Path, clock: FixedClock) -> None:
    with pytest.raises(ConfigError, match="RS256"):
        KeyRing.load_or_create(key_dir, algorithm="RS256", clock=clock)  # type: ignore[arg-type]


# -- persistence ---------------------------------------------------------------------------------


def test_first_start_writes_a_private_key_file_and_metadata_readable_only_by_the_owner(
    ring: KeyRing, key_dir: Path
) -> None:
    key_file = pem_path(key_dir, ring.active.kid)

    assert mode(key_dir) == 0o700
    assert mode(key_file) == 0o600
    assert mode(key_dir / METADATA_FILE) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"], ids=["es256", "eddsa"])
def test_restart_reloads_the_same_key(make_ring: RingFactory, algorithm: str) -> None:
    first = make_ring(algorithm)
    second = make_ring(algorithm)

    assert second.active.kid == first.active.kid
    assert second.jwks() == first.jwks()


def test_restart_with_another_algorithm_keeps_the_active_key_until_rotation(
    make_ring: RingFactory,
) -> None:
    es256 = make_ring("ES256").active.kid

    ring = make_ring("EdDSA")
    assert ring.active.kid == es256
    assert ring.rotate().alg == "EdDSA"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n", "unreadable"),
        (b"definitely not a key: s3cr3t-material", "unreadable"),
        (b"", "unreadable"),
    ],
    ids=["truncated-pem", "garbage", "empty"],
)
def test_corrupt_key_file_is_a_config_error_naming_the_file_without_its_content(
    make_ring: RingFactory, key_dir: Path, content: bytes, problem: str
) -> None:
    kid = make_ring().active.kid
    key_file = pem_path(key_dir, kid)
    key_file.write_bytes(content)

    with pytest.raises(ConfigError, match=problem) as caught:
        make_ring()

    message = str(caught.value)
    assert str(key_file) in message
    assert "s3cr3t" not in message
    assert "c2VjcmV0" not in message
    assert caught.value.__cause__ is None


def test_key_file_replaced_by_another_key_is_a_config_error(
    make_ring: RingFactory, key_dir: Path
) -> None:
    kid = make_ring().active.kid
    other = ec.generate_private_key(ec.SECP256R1())
    pem_path(key_dir, kid).write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    with pytest.raises(ConfigError, match="does not match"):
        make_ring()


def test_key_file_of_an_unsupported_type_is_a_config_error(
    make_ring: RingFactory, key_dir: Path
) -> None:
    kid = make_ring().active.kid
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem_path(key_dir, kid).write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    with pytest.raises(ConfigError, match="key type"):
        make_ring()


def test_missing_key_file_is_a_config_error_naming_it(
    make_ring: RingFactory, key_dir: Path
) -> None:
    kid = make_ring().active.kid
    pem_path(key_dir, kid).unlink()

    with pytest.raises(ConfigError, match=kid):
        make_ring()


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"version": 99, "keys": []}',
        b'{"version": 1, "keys": [{"kid": "../../etc/passwd", "alg": "ES256"}]}',
    ],
    ids=["not-json", "unknown-version", "kid-not-a-thumbprint"],
)
def test_corrupt_metadata_is_a_config_error_naming_the_file(
    make_ring: RingFactory, key_dir: Path, content: bytes
) -> None:
    make_ring()
    (key_dir / METADATA_FILE).write_bytes(content)

    with pytest.raises(ConfigError, match=METADATA_FILE):
        make_ring()


def test_key_files_without_metadata_are_a_config_error_not_a_silent_new_key(
    make_ring: RingFactory, key_dir: Path
) -> None:
    make_ring()
    (key_dir / METADATA_FILE).unlink()

    with pytest.raises(ConfigError, match="missing"):
        make_ring()


def test_key_file_readable_by_others_is_refused(make_ring: RingFactory, key_dir: Path) -> None:
    kid = make_ring().active.kid
    pem_path(key_dir, kid).chmod(0o644)

    with pytest.raises(ConfigError, match="chmod 600"):
        make_ring()


def test_key_directory_open_to_others_is_refused(make_ring: RingFactory, key_dir: Path) -> None:
    make_ring()
    key_dir.chmod(0o755)

    with pytest.raises(ConfigError, match="chmod 700"):
        make_ring()


# -- publication -----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"], ids=["es256", "eddsa"])
def test_jwks_holds_only_public_members(make_ring: RingFactory, algorithm: str) -> None:
    ring = make_ring(algorithm)
    ring.rotate()

    for member in ring.jwks()["keys"]:
        assert "d" not in member
        assert set(member) <= {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert b'"d"' not in ring.jwks_json()


def test_jwks_is_cached_until_the_ring_changes(ring: KeyRing) -> None:
    before, version = ring.jwks(), ring.version

    assert ring.jwks() is before
    ring.rotate()

    assert ring.jwks() is not before
    assert ring.version > version
    assert json.loads(ring.jwks_json()) == ring.jwks()


def test_public_key_returns_a_public_key_by_kid(ring: KeyRing) -> None:
    key = ring.public_key(ring.active.kid)

    assert not key.is_private
    assert key.thumbprint() == ring.active.kid


def test_public_key_of_an_unknown_kid_is_not_found(ring: KeyRing) -> None:
    with pytest.raises(NotFound):
        ring.public_key("unknown-kid")


# -- rotation --------------------------------------------------------------------------------------


def test_rotate_publishes_the_next_key_before_it_signs(ring: KeyRing) -> None:
    active = ring.active.kid

    upcoming = ring.rotate()

    assert upcoming.state is KeyState.NEXT
    assert ring.active.kid == active
    assert [member["kid"] for member in ring.jwks()["keys"]] == [active, upcoming.kid]


def test_rotate_twice_without_promote_is_a_conflict(ring: KeyRing) -> None:
    ring.rotate()

    with pytest.raises(Conflict, match="promote"):
        ring.rotate()


def test_promote_without_a_next_key_is_a_conflict(ring: KeyRing) -> None:
    with pytest.raises(Conflict, match="rotate"):
        ring.promote()


def test_promote_makes_next_active_and_retires_the_old_key(
    ring: KeyRing, clock: FixedClock
) -> None:
    old = ring.active.kid
    upcoming = ring.rotate().kid
    clock.advance(dt.timedelta(minutes=5))

    ring.promote()

    retired = next(key for key in ring.signing_keys() if key.kid == old)
    assert ring.active.kid == upcoming
    assert retired.state is KeyState.RETIRED
    assert retired.retired_at == clock.now()
    assert {member["kid"] for member in ring.jwks()["keys"]} == {old, upcoming}


def test_rotation_state_survives_a_restart(make_ring: RingFactory, clock: FixedClock) -> None:
    ring = make_ring()
    old = ring.active.kid
    ring.note_issued(old, clock.now() + dt.timedelta(minutes=10))
    ring.rotate()
    ring.promote()

    reloaded = make_ring()

    assert [(k.kid, k.state) for k in reloaded.signing_keys()] == [
        (k.kid, k.state) for k in ring.signing_keys()
    ]
    retired = next(key for key in reloaded.signing_keys() if key.kid == old)
    assert retired.max_token_expiry == clock.now() + dt.timedelta(minutes=10)
    assert retired.retired_at == clock.now()


def test_retired_key_stays_published_until_its_tokens_expire_then_is_pruned(
    ring: KeyRing, clock: FixedClock, key_dir: Path
) -> None:
    old = ring.active.kid
    ring.note_issued(old, clock.now() + dt.timedelta(minutes=10))
    ring.note_issued(old, clock.now() + dt.timedelta(minutes=4))  # earlier: must not shorten
    ring.rotate()
    ring.promote()

    clock.advance(dt.timedelta(minutes=9, seconds=59))
    assert ring.prune() == ()
    assert old in {member["kid"] for member in ring.jwks()["keys"]}

    clock.advance(dt.timedelta(seconds=1))
    assert ring.prune() == (old,)
    assert old not in {member["kid"] for member in ring.jwks()["keys"]}
    assert not pem_path(key_dir, old).exists()


def test_retired_key_that_signed_nothing_is_pruned_at_once(ring: KeyRing) -> None:
    old = ring.active.kid
    ring.rotate()
    ring.promote()

    assert ring.prune() == (old,)


def test_prune_keeps_active_and_next_keys(ring: KeyRing) -> None:
    ring.rotate()

    assert ring.prune() == ()
    assert len(ring.signing_keys()) == 2


def test_note_issued_persists_a_reserved_high_water_mark_not_every_expiry(
    make_ring: RingFactory, clock: FixedClock, key_dir: Path
) -> None:
    ring = make_ring(expiry_reservation=dt.timedelta(hours=1))
    kid = ring.active.kid
    first = clock.now() + dt.timedelta(minutes=10)

    def persisted() -> str:
        entries = json.loads((key_dir / METADATA_FILE).read_text())["keys"]
        return str(next(entry for entry in entries if entry["kid"] == kid)["max_token_expiry"])

    ring.note_issued(kid, first)
    assert persisted() == (first + dt.timedelta(hours=1)).isoformat()

    ring.note_issued(kid, first + dt.timedelta(minutes=30))  # inside the reservation: no write
    assert persisted() == (first + dt.timedelta(hours=1)).isoformat()

    later = first + dt.timedelta(hours=2)
    ring.note_issued(kid, later)
    assert persisted() == (later + dt.timedelta(hours=1)).isoformat()


def test_note_issued_for_an_unknown_kid_is_not_found(ring: KeyRing, clock: FixedClock) -> None:
    with pytest.raises(NotFound):
        ring.note_issued("unknown-kid", clock.now())


# -- keys published by other replicas --------------------------------------------------------------


def other_replica_jwk(**changes: Any) -> dict[str, Any]:
    public = jwk.ECKey.import_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    member = {**public.as_dict(), "kid": public.thumbprint(), "alg": "ES256", "use": "sig"}
    member.update(changes)
    return {name: value for name, value in member.items() if value is not None}


def test_add_published_adds_another_replicas_public_key(ring: KeyRing) -> None:
    member = other_replica_jwk()
    version = ring.version

    ring.add_published([member])

    assert member in ring.jwks()["keys"]
    assert ring.public_key(member["kid"]).thumbprint() == member["kid"]
    assert ring.version > version


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"d": "c2VjcmV0"}, "private"),
        ({"kid": "chosen-by-the-replica"}, "thumbprint"),
        ({"alg": "RS256"}, "alg"),
        ({"kty": "oct", "k": "c2VjcmV0", "crv": None, "x": None, "y": None}, "private"),
    ],
    ids=["private-member", "kid-not-thumbprint", "wrong-alg", "symmetric-key"],
)
def test_add_published_rejects_unsafe_or_mislabelled_keys(
    ring: KeyRing, changes: dict[str, Any], problem: str
) -> None:
    before = ring.jwks()

    with pytest.raises(ConfigError, match=problem):
        ring.add_published([other_replica_jwk(**changes)])

    assert ring.jwks() is before


def test_add_published_rejects_key_types_taskpass_does_not_sign_with(ring: KeyRing) -> None:
    public = jwk.RSAKey.import_key(rsa.generate_private_key(65537, 2048).public_key())
    member = {**public.as_dict(), "kid": public.thumbprint()}

    with pytest.raises(ConfigError, match="P-256"):
        ring.add_published([member])
