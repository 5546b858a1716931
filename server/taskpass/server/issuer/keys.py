"""The server's signing keys: generated, persisted, published as a JWKS and rotated.

A key's `kid` is its RFC 7638 JWK thumbprint, so any verifier can recompute it from the public key.
Key lifecycle (DESIGN.md "Credential"): a new key is published as `next` before it signs anything;
`promote()` makes it `active` and retires the previous one; a retired key stays published until
every token it signed has expired, then `prune()` drops it.

On disk (`directory`, mode 0700): one PKCS#8 PEM file per key, `<kid>.pem` (mode 0600), and
`keys.json` holding each key's kid, alg, state and dates. The directory and every file in it must
be owned by the user the server runs as and must not be symbolic links: a key another user could
have written is a key that user may hold. The ring is not thread-safe: it is used from the
server's event loop only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwk

from taskpass.server.clock import Clock
from taskpass.server.errors import ConfigError, Conflict, NotFound

Algorithm: TypeAlias = Literal["ES256", "EdDSA"]
ALGORITHMS: Final[tuple[Algorithm, ...]] = ("ES256", "EdDSA")
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicJwk: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

METADATA_FILE: Final = "keys.json"
METADATA_VERSION: Final = 1
# How far past a token's expiry the persisted high-water mark is pushed, so that `note_issued`
# writes the metadata file about once per this period instead of on every token.
DEFAULT_EXPIRY_RESERVATION: Final = dt.timedelta(hours=1)

_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_KID = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest: also a safe file name
_JWK_ALGORITHMS: Final[dict[tuple[str, str], Algorithm]] = {
    ("EC", "P-256"): "ES256",
    ("OKP", "Ed25519"): "EdDSA",
}
# JWK members that carry private key material, for every key type (RFC 7518 §6).
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class KeyState(enum.Enum):
    NEXT = "next"  # published, not yet signing
    ACTIVE = "active"  # signs new tokens
    RETIRED = "retired"  # published until its tokens expire


def _joserfc_key(public_key: PublicJwk) -> jwk.ECKey | jwk.OKPKey:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return jwk.ECKey.import_key(public_key)
    return jwk.OKPKey.import_key(public_key)


def _algorithm_of(private_key: PrivateKey) -> Algorithm:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
        private_key.curve, ec.SECP256R1
    ):
        return "ES256"
    raise ValueError("signing keys must be P-256 (ES256) or Ed25519 (EdDSA)")


def key_id(public_key: PublicJwk) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of a public key."""
    return _joserfc_key(public_key).thumbprint()


def generate_private_key(algorithm: Algorithm) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ConfigError(f"signing algorithm {algorithm!r} is not supported; use one of {ALGORITHMS}")


@dataclass(frozen=True, slots=True, eq=False)
class SigningKey:
    """One signing key and where it is in its lifecycle.

    `max_token_expiry` is a high-water mark at or after the expiry of every token this key has
    signed: the key stays published at least until then.
    """

    kid: str
    alg: Algorithm
    private_key: PrivateKey = field(repr=False)
    created_at: dt.datetime
    state: KeyState
    retired_at: dt.datetime | None = None
    max_token_expiry: dt.datetime | None = None

    @classmethod
    def from_private_key(
        cls, private_key: PrivateKey, *, created_at: dt.datetime, state: KeyState
    ) -> SigningKey:
        return cls(
            kid=key_id(private_key.public_key()),
            alg=_algorithm_of(private_key),
            private_key=private_key,
            created_at=created_at,
            state=state,
        )

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature over `signing_input` (for ES256 the raw r||s JWS wants, not DER)."""
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self.private_key.sign(signing_input, _ECDSA_SHA256))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return self.private_key.sign(signing_input)

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK: kty/crv/x(/y) plus kid, alg and use. Never any private member."""
        members = dict(_joserfc_key(self.private_key.public_key()).as_dict(private=False))
        return {**members, "kid": self.kid, "alg": self.alg, "use": "sig"}


