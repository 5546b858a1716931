"""A throwaway deployment for the benchmark: PKI, bundles, policy, and server config files."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from taskpass.server.policy import signing
from tests.support.pki import EXAMPLE, TestPki

POLICY = Path(__file__).resolve().parent.parent / "server/taskpass/server/policy/dev_policy.yaml"
AGENT = f"spiffe://{EXAMPLE}/agents/billing-bot"
AUDIENCE = "payments-api"
ISSUER = "https://taskpass.bench"


@dataclass(frozen=True, slots=True)
class ClientFiles:
    """What an mTLS client presents (the agent's X.509-SVID) and trusts (the server's root)."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Deployment:
    directory: Path
    client: ClientFiles

    def config(self, name: str) -> Path:
        """The server config whose data_dir is `<directory>/<name>` (one store per name)."""
        return self.directory / f"{name}.toml"

    def database(self, name: str) -> Path:
        return self.directory / name / "taskpass.db"


def _signed_policy(directory: Path) -> tuple[Path, Path]:
    """A copy of the dev policy with its detached signature, and the signer's public key:
    production loads only signed policy, and the benchmark runs the production path."""
    key = signing.generate_key()
    policy = directory / "policy.yaml"
    document = POLICY.read_bytes()
    policy.write_bytes(document)
    signing.signature_path(policy).write_bytes(signing.sign(document, key))
    signer = directory / "policy-signer.pem"
    signer.write_bytes(signing.public_pem(key))
    return policy, signer


def create(directory: Path, stores: tuple[str, ...]) -> Deployment:
    """A live PKI (valid around the real clock), a signed policy, one server config per store."""
    pki = TestPki(dt.datetime.now(dt.UTC).replace(microsecond=0))
    bundles = pki.write_bundles(directory / "bundles")
    server_cert, server_key = TestPki.write_identity(directory, "server", pki.server())
    agent_cert, agent_key = TestPki.write_identity(directory, "agent", pki.leaf(AGENT))
    quoted = ", ".join(f'"{p}"' for p in bundles[EXAMPLE])
    policy, signer = _signed_policy(directory)
    for name in stores:
        (directory / f"{name}.toml").write_text(
            f"""
data_dir = "{directory / name}"

[listen]
mtls_address = "127.0.0.1:0"
cert_file = "{server_cert}"
key_file = "{server_key}"
client_ca_files = ["{bundles[EXAMPLE][0]}"]

[trust_domains."{EXAMPLE}"]
bundles = [{quoted}]

[attestation]
jwt_audience = "spiffe://{EXAMPLE}/taskpass/server"

[policy]
file = "{policy}"
signers = ["{signer}"]

[issuer]
issuer = "{ISSUER}"

# The dev policy names these approver groups; nobody in them takes part in the benchmark.
[groups]
security-approvers = ["spiffe://{EXAMPLE}/humans/approvers/*"]
"""
        )
    return Deployment(
        directory=directory,
        client=ClientFiles(ca=bundles[EXAMPLE][0], cert=agent_cert, key=agent_key),
    )
