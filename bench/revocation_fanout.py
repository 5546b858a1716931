"""Revocation fan-out latency: `python -m bench.revocation_fanout [--subscribers 100 1000]`.

The real server runs in its own process (bench.serve_taskpass, SQLite, durable commits). This
process opens N Watch streams (sharing one channel per 50), then repeatedly: exchanges a
credential, revokes it as an admin (Revoke), and times from Revoke returning to the moment the
last of the N subscribers has read the event. The subscribers are raw gRPC streams (no SET
verification), all in this one Python process, so the figures include this process's own cost
of reading N messages; the machine's core count is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from bench.environment import ClientFiles
from bench.processes import ServerProcess
from taskpass._proto.v1 import credential_pb2 as cpb
from taskpass._proto.v1 import credential_pb2_grpc as cpb_grpc
from taskpass._proto.v1 import revocation_pb2 as pb
from taskpass._proto.v1 import revocation_pb2_grpc as pb_grpc
from tests.support.pki import EXAMPLE, TestPki

POLICY = Path(__file__).resolve().parent.parent / "tests/integration/policy.yaml"
AGENT = f"spiffe://{EXAMPLE}/agents/billing-bot"
ADMIN = f"spiffe://{EXAMPLE}/security/admin"
SIDECAR = f"spiffe://{EXAMPLE}/sidecars/bench"
STREAMS_PER_CHANNEL = 50


def deploy(directory: Path) -> tuple[Path, dict[str, ClientFiles]]:
    pki = TestPki(dt.datetime.now(dt.UTC).replace(microsecond=0))
    bundles = pki.write_bundles(directory / "bundles")
    cert, key = TestPki.write_identity(directory, "server", pki.server())
    ca = bundles[EXAMPLE][0]
    clients = {}
    for name, spiffe_id in (("agent", AGENT), ("admin", ADMIN), ("sidecar", SIDECAR)):
        leaf_cert, leaf_key = TestPki.write_identity(directory, name, pki.leaf(spiffe_id))
        clients[name] = ClientFiles(ca=ca, cert=leaf_cert, key=leaf_key)
    config = directory / "taskpass.toml"
    config.write_text(
        f"""
data_dir = "{directory / "data"}"
dev_mode = true

[listen]
mtls_address = "127.0.0.1:0"
cert_file = "{cert}"
key_file = "{key}"
client_ca_files = ["{ca}"]

[trust_domains."{EXAMPLE}"]
bundles = [{", ".join(f'"{p}"' for p in bundles[EXAMPLE])}]

[attestation]
jwt_audience = "spiffe://{EXAMPLE}/taskpass/server"

[policy]
file = "{POLICY}"

[issuer]
issuer = "https://taskpass.bench"

[groups]
admins = ["{ADMIN}"]
subscribers = ["spiffe://{EXAMPLE}/sidecars/*"]
security-approvers = ["spiffe://{EXAMPLE}/humans/approvers/*"]
"""
    )
    return config, clients


def channel(files: ClientFiles, port: int) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=files.ca.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
    # A local subchannel pool: otherwise channels with equal arguments share one connection.
    return grpc.aio.secure_channel(
        f"localhost:{port}", credentials, options=[("grpc.use_local_subchannel_pool", 1)]
    )


class Subscribers:
    """N Watch streams; `arrived[seq]` is when each of them read the event `seq`."""

    def __init__(self, channels: list[grpc.aio.Channel], count: int) -> None:
        self.arrived: dict[int, list[float]] = {}
        self._ready = 0
        self._caught_up = asyncio.Event()
        self._count = count
        self._waiters: dict[int, asyncio.Event] = {}
        self._tasks = [
            asyncio.create_task(
                self._follow(pb_grpc.RevocationServiceStub(channels[n % len(channels)]))
            )
            for n in range(count)
        ]

    async def _follow(self, stub: pb_grpc.RevocationServiceStub) -> None:
        call = stub.Watch(pb.WatchRequest())
        async for response in call:  # type: ignore[attr-defined]  # an aio call in the stubs' sync shape
            item = response.WhichOneof("item")
            if item == "heartbeat" and not self._caught_up.is_set():
                self._ready += 1
                if self._ready == self._count:
                    self._caught_up.set()
            elif item == "event":
                times = self.arrived.setdefault(response.event.seq, [])
                times.append(time.perf_counter())
                if len(times) == self._count and response.event.seq in self._waiters:
                    self._waiters[response.event.seq].set()

    async def ready(self) -> None:
        await asyncio.wait_for(self._caught_up.wait(), 120)

    async def all_have(self, seq: int) -> list[float]:
        if len(self.arrived.get(seq, ())) < self._count:
            event = self._waiters.setdefault(seq, asyncio.Event())
            await asyncio.wait_for(event.wait(), 30)
        return self.arrived[seq]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(
    port: int, clients: dict[str, ClientFiles], count: int, rounds: int
) -> dict[str, object]:
    sidecars = [channel(clients["sidecar"], port) for _ in range(-(-count // STREAMS_PER_CHANNEL))]
    agent_channel, admin_channel = channel(clients["agent"], port), channel(clients["admin"], port)
    agent = cpb_grpc.CredentialServiceStub(agent_channel)
    admin = pb_grpc.RevocationServiceStub(admin_channel)
    subscribers = Subscribers(sidecars, count)
    try:
        await subscribers.ready()
        revoke_ms: list[float] = []
        last_ms: list[float] = []
        each_ms: list[float] = []
        for n in range(rounds):
            task = cpb.TaskDescriptor(
                task_id=f"fanout-{count}-{n}",
                audience="payments-api",
                action="read",
                sensitivity=cpb.SENSITIVITY_INTERNAL,
                requested_ttl_seconds=300,
            )
            issued = await agent.Exchange(cpb.ExchangeRequest(task=task))
            started = time.perf_counter()
            response = await admin.Revoke(pb.RevokeRequest(jti=issued.credential.jti))
            returned = time.perf_counter()
            arrivals = await subscribers.all_have(response.event.seq)
            revoke_ms.append((returned - started) * 1000)
            last_ms.append((max(arrivals) - returned) * 1000)
            each_ms.extend((t - returned) * 1000 for t in arrivals)
    finally:
        await subscribers.close()
        for ch in (*sidecars, agent_channel, admin_channel):
            await ch.close(None)
    return {
        "subscribers": count,
        "rounds": rounds,
        "revoke_rpc_ms_p50": round(statistics.median(revoke_ms), 2),
        "last_subscriber_after_revoke_returns_ms_p50": round(statistics.median(last_ms), 2),
        "last_subscriber_after_revoke_returns_ms_max": round(max(last_ms), 2),
        "per_subscriber_ms_p50": round(percentile(each_ms, 50), 2),
        "per_subscriber_ms_p99": round(percentile(each_ms, 99), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskpass-fanout-") as tmp:
        directory = Path(tmp)
        config, clients = deploy(directory)
        with ServerProcess("bench.serve_taskpass", config, directory / "server.log") as server:
            asyncio.run(measure_all(server.port, clients, args.subscribers, args.rounds))
    return 0


async def measure_all(
    port: int, clients: dict[str, ClientFiles], counts: list[int], rounds: int
) -> None:
    # One event loop for every measurement: grpc.aio binds its channels to the loop.
    for count in counts:
        result = await measure(port, clients, count, rounds)
        print(json.dumps({**result, "cores": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