class KeyRing:
    """The server's keys: the one that signs now, the next one, and retired ones still published."""

    def __init__(
        self,
        directory: Path,
        *,
        algorithm: Algorithm,
        clock: Clock,
        keys: Iterable[SigningKey],
        expiry_reservation: dt.timedelta,
    ) -> None:
        self._directory = directory
        self._algorithm = algorithm
        self._clock = clock
        self._expiry_reservation = expiry_reservation
        self._keys: dict[str, SigningKey] = {key.kid: key for key in keys}
        self._extra: dict[str, dict[str, Any]] = {}
        self._jwks: dict[str, Any] | None = None
        self._jwks_json: bytes | None = None
        self._active = self._find(KeyState.ACTIVE)
        self._version = 0

    @classmethod
    def load_or_create(
        cls,
        directory: Path,
        *,
        algorithm: Algorithm,
        clock: Clock,
        expiry_reservation: dt.timedelta = DEFAULT_EXPIRY_RESERVATION,
    ) -> KeyRing:
        """Load the ring from `directory`, generating the first key on first start.

        `algorithm` applies to keys generated from now on: changing it takes effect at the next
        rotation, so the new key is still published before it signs.
        """
        if algorithm not in ALGORITHMS:
            raise ConfigError(
                f"signing algorithm {algorithm!r} is not supported; use one of {ALGORITHMS}"
            )
        if expiry_reservation < dt.timedelta(0):
            raise ConfigError("expiry_reservation must not be negative")
        _prepare_directory(directory)
        keys = _load(directory)
        if not any(key.state is KeyState.ACTIVE for key in keys):
            first = SigningKey.from_private_key(
                generate_private_key(algorithm), created_at=clock.now(), state=KeyState.ACTIVE
            )
            _write_private_file(directory / f"{first.kid}.pem", _pem(first.private_key))
            keys.append(first)
            _save(directory, keys)
        return cls(
            directory,
            algorithm=algorithm,
            clock=clock,
            keys=keys,
            expiry_reservation=expiry_reservation,
        )

    # -- reading ---------------------------------------------------------------------------------

    @property
    def active(self) -> SigningKey:
        """The key that signs now."""
        return self._active

    @property
    def version(self) -> int:
        """Bumped on every change, so the API layers can tag what they serve (ETag, version)."""
        return self._version

    @property
    def next(self) -> SigningKey | None:
        return self._find_optional(KeyState.NEXT)

    def signing_keys(self) -> tuple[SigningKey, ...]:
        """This server's own keys: active first, then next, then retired."""
        order = {KeyState.ACTIVE: 0, KeyState.NEXT: 1, KeyState.RETIRED: 2}
        return tuple(sorted(self._keys.values(), key=lambda k: (order[k.state], k.created_at)))

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set: own keys, then other replicas' keys.

        The same object is returned until the ring changes (callers may cache by identity), so
        treat it as read-only.
        """
        if self._jwks is None:
            published = [key.public_jwk() for key in self.signing_keys()]
            published += [dict(extra) for extra in self._extra.values()]
            self._jwks = {"keys": published}
        return self._jwks

    def jwks_json(self) -> bytes:
        """The JWKS serialised once per change, for the HTTP and gRPC endpoints."""
        if self._jwks_json is None:
            self._jwks_json = json.dumps(self.jwks(), separators=(",", ":")).encode()
        return self._jwks_json

    def public_key(self, kid: str) -> jwk.ECKey | jwk.OKPKey:
        """The public key published under `kid` (own or another replica's), as a joserfc key."""
        own = self._keys.get(kid)
        if own is not None:
            return _joserfc_key(own.private_key.public_key())
        extra = self._extra.get(kid)
        if extra is not None:
            key = jwk.import_key(extra)
            assert isinstance(key, jwk.ECKey | jwk.OKPKey)  # checked by add_published
            return key
        raise NotFound(f"no published signing key has kid {kid!r}")

    # -- tracking --------------------------------------------------------------------------------

    def note_issued(self, kid: str, expires_at: dt.datetime) -> None:
        """Record that `kid` signed something valid until `expires_at` (keeps it published).

        Hot path: a single comparison unless the persisted high-water mark must move, which
        happens about once per `expiry_reservation`.
        """
        key = self._keys.get(kid)
        if key is None:
            raise NotFound(f"no signing key has kid {kid!r}")
        if key.max_token_expiry is not None and expires_at <= key.max_token_expiry:
            return
        self._replace(
            dataclasses.replace(key, max_token_expiry=expires_at + self._expiry_reservation)
        )

    # -- rotation --------------------------------------------------------------------------------

    def rotate(self) -> SigningKey:
        """Generate a key and publish it as `next`: in the JWKS now, signing after `promote()`."""
        if self.next is not None:
            raise Conflict(
                f"key {self.next.kid} is already published as next; "
                "promote it before rotating again"
            )
        key = SigningKey.from_private_key(
            generate_private_key(self._algorithm), created_at=self._clock.now(), state=KeyState.NEXT
        )
        # the key file first: metadata must never name a file that is not there
        _write_private_file(self._directory / f"{key.kid}.pem", _pem(key.private_key))
        self._replace(key)
        return key

    def promote(self) -> SigningKey:
        """Make the `next` key active and retire the one that was active. Returns the new active."""
        upcoming = self.next
        if upcoming is None:
            raise Conflict("no next key is published; call rotate() first")
        retiring = self._active
        now = self._clock.now()
        self._keys[retiring.kid] = dataclasses.replace(
            retiring, state=KeyState.RETIRED, retired_at=now
        )
        self._replace(dataclasses.replace(upcoming, state=KeyState.ACTIVE))
        return self._active

    def prune(self) -> tuple[str, ...]:
        """Drop retired keys whose tokens have all expired. Returns the kids dropped."""
        now = self._clock.now()
        expired = [
            key
            for key in self._keys.values()
            if key.state is KeyState.RETIRED
            and (key.max_token_expiry is None or key.max_token_expiry <= now)
        ]
        if not expired:
            return ()
        for key in expired:
            del self._keys[key.kid]
        self._changed()
        # metadata first, then the files: a crash in between leaves only harmless orphans
        for key in expired:
            (self._directory / f"{key.kid}.pem").unlink(missing_ok=True)
        return tuple(key.kid for key in expired)

    # -- other replicas --------------------------------------------------------------------------

    def add_published(self, jwks_keys: Iterable[Mapping[str, Any]]) -> None:
        """Also publish other replicas' public keys (in memory for now; store-backed later)."""
        accepted: dict[str, dict[str, Any]] = {}
        for member in jwks_keys:
            public = _validated_public_jwk(member)
            if public["kid"] not in self._keys:
                accepted[public["kid"]] = public
        if any(self._extra.get(kid) != value for kid, value in accepted.items()):
            self._extra.update(accepted)
            self._jwks = None
            self._jwks_json = None
            self._version += 1

    def set_published(self, jwks_keys: Iterable[Mapping[str, Any]]) -> list[str]:
        """Publish exactly these keys of other replicas, dropping the ones not listed (their
        publication has ended); this server's own keys are never affected. A key that fails
        the checks of add_published is left out; returns what was left out (kids, or "?")."""
        accepted: dict[str, dict[str, Any]] = {}
        rejected: list[str] = []
        for member in jwks_keys:
            try:
                public = _validated_public_jwk(member)
            except ConfigError:
                rejected.append(str(member.get("kid", "?"))[:64])
                continue
            if public["kid"] not in self._keys:
                accepted[public["kid"]] = public
        if accepted != self._extra:
            self._extra = accepted
            self._jwks = None
            self._jwks_json = None
            self._version += 1
        return rejected

    # -- internals -------------------------------------------------------------------------------

    def _find_optional(self, state: KeyState) -> SigningKey | None:
        return next((key for key in self._keys.values() if key.state is state), None)

    def _find(self, state: KeyState) -> SigningKey:
        key = self._find_optional(state)
        if key is None:
            raise ConfigError(f"the key ring has no {state.value} key")
        return key

    def _replace(self, key: SigningKey) -> None:
        self._keys[key.kid] = key
        self._changed()

    def _changed(self) -> None:
        _save(self._directory, list(self._keys.values()))
        self._active = self._find(KeyState.ACTIVE)
        self._jwks = None
        self._jwks_json = None
        self._version += 1


# -- persistence ---------------------------------------------------------------------------------


def _pem(private_key: PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _refuse_foreign_owner(path: Path, info: os.stat_result, what: str, remedy: str) -> None:
    # Mode bits alone prove nothing: another user's 0700 directory (or 0600 file) is private to
    # *them*, and a key they wrote is a key they hold.
    euid = os.geteuid()
    if info.st_uid != euid:
        raise ConfigError(
            f"{what} {path} is owned by uid {info.st_uid}, not uid {euid} that taskpass runs as, "
            f"so that user may have written or kept a copy of the keys; {remedy}"
        )


def _prepare_directory(directory: Path) -> None:
    symlink = ConfigError(
        f"signing key directory {directory} is a symbolic link, which taskpass does not follow "
        "(whoever can change the link chooses the keys); set [issuer] key_dir to the real directory"
    )
    if directory.is_symlink():
        raise symlink
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.lstat()
    except OSError as exc:
        raise ConfigError(
            f"signing key directory {directory} cannot be created or read "
            f"({type(exc).__name__}); check the path and its permissions"
        ) from exc
    if stat.S_ISLNK(info.st_mode):  # made a link after the first look
        raise symlink
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"signing key directory {directory} is not a directory; "
            "set [issuer] key_dir to a directory (taskpass creates it if missing)"
        )
    _refuse_foreign_owner(
        directory,
        info,
        "signing key directory",
        f"if its keys are this server's own (restored by another user), run "
        f"`chown -R {os.geteuid()} {directory}`; otherwise set [issuer] key_dir to a path "
        "this user owns or that does not exist yet",
    )
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigError(
            f"signing key directory {directory} is accessible by other users; "
            f"run `chmod 700 {directory}`"
        )


def _read_own_file(path: Path, what: str, *, private: bool) -> bytes:
    """The bytes of a file in the key directory, refusing a link, another user's file and, when
    `private`, one other users may read. Checked on the open file, so it cannot be swapped."""
    if path.is_symlink():
        raise ConfigError(
            f"{what} {path} is a symbolic link, which taskpass does not follow; "
            "replace the link with the file itself"
        )
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file; restore it from backup")
        _refuse_foreign_owner(
            path,
            info,
            what,
            f"if it is this server's own, run `chown {os.geteuid()} {path}`; "
            "otherwise restore it from backup",
        )
        if private and stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigError(f"{what} {path} is accessible by other users; run `chmod 600 {path}`")
        return handle.read()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private_file(path: Path, data: bytes) -> None:
    """Write atomically (temp file, fsync, rename) with mode 0600 from the first byte."""
    temporary = path.with_name(f".{path.name}.tmp")
    # A temp file left by a crash (or a link planted in its place) is removed, never written
    # through: O_EXCL|O_NOFOLLOW only ever creates a new file of our own.
    temporary.unlink(missing_ok=True)
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken the owner's own bits off O_CREAT's mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)  # rename replaces a link at `path`, never writes through it
    _fsync_directory(path.parent)


