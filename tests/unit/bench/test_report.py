"""Ratios and targets of one load level, and the load generator's percentile."""

from __future__ import annotations

from typing import Any

import pytest

from bench import report
from bench.loadgen import percentile


def _side(throughput: float, p99: float) -> dict[str, Any]:
    return {
        "throughput": throughput,
        "p50_ms": 1.0,
        "p90_ms": 1.0,
        "p99_ms": p99,
        "server_cpu_us": 100.0,
        "loop_cpu_us": 80.0,
    }


@pytest.mark.parametrize(
    ("exchange", "meets"),
    [
        pytest.param(_side(750, 15.0), True, id="exactly-on-both-targets"),
        pytest.param(_side(749, 15.0), False, id="throughput-ratio-too-low"),
        pytest.param(_side(900, 15.1), False, id="p99-ratio-too-high"),
    ],
)
def test_point_judges_exchange_against_the_echo_of_the_same_level(
    exchange: dict[str, Any], meets: bool
) -> None:
    point = report.point(16, _side(1000, 10.0), exchange)

    assert point["throughput_ratio"] == exchange["throughput"] / 1000
    assert point["p99_ratio"] == exchange["p99_ms"] / 10.0
    assert point["meets_targets"] is meets


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        pytest.param(0.5, 50.0, id="p50"),
        pytest.param(0.99, 99.0, id="p99"),
        pytest.param(1.0, 100.0, id="max"),
    ],
)
def test_percentile_is_nearest_rank(fraction: float, expected: float) -> None:
    assert percentile([float(v) for v in range(1, 101)], fraction) == expected


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 0.99) == 0.0


def _layer(throughput: float, cpu_us: float) -> dict[str, Any]:
    return {**_side(throughput, 10.0), "server_cpu_us": cpu_us, "errors": {}}


def test_layers_are_judged_against_the_first_side_and_printed_with_their_added_cost() -> None:
    part = report.layers(
        64,
        [
            ("echo", "bare gRPC echo", _layer(1000, 100.0)),
            ("reply", "canned reply", _layer(800, 125.0)),
            ("full", "the whole exchange", _layer(250, 400.0)),
        ],
    )

    ratios = [
        (row["name"], row["throughput_ratio"], row["server_cpu_ratio"]) for row in part["rows"]
    ]
    assert ratios == [("echo", 1.0, 1.0), ("reply", 0.8, 0.8), ("full", 0.25, 0.25)]
    table = report.table({"exchange": [], "layers": part})
    assert "c=64" in table
    assert [
        line.split("|")[-2].strip() for line in table.splitlines() if "whole exchange" in line
    ] == ["+275"]


def test_a_results_file_without_layers_prints_no_layer_section() -> None:
    assert "where the ratio goes" not in report.table({"exchange": [], "layers": None})


def test_verification_rows_are_judged_except_the_bare_signature_ceiling() -> None:
    figure = {"per_second": 12_000.0, "p50_us": 80.0, "p99_us": 90.0}
    slow = {"per_second": 9_000.0, "p50_us": 110.0, "p99_us": 130.0}
    table = report.table(
        {"exchange": [], "verify": {"taskpass sdk": slow, report.SIGNATURE_ONLY: figure}}
    )

    [sdk] = [line for line in table.splitlines() if "taskpass sdk" in line]
    [ceiling] = [line for line in table.splitlines() if report.SIGNATURE_ONLY in line]
    assert "BELOW TARGET" in sdk
    assert "the ceiling" in ceiling and "target" not in ceiling.lower()
