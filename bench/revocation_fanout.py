"""Revocation fan-out: `python -m bench.revocation_fanout [--subscribers 100 1000 5000]`.

For each N, a fresh real server (bench.serve_taskpass: SQLite, durable commits) runs in its own
process. This process opens N raw Watch streams on it (no SET verification), spread over
ceil(N / --streams-per-channel) mTLS connections (HTTP/2 servers commonly allow ~100 concurrent
streams per connection; 50 by default here), 500 streams at a time, each batch caught up before
the next. Then, for every round: an admin revokes a credential (Revoke), and the time from Revoke
returning to the moment each subscriber has read the event is recorded; the round ends with a
pause (about twice the server's sending time) so that each round starts on an idle server.

Besides the latencies, for each N:
- memory: the server's VmRSS before the connections open, once they are open, and once all N
  streams have caught up (per subscriber: the whole growth over N; per stream and per
  connection: the two steps apart);
- CPU: the server's and this process's CPU time over the measured rounds (heartbeats, every 5 s
  on every stream, included). The subscribers all live in this one Python process, so the
  latencies include its own cost of reading N messages per round; `bottleneck` names the side
  that spent more CPU per round.

Prints one JSON object per N on stdout (or writes them all to --json).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from bench.environment import ClientFiles
from bench.loadgen import percentile
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
WARMUP_ROUNDS = 3
CONNECT_TIMEOUT_S = 120.0
CONNECT_WAVE = 500
ROUND_TIMEOUT_S = 30.0


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


def parse_vmrss(status: str) -> int:
    """Bytes of VmRSS in the text of /proc/<pid>/status."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"VmRSS in an unexpected unit: {line!r}")
            return int(value) * 1024
    raise ValueError("no VmRSS line: is the process gone?")


def rss_bytes(pid: int) -> int:
    return parse_vmrss(Path(f"/proc/{pid}/status").read_text())


