"""The typed server configuration, read from TOML.

Every table and key is listed in docs/configuration.md. Unknown keys are errors (a typo must not
silently fall back to a default), relative paths are resolved against `base_dir` (the directory of
the config file), and every problem is a ConfigError naming the key.
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

from taskpass.server.errors import ConfigError
from taskpass.server.issuer.keys import Algorithm
from taskpass.server.store.postgres_notify import EVENTS_CHANNEL, check_channel

_MINUTE: Final = 60
_HOUR: Final = 60 * _MINUTE
_DAY: Final = 24 * _HOUR

MAX_JWT_LEEWAY_SECONDS: Final = 5 * _MINUTE
"""J-8's leeway is for clock skew between hosts; more would accept JWT-SVIDs long expired."""
MAX_RELOAD_SECONDS: Final = _DAY
"""Bundle, policy and rotation checks: a change made on disk or by `keys rotate` is picked up
at most a day late. Longer would be indistinguishable from never."""
MAX_SAFETY_NET_SECONDS: Final = _HOUR
"""Re-reads that catch what a lost notification missed (approval decisions, revocations, bans
made through another replica), heartbeats and readiness checks: each delays something a caller
or a relying party waits on, so at most an hour."""
MAX_APPROVAL_TTL_SECONDS: Final = 7 * _DAY
"""An approver may be away for a long weekend; an approved grant left unused longer is a
standing credential nobody remembers asking for."""
MIN_ROTATION_GRACE_SECONDS: Final = 60
"""The HTTP JWKS is served with `max-age=60`: a relying party may use a JWKS fetched just before
a rotation for that long, so a new key must be published at least that long before it signs."""
MAX_ROTATION_GRACE_SECONDS: Final = 7 * _DAY
"""Longer than any sane JWKS cache; more only postpones a rotation made because a key may have
leaked."""
MAX_SHUTDOWN_GRACE_SECONDS: Final = _HOUR
"""Orchestrators kill a process long before (Kubernetes waits 30 s by default)."""
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""gRPC takes a 32-bit limit (larger crashes server creation), and every call in flight may hold
one message this large in memory; taskpass's largest request, a policy document, is far smaller."""
MAX_REVOCATION_QUEUE: Final = 100_000
"""The queue is what a slow subscriber may hold in memory (about 1 KB an event); it exists to
cut such a subscriber, who resumes from its cursor, not to keep it."""
MAX_DELEGATION_DEPTH: Final = 16
"""Each hop nests one more `act` claim in the credential (RFC 8693), so credentials grow with
the depth; no real chain is nearly this deep, and approvals follow a chain at most this far."""
MAX_EXCHANGES_PER_SECOND: Final = 1_000_000
"""Per identity, far beyond what one server can issue: a larger rate limits nothing (leave the
[limits] table out for that)."""
MAX_BURST: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class ListenConfig:
    mtls_address: str
    """host:port of the gRPC listener that requires a client certificate (X.509-SVID callers)."""
    tls_address: str | None
    """host:port of the server-TLS gRPC listener for JWT-SVID bearer callers; None disables it."""
    http_address: str | None
    """host:port of the plain HTTP listener (JWKS, metadata, /healthz); None disables it."""
    cert_file: Path
    """The server's own X.509-SVID (PEM); with DNS SAN for the name clients dial."""
    key_file: Path
    """Its private key (PEM)."""
    client_ca_files: tuple[Path, ...]
    """CA certificates the TLS handshake accepts client certs from. The handshake is only a
    first filter: every chain is validated again by taskpass against the ID's own trust domain."""
    max_message_bytes: int
    """Largest request message accepted; larger ones get RESOURCE_EXHAUSTED."""


@dataclass(frozen=True, slots=True)
class TrustDomainConfig:
    name: str
    bundle_files: tuple[Path, ...]
    """PEM files (X.509 authorities) and SPIFFE bundle JWKS files (X.509 and JWT authorities)."""


@dataclass(frozen=True, slots=True)
class MappedCertRuleConfig:
    issuer_ca_file: Path
    dns_san: str | None
    subject_cn: str | None
    identity: str


