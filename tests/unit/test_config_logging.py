"""Config for logging: [logging] access_log says which calls get an access line."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskpass.server.config import LoggingConfig, parse_config
from taskpass.server.errors import ConfigError
from tests.unit.test_config import MINIMAL


def test_by_default_only_calls_that_did_not_end_ok_get_an_access_line(tmp_path: Path) -> None:
    assert parse_config(MINIMAL, base_dir=tmp_path).logging == LoggingConfig(access_log="failures")


@pytest.mark.parametrize(
    "value", [pytest.param("all", id="all"), pytest.param("failures", id="failures")]
)
def test_access_log_takes_all_or_failures(tmp_path: Path, value: str) -> None:
    config = parse_config(f'{MINIMAL}\n[logging]\naccess_log = "{value}"\n', base_dir=tmp_path)
    assert config.logging.access_log == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            'access_log = "none"',
            'logging.access_log must be "failures" or "all"',
            id="unknown-value",
        ),
        pytest.param(
            "access_log = true", "logging.access_log must be a non-empty string", id="not-a-string"
        ),
        pytest.param('level = "debug"', "logging.level", id="unknown-key"),
    ],
)
def test_a_bad_logging_table_is_refused_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f"{MINIMAL}\n[logging]\n{text}\n", base_dir=tmp_path)
