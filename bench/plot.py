"""The latency-against-load plot (PNG) written beside results.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # after the backend choice


def _series(points: list[dict[str, Any]], side: str, field: str) -> tuple[list[int], list[float]]:
    return [p["concurrency"] for p in points], [p[side][field] for p in points]


def latency_plot(results: dict[str, Any], path: Path) -> None:
    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4.5))
    curves = [("echo", results["exchange"], "echo", "tab:gray")]
    curves.append(("exchange", results["exchange"], "exchange", "tab:blue"))
    history = results.get("history")
    if history and history["points"]:
        label = f"exchange, {history['credentials']:,} stored"
        curves.append((label, history["points"], "exchange", "tab:red"))
    for label, points, side, color in curves:
        xs, p50 = _series(points, side, "p50_ms")
        _, p99 = _series(points, side, "p99_ms")
        latency.plot(xs, p50, marker="o", color=color, label=f"{label} p50")
        latency.plot(xs, p99, marker="^", linestyle="--", color=color, label=f"{label} p99")
        _, rate = _series(points, side, "throughput")
        throughput.plot(xs, rate, marker="o", color=color, label=label)
    for axis in (latency, throughput):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent calls in flight")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    latency.set_ylabel("latency (ms)")
    latency.set_title("Latency against load (mTLS, same load generator)")
    throughput.set_ylabel("calls per second")
    throughput.set_title("Throughput against load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