@dataclass(frozen=True, slots=True)
class AttestationConfig:
    jwt_audience: str
    """The audience a JWT-SVID must carry to be accepted here (J-7)."""
    jwt_leeway: dt.timedelta
    """Clock skew allowed on a JWT-SVID's exp (J-8)."""
    bundle_reload_interval: dt.timedelta
    """How often bundle files are checked for changes (a stat, cheap)."""
    mapped_certs: tuple[MappedCertRuleConfig, ...]
    """Non-SPIFFE workload certificate mappings; empty means the feature is off."""


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    file: Path
    """The policy document (YAML); its detached signature is the same path plus `.sig`."""
    signers: tuple[Path, ...] = ()
    """Public keys (PEM, Ed25519 or ECDSA P-256/P-384) whose signatures make a policy loadable."""
    require_signature: bool = True
    """Refuse an unsigned policy. Only dev mode may turn this off (and does by default)."""
    reload_interval: dt.timedelta = dt.timedelta(seconds=5)
    """How often the policy file and its signature are checked for changes."""


@dataclass(frozen=True, slots=True)
class ApprovalsConfig:
    ttl: dt.timedelta = dt.timedelta(minutes=15)
    """How long a request waits for an approver, and then how long an approval stays usable."""
    recheck: dt.timedelta = dt.timedelta(seconds=5)
    """How often an exchange waiting for approval re-reads it without being woken (a decision
    on another replica normally wakes it at once through the store's notifications)."""


@dataclass(frozen=True, slots=True)
class RevocationConfig:
    queue_size: int = 1024
    """Events a Watch subscriber may fall behind before its stream is ended with a resume seq."""
    heartbeat_interval: dt.timedelta = dt.timedelta(seconds=5)
    """How often an idle Watch stream gets a heartbeat carrying its seq."""
    poll_interval: dt.timedelta = dt.timedelta(seconds=1)
    """The fan-out's safety re-read of the event log when no commit woke it."""
    stuck_grace: dt.timedelta = dt.timedelta(seconds=30)
    """How long a stream ended for falling behind may take to read its end before it is cut."""
    bans_refresh_interval: dt.timedelta = dt.timedelta(seconds=5)
    """How often the in-memory ban list is re-read (bans made through another replica)."""


@dataclass(frozen=True, slots=True)
class DelegationConfig:
    max_depth: int = 3
    """The most hops a delegation chain may have below a directly issued credential (1: a
    sub-agent may not delegate further). Holds whatever the policy allows."""


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    issuer: str
    """The `iss` of every credential and SET; also the OAuth metadata issuer."""
    algorithm: Algorithm
    """ES256 (default) or EdDSA."""
    key_dir: Path
    """Where signing keys persist (created 0700, key files 0600)."""
    rotation_grace: dt.timedelta = dt.timedelta(seconds=120)
    """How long a rotated-in key is published before it signs (>= relying parties' JWKS cache)."""
    rotation_check_interval: dt.timedelta = dt.timedelta(seconds=10)
    """How often pending promotions and prunable retired keys are looked for."""


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    exchanges_per_second: float | None = None
    """Sustained Exchange calls per second per workload identity (a token bucket each); None,
    the key left out, means no rate limit."""
    burst: int = 1
    """Exchange calls an idle identity may make at once (default: twice the rate, at least 1)."""


@dataclass(frozen=True, slots=True)
class HealthConfig:
    check_interval: dt.timedelta = dt.timedelta(seconds=5)
    """How often readiness (store ping, signing key) is re-checked for the gRPC health service."""


@dataclass(frozen=True, slots=True)
class ShutdownConfig:
    grace: dt.timedelta = dt.timedelta(seconds=10)
    """On SIGTERM, how long in-flight calls may take to finish before they are cancelled."""


