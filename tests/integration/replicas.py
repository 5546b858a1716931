"""Several real `taskpass serve` processes sharing one PostgreSQL schema, as a deployment runs.

    async with fresh_schema() as dsn, start_cluster(tmp_path, pki, dsn, count=3) as cluster:
        async with cluster.agent(0) as agent:          # an mTLS client of replica 0
            ...
        cluster.replicas[1].kill()                     # kill -9

Each replica is its own process with its own signing key (its own key_dir) and its own ports;
they share the PKI, the signed policy, the groups and the database. Ports are picked by the OS
(`127.0.0.1:0`) and read from the server's "taskpass serving" log line. Every wait is bounded,
and every process is killed when the block ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from taskpass.client import TaskpassClient
from tests.integration.governance import POLICY
from tests.integration.harness import (
    ADMIN,
    AUDIENCE,
    ISSUER,
    sign_policy,
    write_policy_signer,
)
from tests.support.pki import EXAMPLE, TestPki
from tests.support.postgres import with_params

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
"""How long a replica may take to print that it serves (several start at once on a busy box)."""
STOP_TIMEOUT_S = 10.0
LOG_LINES = 200
_SERVING = re.compile(r"taskpass serving: mTLS (\d+), TLS (\d+), HTTP (\d+)")


@dataclass
class Replica:
    """One `taskpass serve` process."""

    name: str
    directory: Path
    process: asyncio.subprocess.Process
    mtls_port: int = 0
    tls_port: int = 0
    http_port: int = 0
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_LINES))
    _drain: asyncio.Task[None] | None = None

    @property
    def mtls_target(self) -> str:
        return f"localhost:{self.mtls_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    application_name: str = ""
    """What its PostgreSQL sessions call themselves (pg_stat_activity.application_name),
    unique to this replica of this cluster: test runs may share the server."""

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def kill(self) -> None:
        """kill -9: no shutdown, no goodbye to the database."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)

    async def exited(self, timeout: float) -> bool:
        """Wait (bounded) until the process is gone. Polls the return code: on Python 3.11,
        `Process.wait()` also waits for the stderr pipe to close, which under load can lag."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return not self.running

    async def stop(self) -> None:
        self.kill()
        with contextlib.suppress(ProcessLookupError):
            await self.exited(STOP_TIMEOUT_S)
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain

    def tail(self, lines: int = 30) -> str:
        return "\n".join(list(self.log)[-lines:])


@dataclass
class Cluster:
    directory: Path
    pki: TestPki
    dsn: str
    replicas: list[Replica]
    server_ca: Path
    _identities: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def identity(self, spiffe_id: str) -> tuple[Path, Path]:
        """The X.509-SVID (cert file, key file) of `spiffe_id`: one per identity, so every
        client of it presents the same certificate (and its tokens bind to that one)."""
        if spiffe_id not in self._identities:
            name = spiffe_id.rsplit("/", 1)[-1]
            self._identities[spiffe_id] = TestPki.write_identity(
                self.directory / "clients", name, self.pki.leaf(spiffe_id)
            )
        return self._identities[spiffe_id]

    def client(
        self, replica: int | Replica, spiffe_id: str, *, timeout: float = 10.0
    ) -> TaskpassClient:
        """An mTLS client of `replica`, presenting an X.509-SVID for `spiffe_id`."""
        target = self.replicas[replica] if isinstance(replica, int) else replica
        cert, key = self.identity(spiffe_id)
        return TaskpassClient.from_files(
            target.mtls_target, ca=self.server_ca, cert=cert, key=key, timeout=timeout
        )

    def admin(self, replica: int | Replica) -> TaskpassClient:
        return self.client(replica, ADMIN)

    def connection_args(self, replica: int | Replica, spiffe_id: str) -> list[str]:
        """`--server ... --ca ... --cert ... --key ...` for the taskpass CLI."""
        target = self.replicas[replica] if isinstance(replica, int) else replica
        cert, key = self.identity(spiffe_id)
        return [
            "--server",
            target.mtls_target,
            "--ca",
            str(self.server_ca),
            "--cert",
            str(cert),
            "--key",
            str(key),
        ]

    async def stop(self) -> None:
        await asyncio.gather(*(replica.stop() for replica in self.replicas))


def _paths(items: Sequence[Path]) -> str:
    return ", ".join(f'"{p}"' for p in items)


def write_shared_files(directory: Path, pki: TestPki, *, policy: Path = POLICY) -> dict[str, str]:
    """What every replica shares, written once: bundles, server SVID, the signed policy."""
    bundles = pki.write_bundles(directory / "bundles")
    policy_key, policy_signer = write_policy_signer(directory / "policy-signer")
    signed_policy = sign_policy(policy.read_bytes(), directory, policy_key)
    server_cert, server_key = TestPki.write_identity(directory, "server", pki.server())
    return {
        "bundles": _paths(bundles[EXAMPLE]),
        "client_cas": _paths([bundles[EXAMPLE][0]]),
        "cert": str(server_cert),
        "key": str(server_key),
        "policy": str(signed_policy),
        "signer": str(policy_signer),
    }


def replica_config(directory: Path, shared: dict[str, str], *, dsn: str) -> str:
    """One replica's config: its own data_dir and key_dir; all else shared. The safety polls
    (the revocation fan-out's, a waiting exchange's re-read of its approval) are slowed to a
    minute, so whatever crosses replicas within a test came by LISTEN/NOTIFY (or the re-read
    after a reconnect), not by polling."""
    return f"""
