"""A real taskpass server on loopback (real TLS, real SQLite) and clients to talk to it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from taskpass.client import TaskpassClient
from taskpass.server.app import TaskpassServer
from taskpass.server.clock import Clock
from taskpass.server.config import ServerConfig, parse_config
from taskpass.server.pki.builder import Issued
from taskpass.server.policy import signing
from tests.support.pki import EXAMPLE, OTHER, TestPki

POLICY = Path(__file__).parent / "policy.yaml"
AUDIENCE = f"spiffe://{EXAMPLE}/taskpass/server"
ISSUER = "https://taskpass.test"
BILLING_BOT = f"spiffe://{EXAMPLE}/agents/billing-bot"
REPORT_BOT = f"spiffe://{EXAMPLE}/agents/report-bot"
LEGACY_DNS = "batch.legacy.internal"
ADMIN = f"spiffe://{EXAMPLE}/security/admin"
SIDECAR = f"spiffe://{EXAMPLE}/sidecars/payments-sidecar"
REVOCATION_QUEUE = 32  # small, so a subscriber that never reads overflows after a few events
APPROVAL_TTL_SECONDS = 900


def sign_policy(document: bytes, directory: Path, key_file: Path) -> Path:
    """Write `document` as directory/policy.yaml with its .sig made with `key_file`."""
    policy = directory / "policy.yaml"
    policy.write_bytes(document)
    key = signing.load_private_key(key_file)
    signing.signature_path(policy).write_bytes(signing.sign(document, key))
    return policy


def live_pki() -> TestPki:
    """Certificates valid around the real clock: the server under test uses the system clock."""
    return TestPki(dt.datetime.now(dt.UTC).replace(microsecond=0))


@dataclass
class Harness:
    server: TaskpassServer
    pki: TestPki
    directory: Path
    server_ca: Path
    legacy_ca: Issued
    policy_key: Path = Path()
    """The private key of the harness's policy signer (its public key is in policy.signers)."""

    @property
    def policy_file(self) -> Path:
        return self.server.config.policy.file

    @property
    def mtls_target(self) -> str:
        return f"localhost:{self.server.ports.mtls}"

    @property
    def tls_target(self) -> str:
        return f"localhost:{self.server.ports.tls}"

    def client(
        self, leaf: Issued, chain: Sequence[Issued] = (), *, name: str = "c"
    ) -> TaskpassClient:
        """An mTLS client presenting `leaf` (and `chain`) as its certificate."""
        cert, key = TestPki.write_identity(self.directory / "clients", name, leaf, chain)
        return TaskpassClient.from_files(self.mtls_target, ca=self.server_ca, cert=cert, key=key)

    def agent(self, spiffe_id: str = BILLING_BOT) -> TaskpassClient:
        return self.client(self.pki.leaf(spiffe_id), name=spiffe_id.rsplit("/", 1)[-1])

    def bearer(self, token: str) -> TaskpassClient:
        """A server-TLS client sending a JWT-SVID as `authorization: Bearer`."""
        return TaskpassClient.with_jwt_svid(self.tls_target, ca=self.server_ca, token=token)


def write_policy_signer(directory: Path) -> tuple[Path, Path]:
    """A fresh policy signing key pair: (private key file, public key file)."""
    key = signing.generate_key()
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / "policy-signer.key", directory / "policy-signer.pub.pem"
    private.write_bytes(signing.private_pem(key))
    public.write_bytes(signing.public_pem(key))
    return private, public


def harness_config(
    directory: Path,
    pki: TestPki,
    legacy_ca: Issued,
    *,
    policy: Path = POLICY,
    approval_ttl_seconds: float = APPROVAL_TTL_SECONDS,
) -> ServerConfig:
    text = harness_config_text(
        directory, pki, legacy_ca, policy=policy, approval_ttl_seconds=approval_ttl_seconds
    )
    return parse_config(text, base_dir=directory)