AccessLog = Literal["failures", "all"]
ACCESS_LOGS: tuple[AccessLog, ...] = ("failures", "all")


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    access_log: AccessLog = "failures"
    """Which RPCs get an access line on `taskpass.access`: "failures", those that did not end OK
    (refusals and errors), or "all" (a line per successful call costs ~10 us of CPU; the audit
    log and the metrics already count every call)."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    dsn: str
    """sqlite:///path/to.db (embedded default) or postgresql://..."""
    notify_channel: str = EVENTS_CHANNEL
    """PostgreSQL's LISTEN/NOTIFY channel: the same for every replica of one deployment, its
    own for each deployment sharing the database (channels are database-wide)."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: ListenConfig
    trust_domains: tuple[TrustDomainConfig, ...]
    attestation: AttestationConfig
    policy: PolicyConfig
    issuer: IssuerConfig
    store: StoreConfig
    data_dir: Path
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Group name -> member SPIFFE IDs or patterns (security-owned; see docs/configuration.md)."""
    dev_mode: bool = False
    """Dev mode accepts unsigned policy and says so loudly at startup. Never in production."""
    approvals: ApprovalsConfig = field(default_factory=ApprovalsConfig)
    revocation: RevocationConfig = field(default_factory=RevocationConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    delegation: DelegationConfig = field(default_factory=DelegationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    extra: Mapping[str, Any] = field(default_factory=dict)


_ALGORITHMS: dict[str, Algorithm] = {"ES256": "ES256", "EdDSA": "EdDSA"}


def _span(seconds: int) -> str:
    for size, unit in ((_DAY, "day"), (_HOUR, "hour"), (_MINUTE, "minute")):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds} seconds"


def _duration(path: str, value: object, *, maximum: int, positive: bool) -> dt.timedelta:
    """Seconds as a timedelta. Every key has a maximum: beyond one, timedelta (or the datetime
    arithmetic done with it later) raises OverflowError instead of naming the key."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        # TOML has inf and nan; isfinite() itself overflows on an int too large for a float
        or (isinstance(value, float) and not math.isfinite(value))
        or value < 0
    ):
        raise ConfigError(f"config: {path} must be a non-negative number of seconds")
    if value > maximum:
        raise ConfigError(f"config: {path} must be at most {maximum} seconds ({_span(maximum)})")
    seconds = dt.timedelta(seconds=value)
    if positive and not seconds:  # also what rounds to 0 us, which would spin just the same
        raise ConfigError(f"config: {path} must be greater than zero")
    return seconds


class _Table:
    """A TOML table read key by key, so leftovers can be reported as unknown."""

    def __init__(self, path: str, data: object) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"config: [{path}] must be a table")
        self.path = path
        self._data: dict[str, object] = dict(data)

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def take(self, key: str, default: object = ...) -> object:
        if key in self._data:
            return self._data.pop(key)
        if default is ...:
            raise ConfigError(f"config: missing required key {self._key(key)}")
        return default

    def string(self, key: str, default: object = ...) -> str:
        value = self.take(key, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config: {self._key(key)} must be a non-empty string")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.take(key, None)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ConfigError(f"config: {self._key(key)} must be a string")
        return value

    def integer(self, key: str, default: object = ..., *, maximum: int, unit: str = "") -> int:
        value = self.take(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"config: {self._key(key)} must be a positive integer")
        if value > maximum:  # TOML integers are unbounded; grpc and float() are not
            raise ConfigError(f"config: {self._key(key)} must be at most {maximum}{unit}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.take(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"config: {self._key(key)} must be true or false")
        return value

    def duration(
        self, key: str, default: float, *, maximum: int, positive: bool = True
    ) -> dt.timedelta:
        """`positive=False` only where zero means something (no leeway, no shutdown grace): an
        interval of zero would make its loop spin on sleep(0)."""
        return _duration(
            self._key(key), self.take(key, default), maximum=maximum, positive=positive
        )

    def strings(self, key: str, default: object = ...) -> tuple[str, ...]:
        value = self.take(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"config: {self._key(key)} must be a list of strings")
        return tuple(value)

    def table(self, key: str) -> _Table:
        return _Table(self._key(key), self.take(key, {}))

    def tables(self, key: str) -> list[_Table]:
        value = self.take(key, [])
        if not isinstance(value, list):
            raise ConfigError(f"config: {self._key(key)} must be an array of tables")
        return [_Table(f"{self._key(key)}[{i}]", item) for i, item in enumerate(value)]

    def finish(self) -> None:
        if self._data:
            unknown = ", ".join(sorted(self._key(k) for k in self._data))
            raise ConfigError(f"config: unknown key(s) {unknown}; see docs/configuration.md")


def parse_config(text: str, *, base_dir: Path, source: str = "config") -> ServerConfig:
    """Parse TOML text into a ServerConfig; relative paths resolve against base_dir."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc

    def path(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base_dir / p)

    root = _Table("", raw)
    data_dir = path(root.string("data_dir", "data"))
    dev_mode = root.boolean("dev_mode", False)

    listen_t = root.table("listen")
    listen = ListenConfig(
        mtls_address=listen_t.string("mtls_address", "127.0.0.1:8443"),
        tls_address=listen_t.optional_string("tls_address"),
        http_address=listen_t.optional_string("http_address"),
        cert_file=path(listen_t.string("cert_file")),
        key_file=path(listen_t.string("key_file")),
        client_ca_files=tuple(path(p) for p in listen_t.strings("client_ca_files")),
        max_message_bytes=listen_t.integer(
            "max_message_bytes", 64 * 1024, maximum=MAX_MESSAGE_BYTES, unit=" (64 MiB)"
        ),
    )
    listen_t.finish()

    domains_t = root.table("trust_domains")
    domain_names = list(domains_t._data)
    trust_domains = []
    for name in domain_names:
        td = domains_t.table(name)
        trust_domains.append(
            TrustDomainConfig(name=name, bundle_files=tuple(path(p) for p in td.strings("bundles")))
        )
        td.finish()
    if not trust_domains:
        raise ConfigError('config: at least one [trust_domains."<name>"] table is required')

    att_t = root.table("attestation")
    mapped = []
    for rule in att_t.tables("mapped_certs"):
        mapped.append(
            MappedCertRuleConfig(
                issuer_ca_file=path(rule.string("issuer_ca_file")),
                dns_san=rule.optional_string("dns_san"),
                subject_cn=rule.optional_string("subject_cn"),
                identity=rule.string("identity"),
            )
        )
        if mapped[-1].dns_san is None and mapped[-1].subject_cn is None:
            raise ConfigError(f"config: {rule.path} needs dns_san or subject_cn")
        rule.finish()
    attestation = AttestationConfig(
        jwt_audience=att_t.string("jwt_audience"),
        jwt_leeway=att_t.duration(
            "jwt_leeway_seconds", 30, maximum=MAX_JWT_LEEWAY_SECONDS, positive=False
        ),
        bundle_reload_interval=att_t.duration(
            "bundle_reload_seconds", 5, maximum=MAX_RELOAD_SECONDS
        ),
        mapped_certs=tuple(mapped),
    )
    att_t.finish()

    policy_t = root.table("policy")
    policy = PolicyConfig(
        file=path(policy_t.string("file")),
        signers=tuple(path(p) for p in policy_t.strings("signers", [])),
        require_signature=policy_t.boolean("require_signature", not dev_mode),
        reload_interval=policy_t.duration("reload_seconds", 5, maximum=MAX_RELOAD_SECONDS),
    )
    policy_t.finish()
    if not policy.require_signature and not dev_mode:
        raise ConfigError(
            "config: policy.require_signature = false is allowed only with dev_mode = true: "
            "production loads only signed policy"
        )

    approvals_t = root.table("approvals")
    ttl = approvals_t.duration("ttl_seconds", 900, maximum=MAX_APPROVAL_TTL_SECONDS)
    recheck = approvals_t.duration("recheck_seconds", 5, maximum=MAX_SAFETY_NET_SECONDS)
    approvals_t.finish()

    revocation_t = root.table("revocation")

    def safety_net(key: str, default: float) -> dt.timedelta:
        return revocation_t.duration(key, default, maximum=MAX_SAFETY_NET_SECONDS)

    revocation = RevocationConfig(
        queue_size=revocation_t.integer("queue_size", 1024, maximum=MAX_REVOCATION_QUEUE),
        heartbeat_interval=safety_net("heartbeat_seconds", 5),
        poll_interval=safety_net("poll_seconds", 1),
        stuck_grace=safety_net("stuck_grace_seconds", 30),
        bans_refresh_interval=safety_net("bans_refresh_seconds", 5),
    )
    revocation_t.finish()

    issuer_t = root.table("issuer")
    algorithm = _ALGORITHMS.get(issuer_t.string("algorithm", "ES256"))
    if algorithm is None:
        raise ConfigError("config: issuer.algorithm must be ES256 or EdDSA")
    issuer = IssuerConfig(
        issuer=issuer_t.string("issuer"),
        algorithm=algorithm,
        key_dir=path(issuer_t.string("key_dir", str(data_dir / "keys"))),
        rotation_grace=issuer_t.duration(
            "rotation_grace_seconds", 120, maximum=MAX_ROTATION_GRACE_SECONDS, positive=False
        ),  # its minimum, below, says why zero is refused
        rotation_check_interval=issuer_t.duration(
            "rotation_check_seconds", 10, maximum=MAX_RELOAD_SECONDS
        ),
    )
    if issuer.rotation_grace < dt.timedelta(seconds=MIN_ROTATION_GRACE_SECONDS):
        raise ConfigError(
            "config: issuer.rotation_grace_seconds must be at least "
            f"{MIN_ROTATION_GRACE_SECONDS} seconds: relying parties may cache the JWKS that long "
            "(it is served with that max-age), and a key that signs before they have it fails "
            "to verify"
        )
    issuer_t.finish()

    store_t = root.table("store")
    dsn = store_t.string("dsn", f"sqlite:///{data_dir / 'taskpass.db'}")
    notify_channel = store_t.string("notify_channel", EVENTS_CHANNEL)
    try:
        check_channel(notify_channel)
    except ValueError as exc:
        raise ConfigError(f"config: store.notify_channel: {exc}") from exc
    store = StoreConfig(dsn=dsn, notify_channel=notify_channel)
    store_t.finish()

    groups_t = root.table("groups")
    groups = {name: groups_t.strings(name) for name in list(groups_t._data)}
    groups_t.finish()

    limits = _limits(root.table("limits"))
    health_t = root.table("health")
    health = HealthConfig(
        check_interval=health_t.duration("check_seconds", 5, maximum=MAX_SAFETY_NET_SECONDS)
    )
    health_t.finish()
    shutdown_t = root.table("shutdown")
    shutdown = ShutdownConfig(
        grace=shutdown_t.duration(
            "grace_seconds", 10, maximum=MAX_SHUTDOWN_GRACE_SECONDS, positive=False
        )
    )
    shutdown_t.finish()
    delegation_t = root.table("delegation")
    delegation = DelegationConfig(
        max_depth=delegation_t.integer("max_depth", 3, maximum=MAX_DELEGATION_DEPTH)
    )
    delegation_t.finish()
    logging_t = root.table("logging")
    access_log = logging_t.string("access_log", "failures")
    if access_log not in ACCESS_LOGS:
        raise ConfigError('config: logging.access_log must be "failures" or "all"')
    logging_config = LoggingConfig(access_log="all" if access_log == "all" else "failures")
    logging_t.finish()

    root.finish()
    return ServerConfig(
        listen=listen,
        trust_domains=tuple(trust_domains),
        attestation=attestation,
        policy=policy,
        issuer=issuer,
        store=store,
        data_dir=data_dir,
        groups=groups,
        dev_mode=dev_mode,
        approvals=ApprovalsConfig(ttl=ttl, recheck=recheck),
        revocation=revocation,
        limits=limits,
        health=health,
        shutdown=shutdown,
        delegation=delegation,
        logging=logging_config,
    )


def _limits(table: _Table) -> LimitsConfig:
    has_burst = "burst" in table._data
    rate = table.take("exchanges_per_second", None)
    if rate is None:
        if has_burst:
            raise ConfigError("config: limits.burst needs limits.exchanges_per_second")
        table.finish()
        return LimitsConfig()
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
        raise ConfigError("config: limits.exchanges_per_second must be a positive number")
    if rate > MAX_EXCHANGES_PER_SECOND:  # float(rate) would overflow on a huge TOML integer
        raise ConfigError(
            f"config: limits.exchanges_per_second must be at most {MAX_EXCHANGES_PER_SECOND}; "
            "to set no limit, leave it out"
        )
    default_burst = min(MAX_BURST, max(1, math.ceil(2 * rate)))  # a default is never refused
    burst = table.integer("burst", default_burst, maximum=MAX_BURST)
    table.finish()
    return LimitsConfig(exchanges_per_second=float(rate), burst=burst)


def load_config(file: Path) -> ServerConfig:
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {file} cannot be read: {exc.strerror}") from exc
    return parse_config(text, base_dir=file.parent.resolve(), source=str(file))


def dev_config(base_dir: Path) -> ServerConfig:
    """The embedded default `make run` uses: dev PKI in certs/dev, data in data/, dev policy."""
    text = resources.files("taskpass.server").joinpath("dev.toml").read_text()
    return parse_config(text, base_dir=base_dir, source="built-in dev config")
