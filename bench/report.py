"""The printed table: every load figure as a ratio to the echo baseline of the same run."""

from __future__ import annotations

from typing import Any

# DESIGN.md "Performance targets"
THROUGHPUT_TARGET = 0.75
P99_TARGET = 1.5
DECISION_P50_TARGET_US = 30.0
VERIFY_TARGET_PER_S = 10_000


def _mark(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


def point(concurrency: int, echo: dict[str, Any], exchange: dict[str, Any]) -> dict[str, Any]:
    """One load level: both sides, their ratios, and whether the targets are met."""
    throughput_ratio = exchange["throughput"] / echo["throughput"] if echo["throughput"] else 0.0
    p99_ratio = exchange["p99_ms"] / echo["p99_ms"] if echo["p99_ms"] else float("inf")
    exchange_cpu = exchange["server_cpu_us"]
    return {
        "concurrency": concurrency,
        "echo": echo,
        "exchange": exchange,
        "throughput_ratio": throughput_ratio,
        "p99_ratio": p99_ratio,
        # Server CPU per echo over server CPU per exchange: the throughput ratio if the server's
        # CPU alone were the limit. Not a target; it is steadier when neighbours share the CPUs.
        "server_cpu_ratio": echo["server_cpu_us"] / exchange_cpu if exchange_cpu else 0.0,
        "meets_targets": throughput_ratio >= THROUGHPUT_TARGET and p99_ratio <= P99_TARGET,
    }


def _load_rows(title: str, points: list[dict[str, Any]]) -> list[str]:
    lines = [
        title,
        f"  {'conc':>4} {'echo/s':>7} {'exch/s':>7} {'ratio':>5} | {'echo p50':>8} {'p99':>6} "
        f"{'exch p50':>8} {'p99':>6} {'p99 x':>5} | {'server us/call':>14} {'cpu x':>5} |",
    ]
    for p in points:
        e, x = p["echo"], p["exchange"]
        cpu = f"{e['server_cpu_us']:.0f} / {x['server_cpu_us']:.0f}"
        lines.append(
            f"  {p['concurrency']:>4} {e['throughput']:>7.0f} {x['throughput']:>7.0f} "
            f"{p['throughput_ratio']:>5.2f} | {e['p50_ms']:>8.2f} {e['p99_ms']:>6.1f} "
            f"{x['p50_ms']:>8.2f} {x['p99_ms']:>6.1f} {p['p99_ratio']:>5.2f} | "
            f"{cpu:>14} {p['server_cpu_ratio']:>5.2f} | {_mark(p['meets_targets'])}"
        )
    return lines


def table(results: dict[str, Any]) -> str:
    lines = [
        "taskpass bench — ratios against a bare gRPC echo over the same mTLS, same load "
        "generator, same run",
        f"targets: throughput ratio >= {THROUGHPUT_TARGET}, p99 ratio <= {P99_TARGET} "
        "(latencies in ms; medians of the repeats; server us/call: echo / exchange)",
        "",
    ]
    lines += _load_rows(
        "exchange (policy + ES256 signing + durable SQLite) vs echo", results["exchange"]
    )
    history = results.get("history")
    if history and history["points"]:
        lines.append("")
        lines += _load_rows(
            f"the same with {history['credentials']:,} credentials already stored "
            f"(filled in {history['fill_seconds']:.0f} s)",
            history["points"],
        )
    policy = results.get("policy") or []
    if policy:
        lines += ["", "policy decisions (in process)"]
        for p in policy:
            lines.append(
                f"  {p['rules']:>4} rules: {p['per_second']:>9.0f}/s  p50 {p['p50_us']:6.1f} us  "
                f"p99 {p['p99_us']:6.1f} us  "
                f"[{_mark(p['p50_us'] < DECISION_P50_TARGET_US)}: p50 < "
                f"{DECISION_P50_TARGET_US:.0f} us]"
            )
    verify = results.get("verify") or {}
    if verify:
        lines += ["", "offline verification of an issued at+jwt with the JWKS (one core)"]
        for library, v in verify.items():
            lines.append(
                f"  {library:>8}: {v['per_second']:>9.0f}/s  p50 {v['p50_us']:6.1f} us  "
                f"[{_mark(v['per_second'] > VERIFY_TARGET_PER_S)}: > {VERIFY_TARGET_PER_S:,}/s]"
            )
    return "\n".join(lines)
