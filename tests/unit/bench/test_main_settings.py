"""`python -m bench` flags for the fan-out and replica parts, and the quick run's sizes."""

from __future__ import annotations

from typing import Any

import pytest

from bench.__main__ import _parser, _settings


def _settings_of(*argv: str) -> dict[str, Any]:
    return _settings(_parser().parse_args(list(argv)))


@pytest.mark.parametrize(
    ("argv", "subscribers", "rounds", "replica_rounds"),
    [
        pytest.param((), [100, 1000, 5000, 10000], None, 300, id="full-run"),
        pytest.param(("--quick",), [100, 1000], 20, 50, id="quick-run"),
        pytest.param(
            ("--quick", "--fanout", "5000", "--fanout-rounds", "7", "--replica-rounds", "9"),
            [5000],
            7,
            9,
            id="flags-win-over-quick",
        ),
    ],
)
def test_fanout_and_replica_settings(
    argv: tuple[str, ...], subscribers: list[int], rounds: int | None, replica_rounds: int
) -> None:
    settings = _settings_of(*argv)

    assert settings["fanout_subscribers"] == subscribers
    assert settings["fanout_rounds"] == rounds
    assert settings["replica_rounds"] == replica_rounds


def test_exchange_settings_are_those_of_before() -> None:
    # Another engineer compares exchange figures across runs of --quick: they must not move.
    settings = _settings_of("--quick")

    assert settings["levels"] == [16, 64]
    assert settings["duration_s"] == 2.0
    assert settings["repeats"] == 1
    assert settings["history_credentials"] == 100_000


@pytest.mark.parametrize("flag", ["--skip-fanout", "--skip-replicas", "--skip-layers"])
def test_skip_flags_parse(flag: str) -> None:
    args = _parser().parse_args([flag])

    assert getattr(args, flag.removeprefix("--").replace("-", "_")) is True


@pytest.mark.parametrize("value", ["0", "100,-5", ","])
def test_fanout_refuses_counts_below_one(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["--fanout", value])

    assert "give positive counts" in capsys.readouterr().err
