"""Config for operations: [limits] (per-identity rate), [health], [shutdown]."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from taskpass.server.config import HealthConfig, LimitsConfig, ShutdownConfig, parse_config
from taskpass.server.errors import ConfigError
from tests.unit.test_config import MINIMAL


def test_without_the_tables_there_is_no_rate_limit_and_default_intervals(tmp_path: Path) -> None:
    config = parse_config(MINIMAL, base_dir=tmp_path)
    assert config.limits == LimitsConfig(exchanges_per_second=None)
    assert config.health == HealthConfig(check_interval=dt.timedelta(seconds=5))
    assert config.shutdown == ShutdownConfig(grace=dt.timedelta(seconds=10))


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        pytest.param(
            "exchanges_per_second = 20\nburst = 5",
            LimitsConfig(exchanges_per_second=20.0, burst=5),
            id="rate-and-burst",
        ),
        pytest.param(
            "exchanges_per_second = 2.5",
            LimitsConfig(exchanges_per_second=2.5, burst=5),
            id="burst-defaults-to-twice-the-rate",
        ),
        pytest.param(
            "exchanges_per_second = 0.1",
            LimitsConfig(exchanges_per_second=0.1, burst=1),
            id="burst-at-least-one",
        ),
        pytest.param(
            "exchanges_per_second = 1000000",
            LimitsConfig(exchanges_per_second=1e6, burst=1_000_000),
            id="burst-default-within-its-bound",
        ),
    ],
)
def test_limits_table(tmp_path: Path, table: str, expected: LimitsConfig) -> None:
    config = parse_config(f"{MINIMAL}\n[limits]\n{table}\n", base_dir=tmp_path)
    assert config.limits == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "[limits]\nburst = 3",
            "limits.burst needs limits.exchanges_per_second",
            id="burst-alone",
        ),
        pytest.param(
            "[limits]\nexchanges_per_second = 0",
            "limits.exchanges_per_second must be a positive number",
            id="zero-is-not-unlimited",
        ),
        pytest.param(
            "[limits]\nexchanges_per_second = inf",
            "limits.exchanges_per_second must be a positive number",
            id="infinite",
        ),
        pytest.param(
            '[limits]\nexchanges_per_second = "10"',
            "limits.exchanges_per_second must be a positive number",
            id="string",
        ),
        pytest.param(
            "[limits]\nexchanges_per_second = 1\nburst = 0",
            "limits.burst must be a positive integer",
            id="zero-burst",
        ),
        pytest.param("[limits]\nrate = 1", "unknown key(s) limits.rate", id="unknown-key"),
        pytest.param(
            "[health]\ncheck_seconds = 0", "health.check_seconds must be greater than zero", id="h0"
        ),
        pytest.param(
            "[shutdown]\ngrace_seconds = -1",
            "shutdown.grace_seconds must be a non-negative number",
            id="negative-grace",
        ),
    ],
)
def test_a_bad_operations_key_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(f"{MINIMAL}\n{text}\n", base_dir=tmp_path)


def test_health_and_shutdown_tables(tmp_path: Path) -> None:
    text = f"{MINIMAL}\n[health]\ncheck_seconds = 0.5\n[shutdown]\ngrace_seconds = 0\n"
    config = parse_config(text, base_dir=tmp_path)
    assert config.health.check_interval == dt.timedelta(seconds=0.5)
    assert config.shutdown.grace == dt.timedelta(0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "[health]\ncheck_seconds = 3601",
            "config: health.check_seconds must be at most 3600 seconds (1 hour)",
            id="health-check-over-an-hour",
        ),
        pytest.param(
            "[health]\ncheck_seconds = 1e-9",
            "config: health.check_seconds must be greater than zero",
            id="health-check-rounds-to-zero",
        ),
        pytest.param(
            "[shutdown]\ngrace_seconds = 1e15",  # timedelta would raise OverflowError
            "config: shutdown.grace_seconds must be at most 3600 seconds (1 hour)",
            id="shutdown-grace-beyond-timedelta",
        ),
        pytest.param(
            f"[limits]\nexchanges_per_second = 1{'0' * 400}",  # float() would overflow
            "config: limits.exchanges_per_second must be at most 1000000; "
            "to set no limit, leave it out",
            id="rate-beyond-float",
        ),
        pytest.param(
            "[limits]\nexchanges_per_second = 1e7",
            "config: limits.exchanges_per_second must be at most 1000000; "
            "to set no limit, leave it out",
            id="rate-that-limits-nothing",
        ),
        pytest.param(
            f"[limits]\nexchanges_per_second = 10\nburst = 1{'0' * 400}",
            "config: limits.burst must be at most 1000000",
            id="burst-beyond-float",
        ),
    ],
)
def test_an_operations_value_beyond_its_bound_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"{MINIMAL}\n{text}\n", base_dir=tmp_path)
    assert info.value.message == message


def test_the_operations_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    text = (
        f"{MINIMAL}\n[health]\ncheck_seconds = 3600\n[shutdown]\ngrace_seconds = 3600\n"
        "[limits]\nexchanges_per_second = 1000000\nburst = 1000000\n"
    )
    config = parse_config(text, base_dir=tmp_path)
    assert config.health.check_interval == dt.timedelta(hours=1)
    assert config.shutdown.grace == dt.timedelta(hours=1)
    assert config.limits == LimitsConfig(exchanges_per_second=1e6, burst=1_000_000)
