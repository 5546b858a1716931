from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.harness import Harness, live_pki, start_harness
from tests.support.pki import TestPki


@pytest.fixture(scope="session")
def pki() -> TestPki:
    return live_pki()


@pytest.fixture
async def harness(tmp_path: Path, pki: TestPki) -> AsyncIterator[Harness]:
    running = await start_harness(tmp_path, pki)
    try:
        yield running
    finally:
        await running.server.stop(grace=0.5)