def default_rounds(count: int) -> int:
    """Measured rounds for N subscribers: more where a round is cheap, so p99 means something."""
    return max(20, min(100, 200_000 // max(count, 1)))


def settle_seconds(count: int) -> float:
    """The pause after each round: about what the server spends sending N events, twice over."""
    return 0.02 + count * 50e-6


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(percentile(ordered, 0.50), 2),
        "p99_ms": round(percentile(ordered, 0.99), 2),
        "max_ms": round(ordered[-1], 2) if ordered else 0.0,
    }


def memory_summary(
    before: int, connected: int, after: int, count: int, channels: int
) -> dict[str, int]:
    return {
        "rss_before_bytes": before,
        "rss_connected_bytes": connected,
        "rss_caught_up_bytes": after,
        "per_subscriber_bytes": round((after - before) / count),
        "per_stream_bytes": round((after - connected) / count),
        "per_connection_bytes": round((connected - before) / channels),
    }


def cpu_summary(
    *, client_s: float, server_s: float, rounds: int, deliveries: int
) -> dict[str, Any]:
    """CPU over the measured rounds. `bottleneck` is the side that spent more CPU per round:
    the one that would set the pace if each had a core of its own."""
    return {
        "client_ms_per_round": round(client_s / rounds * 1000, 2),
        "server_ms_per_round": round(server_s / rounds * 1000, 2),
        "client_us_per_delivery": round(client_s / deliveries * 1e6, 1),
        "server_us_per_delivery": round(server_s / deliveries * 1e6, 1),
        "bottleneck": "client" if client_s > server_s else "server",
    }


class StreamEnded(RuntimeError):
    """A subscriber's stream ended or failed during the measurement."""


class Subscribers:
    """Watch streams, opened in waves by `connect`; `arrived[seq]` holds when each of them read
    the event `seq`."""

    def __init__(self) -> None:
        self.arrived: dict[int, list[float]] = {}
        self._count = 0
        self._ready = 0
        self._caught_up = asyncio.Event()
        self._waiters: dict[int, asyncio.Event] = {}
        self._failed: StreamEnded | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(
        self, stubs: Sequence[pb_grpc.RevocationServiceAsyncStub], count: int, wave: int
    ) -> None:
        """Open `count` streams over `stubs`, `wave` at a time, each wave caught up before the
        next: grpc-core cancels calls beyond 3,000 waiting for the server to accept them
        (grpc.server.max_pending_requests_hard_limit), so 5,000 at once would measure that."""
        while self._count < count:
            size = min(wave, count - self._count)
            self._caught_up.clear()
            self._tasks += [
                asyncio.create_task(self._follow(stubs[(self._count + n) % len(stubs)]))
                for n in range(size)
            ]
            self._count += size
            await asyncio.wait_for(self._caught_up.wait(), CONNECT_TIMEOUT_S)
            self._check()

    async def _follow(self, stub: pb_grpc.RevocationServiceAsyncStub) -> None:
        ready = False
        try:
            call = stub.Watch(pb.WatchRequest())
            async for response in call:
                item = response.WhichOneof("item")
                if item == "event":
                    times = self.arrived.setdefault(response.event.seq, [])
                    times.append(time.perf_counter())
                    if len(times) == self._count and response.event.seq in self._waiters:
                        self._waiters[response.event.seq].set()
                elif item == "heartbeat" and not ready:
                    # The first heartbeat follows the catch-up: this stream is live from here.
                    ready = True
                    self._ready += 1
                    if self._ready == self._count:
                        self._caught_up.set()
                elif item == "end":
                    raise StreamEnded(f"the server ended a stream: {response.end.reason}")
            raise StreamEnded("a stream ended without EndOfStream")
        except asyncio.CancelledError:
            raise
        except (StreamEnded, grpc.aio.AioRpcError) as error:
            self._fail(error if isinstance(error, StreamEnded) else StreamEnded(str(error)))

    def _fail(self, error: StreamEnded) -> None:
        if self._failed is None:
            self._failed = error
        self._caught_up.set()
        for waiter in self._waiters.values():
            waiter.set()

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed

    async def all_have(self, seq: int) -> list[float]:
        if len(self.arrived.get(seq, ())) < self._count:
            event = self._waiters.setdefault(seq, asyncio.Event())
            await asyncio.wait_for(event.wait(), ROUND_TIMEOUT_S)
        self._check()
        return self.arrived.pop(seq)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def issue(
    agent: cpb_grpc.CredentialServiceAsyncStub, prefix: str, count: int, *, ttl_seconds: int = 900
) -> list[str]:
    """`count` credentials to revoke later, exchanged 20 at a time before anything is measured."""
    jtis: list[str] = []
    for start in range(0, count, 20):
        requests = [
            cpb.ExchangeRequest(
                task=cpb.TaskDescriptor(
                    task_id=f"{prefix}-{n}",
                    audience="payments-api",
                    action="read",
                    sensitivity=cpb.SENSITIVITY_INTERNAL,
                    requested_ttl_seconds=ttl_seconds,
                )
            )
            for n in range(start, min(count, start + 20))
        ]
        responses = await asyncio.gather(*(agent.Exchange(r) for r in requests))
        jtis.extend(r.credential.jti for r in responses)
    return jtis


async def measure(
    server: ServerProcess,
    clients: dict[str, ClientFiles],
    count: int,
    rounds: int,
    streams_per_channel: int,
) -> dict[str, Any]:
    port = server.port
    agent_channel, admin_channel = channel(clients["agent"], port), channel(clients["admin"], port)
    sidecars: list[grpc.aio.Channel] = []
    subscribers: Subscribers | None = None
    try:
        jtis = await issue(
            cpb_grpc.CredentialServiceStub(agent_channel), f"fanout-{count}", WARMUP_ROUNDS + rounds
        )
        admin = pb_grpc.RevocationServiceStub(admin_channel)
        await admin_channel.channel_ready()
        rss_before = rss_bytes(server.pid)

        began = time.perf_counter()
        sidecars = [
            channel(clients["sidecar"], port) for _ in range(math.ceil(count / streams_per_channel))
        ]
        await asyncio.wait_for(
            asyncio.gather(*(c.channel_ready() for c in sidecars)), CONNECT_TIMEOUT_S
        )
        rss_connected = rss_bytes(server.pid)
        subscribers = Subscribers()
        await subscribers.connect(
            [pb_grpc.RevocationServiceStub(c) for c in sidecars], count, CONNECT_WAVE
        )
        connect_s = time.perf_counter() - began
        rss_caught_up = rss_bytes(server.pid)

        last_ms: list[float] = []
        each_ms: list[float] = []
        revoke_ms: list[float] = []
        before_reply = 0
        settle = settle_seconds(count)
        for n, jti in enumerate(jtis):
            if n == WARMUP_ROUNDS:
                client_cpu, server_cpu = time.process_time(), server.cpu_seconds()
            started = time.perf_counter()
            response = await admin.Revoke(pb.RevokeRequest(jti=jti, reason="bench"))
            returned = time.perf_counter()
            arrivals = await subscribers.all_have(response.event.seq)
            # Each round starts on an idle server: the streams finish their own bookkeeping
            # after the last message has left.
            await asyncio.sleep(settle)
            if n < WARMUP_ROUNDS:
                continue
            revoke_ms.append((returned - started) * 1000)
            # The event can overtake the Revoke reply (the fan-out and the reply race): such a
            # subscriber had it when Revoke returned, 0 ms after.
            before_reply += sum(t < returned for t in arrivals)
            last_ms.append(max(0.0, max(arrivals) - returned) * 1000)
            each_ms.extend(max(0.0, t - returned) * 1000 for t in arrivals)
        client_cpu = time.process_time() - client_cpu
        server_cpu = server.cpu_seconds() - server_cpu
    finally:
        if subscribers is not None:
            await subscribers.close()
        for ch in (*sidecars, agent_channel, admin_channel):
            await ch.close(None)
    return {
        "subscribers": count,
        "rounds": rounds,
        "connections": len(sidecars),
        "streams_per_connection": streams_per_channel,
        "connect_wave": CONNECT_WAVE,
        "connect_and_catch_up_s": round(connect_s, 2),
        "last_subscriber_ms": latency_summary(last_ms),
        "per_subscriber_ms": latency_summary(each_ms),
        "revoke_rpc_ms": latency_summary(revoke_ms),
        "deliveries_before_the_reply": before_reply,
        "memory": memory_summary(rss_before, rss_connected, rss_caught_up, count, len(sidecars)),
        "settle_s": round(settle, 3),
        "cpu": cpu_summary(
            client_s=client_cpu, server_s=server_cpu, rounds=rounds, deliveries=rounds * count
        ),
        "cores": os.cpu_count(),
    }


async def measure_all(
    counts: Sequence[int], rounds: int | None, streams_per_channel: int
) -> list[dict[str, Any]]:
    """A fresh server per N (its memory starts from the same place); one event loop for all,
    because grpc.aio binds its channels to the loop."""
    results = []
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="taskpass-fanout-") as tmp:
            directory = Path(tmp)
            config, clients = deploy(directory)
            with ServerProcess("bench.serve_taskpass", config, directory / "server.log") as server:
                result = await measure(
                    server, clients, count, rounds or default_rounds(count), streams_per_channel
                )
        last = result["last_subscriber_ms"]
        print(
            f"  [fan-out] {count} subscribers: last p50 {last['p50_ms']} ms, p99 "
            f"{last['p99_ms']} ms over {result['rounds']} rounds; "
            f"{result['memory']['per_subscriber_bytes'] / 1024:.1f} KiB per subscriber",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.revocation_fanout", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--rounds",
        type=int,
        help="measured revocations per N (default 100; fewer above 2,000: 40 at 5,000)",
    )
    parser.add_argument("--streams-per-channel", type=int, default=STREAMS_PER_CHANNEL)
    parser.add_argument("--json", type=Path, help="write the figures (a JSON list) here")
    args = parser.parse_args(argv)
    if min(args.subscribers) < 1 or (args.rounds is not None and args.rounds < 1):
        parser.error("--subscribers and --rounds must be at least 1")
    if args.streams_per_channel < 1:
        parser.error("--streams-per-channel must be at least 1")
    results = asyncio.run(measure_all(args.subscribers, args.rounds, args.streams_per_channel))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    else:
        for result in results:
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
