"""Suite-wide: in CI (`.ci/run` sets TASKPASS_NO_SKIPS=1) a test that skips fails instead, with
its reason, so a missing tool or server can never pass CI silently."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

NO_SKIPS = "TASKPASS_NO_SKIPS"


def skips_fail() -> bool:
    return os.environ.get(NO_SKIPS, "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and skips_fail() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and {NO_SKIPS} is set (CI): {reason}"