def harness_config_text(
    directory: Path,
    pki: TestPki,
    legacy_ca: Issued,
    *,
    policy: Path = POLICY,
    approval_ttl_seconds: float = APPROVAL_TTL_SECONDS,
) -> str:
    """The harness's TOML config (and the files it names, written to `directory`); a
    subprocess `taskpass serve --config` can run it as it is."""
    bundles = pki.write_bundles(directory / "bundles")
    # production rules: only a signed policy loads; the harness signs a copy in its directory
    policy_key, policy_signer = write_policy_signer(directory / "policy-signer")
    signed_policy = sign_policy(policy.read_bytes(), directory, policy_key)
    server_cert, server_key = TestPki.write_identity(directory, "server", pki.server())
    legacy_ca_file = directory / "legacy-ca.pem"
    legacy_ca_file.write_bytes(legacy_ca.pem)
    client_cas = [str(bundles[EXAMPLE][0]), str(bundles[OTHER][0]), str(legacy_ca_file)]

    def paths(items: Sequence[Path]) -> str:
        return ", ".join(f'"{p}"' for p in items)

    text = f"""
data_dir = "{directory / "data"}"

[listen]
mtls_address = "127.0.0.1:0"
tls_address = "127.0.0.1:0"
http_address = "127.0.0.1:0"
cert_file = "{server_cert}"
key_file = "{server_key}"
client_ca_files = [{", ".join(f'"{p}"' for p in client_cas)}]
max_message_bytes = 16384

[trust_domains."{EXAMPLE}"]
bundles = [{paths(bundles[EXAMPLE])}]

[trust_domains."{OTHER}"]
bundles = [{paths(bundles[OTHER])}]

[attestation]
jwt_audience = "{AUDIENCE}"
bundle_reload_seconds = 0.2

[[attestation.mapped_certs]]
issuer_ca_file = "{legacy_ca_file}"
dns_san = "{LEGACY_DNS}"
identity = "legacy-batch"

[policy]
file = "{signed_policy}"
signers = ["{policy_signer}"]
reload_seconds = 0.2

[approvals]
ttl_seconds = {approval_ttl_seconds}

[issuer]
issuer = "{ISSUER}"

[logging]
access_log = "all"

[groups]
admins = ["{ADMIN}"]
subscribers = ["spiffe://{EXAMPLE}/sidecars/*", "{ADMIN}"]
orchestrators = ["spiffe://{EXAMPLE}/orchestrators/*"]
security-approvers = ["spiffe://{EXAMPLE}/humans/approvers/*"]
platform-approvers = ["spiffe://{EXAMPLE}/platform/*"]
auditors = ["{ADMIN}", "spiffe://{EXAMPLE}/security/auditor"]

[revocation]
queue_size = {REVOCATION_QUEUE}
heartbeat_seconds = 0.5
# Longer than any test: a stream that fell behind is read to its end by the test however slow
# the machine is, never cut first (the cut itself is tested on a stopwatch, tests/unit/revocation).
stuck_grace_seconds = 300
"""
    return text


async def start_harness(
    directory: Path,
    pki: TestPki,
    *,
    policy: Path = POLICY,
    approval_ttl_seconds: float = APPROVAL_TTL_SECONDS,
    clock: Clock | None = None,
    groups: Mapping[str, tuple[str, ...]] | None = None,
) -> Harness:
    """`groups`: groups to set instead of the harness's own (the others stay as they are)."""
    legacy_ca = pki.ca("legacy batch CA")
    config = harness_config(
        directory, pki, legacy_ca, policy=policy, approval_ttl_seconds=approval_ttl_seconds
    )
    if groups:
        config = dataclasses.replace(config, groups={**config.groups, **groups})
    server = await TaskpassServer.start(config, clock=clock)
    return Harness(
        server=server,
        pki=pki,
        directory=directory,
        server_ca=directory / "bundles" / f"{EXAMPLE}.pem",
        legacy_ca=legacy_ca,
        policy_key=directory / "policy-signer" / "policy-signer.key",
    )