def _timestamp(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _save(directory: Path, keys: list[SigningKey]) -> None:
    document = {
        "version": METADATA_VERSION,
        "keys": [
            {
                "kid": key.kid,
                "alg": key.alg,
                "state": key.state.value,
                "created_at": _timestamp(key.created_at),
                "retired_at": _timestamp(key.retired_at),
                "max_token_expiry": _timestamp(key.max_token_expiry),
            }
            for key in keys
        ],
    }
    _write_private_file(directory / METADATA_FILE, json.dumps(document, indent=2).encode())


def _load(directory: Path) -> list[SigningKey]:
    metadata = directory / METADATA_FILE
    if not os.path.lexists(metadata):  # a dangling link is refused below, not taken as absent
        if any(directory.glob("*.pem")):
            raise ConfigError(
                f"{metadata} is missing but {directory} holds key files; restore {METADATA_FILE} "
                "from backup, or move the key files away to start with a new key"
            )
        return []
    try:
        document = json.loads(_read_own_file(metadata, "signing key metadata", private=False))
        entries = _metadata_entries(document)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"signing key metadata {metadata} is unreadable or malformed ({type(exc).__name__}); "
            "restore it from backup"
        ) from None
    keys = [_load_key(directory, entry) for entry in entries]
    states = [key.state for key in keys]
    if states.count(KeyState.ACTIVE) > 1 or states.count(KeyState.NEXT) > 1:
        raise ConfigError(f"{metadata} lists more than one active or next key; restore it")
    return keys