data_dir = "{directory / "data"}"

[listen]
mtls_address = "127.0.0.1:0"
tls_address = "127.0.0.1:0"
http_address = "127.0.0.1:0"
cert_file = "{shared["cert"]}"
key_file = "{shared["key"]}"
client_ca_files = [{shared["client_cas"]}]

[trust_domains."{EXAMPLE}"]
bundles = [{shared["bundles"]}]

[attestation]
jwt_audience = "{AUDIENCE}"

[policy]
file = "{shared["policy"]}"
signers = ["{shared["signer"]}"]

[issuer]
issuer = "{ISSUER}"
key_dir = "{directory / "keys"}"

[store]
dsn = "{dsn}"

[groups]
admins = ["{ADMIN}"]
subscribers = ["spiffe://{EXAMPLE}/sidecars/*", "{ADMIN}"]
security-approvers = ["spiffe://{EXAMPLE}/humans/approvers/*"]
platform-approvers = ["spiffe://{EXAMPLE}/platform/*"]
auditors = ["{ADMIN}"]

[approvals]
recheck_seconds = 60

[revocation]
heartbeat_seconds = 0.5
poll_seconds = 60
"""


async def _spawn(name: str, directory: Path, config: Path, application_name: str) -> Replica:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taskpass.server.cli.main",
        "serve",
        "--config",
        str(config),
        "--log-level",
        "info",
        "--log-format",
        "text",
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return Replica(
        name=name, directory=directory, process=process, application_name=application_name
    )


async def _serve_log(replica: Replica, serving: asyncio.Future[None]) -> None:
    """Keep reading the replica's stderr (a full pipe would block it); note its ports."""
    stream = replica.process.stderr
    assert stream is not None
    with (replica.directory / "server.log").open("a") as file:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            replica.log.append(text)
            file.write(text + "\n")
            match = _SERVING.search(text)
            if match and not serving.done():
                replica.mtls_port, replica.tls_port, replica.http_port = map(int, match.groups())
                serving.set_result(None)
    if not serving.done():
        serving.set_exception(RuntimeError(f"replica {replica.name} exited before serving"))


async def start_replica(directory: Path, shared: dict[str, str], dsn: str, name: str) -> Replica:
    """Start one replica and wait (bounded) until it serves."""
    home = directory / name
    home.mkdir(parents=True, exist_ok=True)
    config = home / "taskpass.toml"
    application_name = f"taskpass-{name}-{secrets.token_hex(4)}"
    config.write_text(
        replica_config(home, shared, dsn=with_params(dsn, application_name=application_name))
    )
    replica = await _spawn(name, home, config, application_name)
    serving: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    replica._drain = asyncio.create_task(_serve_log(replica, serving))
    try:
        await asyncio.wait_for(serving, START_TIMEOUT_S)
    except BaseException as exc:
        await replica.stop()
        raise RuntimeError(f"replica {name} did not start serving:\n{replica.tail()}") from exc
    return replica


@contextlib.asynccontextmanager
async def start_cluster(
    directory: Path, pki: TestPki, dsn: str, *, count: int = 3
) -> AsyncIterator[Cluster]:
    """`count` replicas on `dsn` (a fresh schema), started together; all killed at the end."""
    shared = write_shared_files(directory / "shared", pki)
    names = [chr(ord("a") + n) for n in range(count)]
    started = await asyncio.gather(
        *(start_replica(directory, shared, dsn, name) for name in names),
        return_exceptions=True,
    )
    replicas = [r for r in started if isinstance(r, Replica)]
    cluster = Cluster(
        directory=directory,
        pki=pki,
        dsn=dsn,
        replicas=replicas,
        server_ca=directory / "shared" / "bundles" / f"{EXAMPLE}.pem",
    )
    try:
        failures = [r for r in started if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        yield cluster
    finally:
        await cluster.stop()
