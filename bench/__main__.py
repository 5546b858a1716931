"""`python -m bench` (`make bench`): run every benchmark, write results.json + a PNG, print a table.

python -m bench                  # the full run (about 4 minutes on a 2-core machine)
python -m bench --quick          # a smoke run (under a minute): fewer levels, short windows
python -m bench --history 0      # skip the large-history run
python -m bench --cprofile bench/exchange.prof   # profile the exchange server process
python -m bench --fanout 1000 --skip-replicas     # one fan-out size, no PostgreSQL part
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import environment, history, micro, report
from bench.processes import ROOT, ServerProcess, load

HERE = Path(__file__).resolve().parent
FIELDS = (
    "throughput",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "server_cpu_us",
    "loop_cpu_us",
    "client_cpu_us",
)
FANOUT_TIMEOUT_S = 900
REPLICAS_TIMEOUT_S = 300


def _levels(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _counts(text: str) -> list[int]:
    counts = _levels(text)
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"give positive counts, e.g. 100,1000 (not {text!r})")
    return counts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short windows, 2 levels, 100k history")
    p.add_argument("--levels", type=_levels, help="concurrency levels (default 1,4,16,64)")
    p.add_argument("--ratio-levels", type=_levels, default=[16, 64], help="levels judged")
    p.add_argument("--duration", type=float, help="measured seconds per run (default 4)")
    p.add_argument("--warmup", type=float, help="discarded seconds per run (default 1)")
    p.add_argument("--repeats", type=int, help="runs per level and side; medians (default 2)")
    p.add_argument("--channels", type=int, default=4, help="connections per load generator")
    p.add_argument(
        "--history",
        type=int,
        help="credentials stored before the history run (default 1,000,000; 0 skips it)",
    )
    p.add_argument("--skip-micro", action="store_true", help="skip policy/verification figures")
    p.add_argument(
        "--fanout",
        type=_counts,
        help="fan-out subscriber counts (default 100,1000,5000,10000; --quick: 100,1000)",
    )
    p.add_argument(
        "--fanout-rounds",
        type=int,
        help="measured revocations per fan-out size (default 100, fewer above 2,000; quick 20)",
    )
    p.add_argument(
        "--skip-layers",
        action="store_true",
        help="skip 'where the ratio goes' (the server with parts cut out)",
    )
    p.add_argument("--skip-fanout", action="store_true", help="skip the revocation fan-out")
    p.add_argument(
        "--replica-rounds",
        type=int,
        help="measured revocations across replicas (default 300; --quick: 50)",
    )
    p.add_argument(
        "--skip-replicas",
        action="store_true",
        help="skip cross-replica propagation (skipped anyway when PostgreSQL is not reachable)",
    )
    p.add_argument("--out", type=Path, default=HERE / "results.json")
    p.add_argument("--plot", type=Path, default=HERE / "results.png")
    p.add_argument("--cprofile", type=Path, help="cProfile the exchange server into this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, dbs)")
    return p


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {
        "levels": args.levels or ([16, 64] if quick else [1, 4, 16, 64]),
        "ratio_levels": args.ratio_levels,
        "duration_s": args.duration or (2.0 if quick else 4.0),
        "warmup_s": args.warmup if args.warmup is not None else (0.5 if quick else 1.0),
        "repeats": args.repeats or (1 if quick else 2),
        "channels": args.channels,
        "history_credentials": (
            args.history if args.history is not None else (100_000 if quick else 1_000_000)
        ),
        "micro_calls": 5_000 if quick else 20_000,
        "fanout_subscribers": args.fanout or ([100, 1000] if quick else [100, 1000, 5000, 10000]),
        "fanout_rounds": args.fanout_rounds or (20 if quick else None),
        "replica_rounds": args.replica_rounds or (50 if quick else 300),
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {f: statistics.median(r[f] for r in runs) for f in FIELDS}
    merged["calls"] = sum(r["calls"] for r in runs)
    errors: dict[str, int] = {}
    for r in runs:
        for code, count in r["errors"].items():
            errors[code] = errors.get(code, 0) + count
    merged["errors"] = errors
    merged["runs"] = [{f: r[f] for f in FIELDS} for r in runs]
    return merged


def _load_points(
    echo: ServerProcess,
    exchange: ServerProcess,
    client: environment.ClientFiles,
    settings: dict[str, Any],
    levels: list[int],
    tag: str,
) -> list[dict[str, Any]]:
    points = []
    for concurrency in levels:
        runs: dict[str, list[dict[str, Any]]] = {"echo": [], "exchange": []}
        for repeat in range(settings["repeats"]):
            # Alternate the two sides so drift on a shared machine hits both alike.
            for method, server in (("echo", echo), ("exchange", exchange)):
                result = load(
                    server=server,
                    client=client,
                    method=method,
                    concurrency=concurrency,
                    channels=settings["channels"],
                    duration=settings["duration_s"],
                    warmup=settings["warmup_s"],
                    prefix=f"{tag}-c{concurrency}-r{repeat}",
                )
                if method == "exchange" and result["credential_issued"] is not True:
                    raise RuntimeError(f"the exchange issued no credential: {result}")
                runs[method].append(result)
        point = report.point(concurrency, _median(runs["echo"]), _median(runs["exchange"]))
        print(
            f"  [{tag}] c={concurrency}: echo {point['echo']['throughput']:.0f}/s, exchange "
            f"{point['exchange']['throughput']:.0f}/s, ratio {point['throughput_ratio']:.2f}",
            file=sys.stderr,
            flush=True,
        )
        points.append(point)
    return points


# (name, server module, extra argv, what it is): "where the ratio goes", cheapest first.
LAYERS = (
    ("echo", "bench.serve_echo", (), "bare gRPC echo (the baseline)"),
    ("reply", "bench.serve_taskpass", ("--cut", "reply"), "Exchange: canned reply"),
    ("store", "bench.serve_taskpass", ("--cut", "store"), "Exchange: all but the durable write"),
    ("full", "bench.serve_taskpass", (), "Exchange: the real thing"),
)


def _layers(
    deployment: environment.Deployment, settings: dict[str, Any], work: Path
) -> dict[str, Any]:
    """The same load against the real server with parts cut out (bench/cuts.py), at the highest
    judged concurrency, runs interleaved: what each part of an exchange costs under load."""
    concurrency = max(settings["ratio_levels"])
    print(f"layers: the server with parts cut out, c={concurrency}", file=sys.stderr, flush=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in LAYERS}
    servers: dict[str, ServerProcess] = {}
    try:
        for name, module, extra, _ in LAYERS:
            servers[name] = ServerProcess(
                module, deployment.config(f"layer-{name}"), work / f"layer-{name}.log", *extra
            )
        for repeat in range(settings["repeats"]):
            for name, server in servers.items():
                runs[name].append(
                    load(
                        server=server,
                        client=deployment.client,
                        method="echo" if name == "echo" else "exchange",
                        concurrency=concurrency,
                        channels=settings["channels"],
                        duration=settings["duration_s"],
                        warmup=settings["warmup_s"],
                        prefix=f"layer-{name}-r{repeat}",
                    )
                )
    finally:
        for server in servers.values():
            server.stop()
    return report.layers(
        concurrency, [(name, what, _median(runs[name])) for name, *_, what in LAYERS]
    )


def _run_module(module: str, argv: list[str], timeout: float) -> str | None:
    """`python -m module argv...`, its stderr passed through as it comes; None when it exits 0,
    else why it did not (with the end of its stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(timeout, proc.kill)  # never let one part hang the whole run
    watchdog.start()
    tail: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            tail = [*tail[-4:], " ".join(line.split())]
        code = proc.wait()
    finally:
        watchdog.cancel()
    if code == 0:
        return None
    killed = f"killed after {timeout:.0f} s; " if code == -9 else ""
    return f"{module} {killed}exited with {code}: {' | '.join(tail)}"


def _fanout(settings: dict[str, Any], work: Path) -> dict[str, Any]:
    counts = settings["fanout_subscribers"]
    print(f"fan-out: {', '.join(map(str, counts))} subscribers", file=sys.stderr, flush=True)
    out = work / "fanout.json"
    argv = ["--subscribers", *map(str, counts), "--json", str(out)]
    if settings["fanout_rounds"]:
        argv += ["--rounds", str(settings["fanout_rounds"])]
    failure = _run_module("bench.revocation_fanout", argv, FANOUT_TIMEOUT_S)
    if failure is not None:
        return {"status": "failed", "reason": failure}
    levels = [report.fanout_level(level) for level in json.loads(out.read_text())]
    return {"status": "measured", "levels": levels}


def _replicas(settings: dict[str, Any], work: Path) -> dict[str, Any]:
    from bench import replicas  # imports the test harness; only when this part runs

    unreachable = replicas.unreachable()
    if unreachable is not None:
        reason = f"{unreachable}; set TASKPASS_TEST_PG_DSN or start PostgreSQL"
        print(f"replicas: SKIPPED: {reason}", file=sys.stderr, flush=True)
        return {"status": "skipped", "reason": reason}
    print("replicas: cross-replica propagation on PostgreSQL", file=sys.stderr, flush=True)
    out = work / "replicas.json"
    argv = ["--rounds", str(settings["replica_rounds"]), "--json", str(out)]
    failure = _run_module("bench.replicas", argv, REPLICAS_TIMEOUT_S)
    if failure is not None:
        return {"status": "failed", "reason": failure}
    return {"status": "measured", **report.replicas_judged(json.loads(out.read_text()))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = _settings(args)
    work = Path(tempfile.mkdtemp(prefix="taskpass-bench-"))
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": settings,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        layer_stores = tuple(f"layer-{name}" for name, *_ in LAYERS)
        deployment = environment.create(work, ("fresh", "history", *layer_stores))
        if not args.skip_micro:
            print("micro: policy decisions, offline verification", file=sys.stderr, flush=True)
            calls = settings["micro_calls"]
            results["policy"] = [micro.policy_decisions(n, calls) for n in (10, 100)]
            results["verify"] = micro.verifications(work / "verify-keys", calls // 4)

        print("load: echo vs exchange, empty store", file=sys.stderr, flush=True)
        profile = ("--cprofile", str(args.cprofile.resolve())) if args.cprofile else ()
        with (
            ServerProcess(
                "bench.serve_echo", deployment.config("fresh"), work / "echo.log"
            ) as echo,
            ServerProcess(
                "bench.serve_taskpass", deployment.config("fresh"), work / "fresh.log", *profile
            ) as exchange,
        ):
            results["exchange"] = _load_points(
                echo, exchange, deployment.client, settings, settings["levels"], "fresh"
            )
        results["writer"] = exchange.final

        count = settings["history_credentials"]
        results["history"] = None
        if count > 0:
            print(f"history: storing {count:,} credentials", file=sys.stderr, flush=True)
            fill_seconds = history.fill(deployment.database("history"), count)
            with (
                ServerProcess(
                    "bench.serve_echo", deployment.config("history"), work / "echo-history.log"
                ) as echo,
                ServerProcess(
                    "bench.serve_taskpass", deployment.config("history"), work / "history.log"
                ) as exchange,
            ):
                points = _load_points(
                    echo, exchange, deployment.client, settings, settings["ratio_levels"], "hist"
                )
            results["history"] = {
                "credentials": count,
                "fill_seconds": fill_seconds,
                "points": points,
            }

        results["layers"] = None if args.skip_layers else _layers(deployment, settings, work)
        results["fanout"] = (
            {"status": "skipped", "reason": "--skip-fanout"}
            if args.skip_fanout
            else _fanout(settings, work)
        )
        results["replicas"] = (
            {"status": "skipped", "reason": "--skip-replicas"}
            if args.skip_replicas
            else _replicas(settings, work)
        )
    finally:
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    began = time.perf_counter()
    results = run(args)
    results["seconds"] = round(time.perf_counter() - began, 1)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    from bench.plot import latency_plot  # matplotlib is slow to import; only when needed

    latency_plot(results, args.plot)
    print(report.table(results))
    print(f"\n{args.out} and {args.plot} written in {results['seconds']:.0f} s")
    failed = [key for key in ("fanout", "replicas") if results[key]["status"] == "failed"]
    if failed:
        print(f"FAILED: {', '.join(failed)} (see above); the other figures stand", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
