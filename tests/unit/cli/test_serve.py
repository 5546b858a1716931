"""`taskpass serve --log-format`: JSON lines by default, text in dev mode or when asked."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskpass.server.cli import serve
from taskpass.server.cli.main import main
from taskpass.server.config import ServerConfig
from tests.unit.test_config import MINIMAL


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access_level = logging.getLogger("taskpass.access").level
    yield
    logging.getLogger("taskpass.access").setLevel(access_level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[ServerConfig]:
    """serve_forever replaced: it logs one line and returns."""
    configs: list[ServerConfig] = []

    async def fake(config: ServerConfig, stop_signals: object = ()) -> None:
        configs.append(config)
        logging.getLogger("taskpass.server").info("taskpass serving: test")

    monkeypatch.setattr(serve, "serve_forever", fake)
    return configs


@pytest.mark.parametrize(
    ("extra", "json_lines"),
    [
        pytest.param([], True, id="json-by-default"),
        pytest.param(["--log-format", "text"], False, id="text-when-asked"),
    ],
)
def test_serve_logs_json_lines_unless_asked_for_text(
    tmp_path: Path,
    served: list[ServerConfig],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    json_lines: bool,
) -> None:
    config = tmp_path / "taskpass.toml"
    config.write_text(MINIMAL)

    assert main(["serve", "--config", str(config), *extra]) == 0

    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert served and not served[0].dev_mode
    if json_lines:
        assert json.loads(line)["msg"] == "taskpass serving: test"
    else:
        assert line.endswith("INFO taskpass.server: taskpass serving: test")


def test_dev_mode_logs_text_by_default(
    tmp_path: Path,
    served: list[ServerConfig],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--dev"]) == 0
    assert served[0].dev_mode
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith("taskpass serving: test")
    assert not line.startswith("{")


def test_no_access_log_silences_the_per_call_line_only(
    tmp_path: Path, served: list[ServerConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "taskpass.toml"
    config.write_text(MINIMAL)

    assert main(["serve", "--config", str(config), "--no-access-log"]) == 0

    assert not logging.getLogger("taskpass.access").isEnabledFor(logging.INFO)
    assert logging.getLogger("taskpass.server").isEnabledFor(logging.INFO)
    assert "taskpass serving" in capsys.readouterr().err
