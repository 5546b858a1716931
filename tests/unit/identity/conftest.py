from __future__ import annotations

from pathlib import Path

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.identity.bundles import TrustBundles
from tests.support.pki import NOW, TestPki


@pytest.fixture(scope="session")
def pki() -> TestPki:
    """One PKI for the whole session: tests only read it (hostile certs are built per test)."""
    return TestPki(NOW)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def bundle_sources(pki: TestPki, tmp_path: Path) -> dict[str, list[Path]]:
    return pki.write_bundles(tmp_path / "bundles")


@pytest.fixture
def bundles(bundle_sources: dict[str, list[Path]]) -> TrustBundles:
    return TrustBundles(bundle_sources)