def _parse_time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("timestamp without timezone")
    return parsed


def _metadata_entries(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict) or document.get("version") != METADATA_VERSION:
        raise ValueError("unknown metadata version")
    entries = document["keys"]
    if not isinstance(entries, list):
        raise TypeError("keys is not a list")
    parsed = []
    for entry in entries:
        kid = entry["kid"]
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            raise ValueError("kid is not a JWK thumbprint")
        if entry["alg"] not in ALGORITHMS:
            raise ValueError("unsupported alg")
        created_at = _parse_time(entry["created_at"])
        if created_at is None:
            raise ValueError("created_at missing")
        parsed.append(
            {
                "kid": kid,
                "alg": entry["alg"],
                "state": KeyState(entry["state"]),
                "created_at": created_at,
                "retired_at": _parse_time(entry.get("retired_at")),
                "max_token_expiry": _parse_time(entry.get("max_token_expiry")),
            }
        )
    return parsed


def _load_key(directory: Path, entry: dict[str, Any]) -> SigningKey:
    path = directory / f"{entry['kid']}.pem"
    try:
        pem = _read_own_file(path, "signing key file", private=True)
        private_key = serialization.load_pem_private_key(pem, password=None)
    except ConfigError:
        raise
    except Exception as exc:  # any parse failure: never echo what the file held
        raise ConfigError(
            f"signing key file {path} is unreadable or not an unencrypted PKCS#8 PEM private key "
            f"({type(exc).__name__}); restore it from backup"
        ) from None
    if not isinstance(private_key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ConfigError(f"signing key file {path} holds a key type taskpass does not sign with")
    try:
        key = SigningKey.from_private_key(
            private_key, created_at=entry["created_at"], state=entry["state"]
        )
    except ValueError:
        raise ConfigError(f"signing key file {path} holds an unsupported curve") from None
    if key.kid != entry["kid"] or key.alg != entry["alg"]:
        raise ConfigError(
            f"signing key file {path} does not match its entry in {METADATA_FILE} "
            "(thumbprint or algorithm differs); restore the matching file"
        )
    return dataclasses.replace(
        key, retired_at=entry["retired_at"], max_token_expiry=entry["max_token_expiry"]
    )


def _validated_public_jwk(member: Mapping[str, Any]) -> dict[str, Any]:
    """Check another replica's JWK: public only, a type we sign with, kid = its thumbprint."""
    if _PRIVATE_MEMBERS & member.keys():
        raise ConfigError("a published JWK must not contain private key members")
    try:
        key = jwk.import_key(dict(member))
    except Exception as exc:
        raise ConfigError(f"a published JWK is invalid ({type(exc).__name__})") from None
    expected_alg = _JWK_ALGORITHMS.get((str(member.get("kty")), str(member.get("crv"))))
    if expected_alg is None or not isinstance(key, jwk.ECKey | jwk.OKPKey):
        raise ConfigError("a published JWK must be an EC P-256 or OKP Ed25519 key")
    if member.get("alg", expected_alg) != expected_alg:
        raise ConfigError(f"a published {member.get('crv')} JWK must have alg {expected_alg}")
    thumbprint = key.thumbprint()
    if member.get("kid") != thumbprint:
        raise ConfigError(f"a published JWK's kid must be its RFC 7638 thumbprint ({thumbprint})")
    return {**key.as_dict(private=False), "kid": thumbprint, "alg": expected_alg, "use": "sig"}
