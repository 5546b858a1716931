"""The load generator, the same for the echo baseline and the exchange: its own process.

`python -m bench.loadgen --method exchange|echo ...` opens `--channels` mTLS connections, keeps
`--concurrency` unary calls in flight (each worker issues its next call when the last returns),
discards the `--warmup` seconds, then measures for `--duration` seconds and prints one JSON line:
completions per second and latency percentiles of the calls that completed in the window.

Both methods send the same bytes: a serialized ExchangeRequest with a task_id never used before
(so every exchange is real work: a new task and credential row). Responses are not decoded
(the echo's would not be an ExchangeResponse); one exchange response is decoded at the end to
check that the server really issued credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench.environment import AUDIENCE
from bench.serve_echo import METHOD as ECHO_METHOD
from taskpass._proto.v1 import credential_pb2 as pb

EXCHANGE_METHOD = "/taskpass.v1.CredentialService/Exchange"


def request_bytes(task_id: str) -> bytes:
    task = pb.TaskDescriptor(
        task_id=task_id,
        audience=AUDIENCE,
        action="read",
        tool="bench",
        sensitivity=pb.SENSITIVITY_INTERNAL,
        environment="staging",
        requested_ttl_seconds=300,
        reason="load test",
    )
    return pb.ExchangeRequest(task=task).SerializeToString()


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.ca, private_key=args.key, certificate_chain=args.cert
    )
    # A local subchannel pool: otherwise channels with equal arguments share one connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.secure_channel(args.target, credentials, options)
        for _ in range(min(args.channels, args.concurrency))
    ]
    method = EXCHANGE_METHOD if args.method == "exchange" else ECHO_METHOD
    stubs = [channel.unary_unary(method, None, None) for channel in channels]  # bytes in/out
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)

    latencies: list[float] = []
    completed = [0]  # every call that returned, warm-up and tail included: for CPU per call
    errors: collections.Counter[str] = collections.Counter()
    last_response: list[bytes] = []
    begin = time.perf_counter()
    window_start = begin + args.warmup
    window_end = window_start + args.duration

    async def worker(index: int) -> None:
        stub = stubs[index % len(stubs)]
        sequence = 0
        while True:
            started = time.perf_counter()
            if started >= window_end:
                return
            payload = request_bytes(f"{args.prefix}-{index}-{sequence}")
            sequence += 1
            failure = None
            try:
                response = await stub(payload, timeout=30)
            except grpc.aio.AioRpcError as error:
                failure = error.code().name
            ended = time.perf_counter()
            completed[0] += 1
            if window_start <= ended <= window_end:
                if failure is None:
                    latencies.append(ended - started)
                else:
                    errors[failure] += 1
            if failure is None and not last_response:
                last_response.append(response)

    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    for channel in channels:
        await channel.close(None)

    issued = None
    if args.method == "exchange" and last_response:
        issued = bool(pb.ExchangeResponse.FromString(last_response[0]).credential.token)
    latencies.sort()
    return {
        "method": args.method,
        "concurrency": args.concurrency,
        "channels": len(channels),
        "seconds": args.duration,
        "calls": len(latencies),
        "all_calls": completed[0],
        "throughput": len(latencies) / args.duration,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": dict(errors),
        "credential_issued": issued,
    }


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--ca", type=_read, required=True, help="PEM file")
    parser.add_argument("--cert", type=_read, required=True, help="PEM file")
    parser.add_argument("--key", type=_read, required=True, help="PEM file")
    parser.add_argument("--method", choices=["exchange", "echo"], required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--prefix", default="bench", help="task_id prefix, unique per run")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
