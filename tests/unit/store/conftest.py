"""The store suite runs once per backend: every test taking `store` or `make_store` does.

A backend is a function tmp_path -> DSN of a fresh, empty database. Adding PostgreSQL is one
line in BACKENDS, with a `_postgres` that creates a fresh database from TASKPASS_TEST_PG_DSN:
    pytest.param(_postgres, id="postgres", marks=pytest.mark.postgres),
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from taskpass.server.store.base import Store
from taskpass.server.store.factory import open_store


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'taskpass.db'}"


BACKENDS = [
    pytest.param(_sqlite, id="sqlite"),
]

StoreMaker = Callable[[], Store]


@pytest.fixture(params=BACKENDS)
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    backend: Callable[[Path], str] = request.param
    return backend(tmp_path)


@pytest.fixture
def make_store(dsn: str) -> StoreMaker:
    """A new, unopened handle on the test's database (to close and reopen it)."""
    return lambda: open_store(dsn)


@pytest.fixture
async def store(make_store: StoreMaker) -> AsyncIterator[Store]:
    async with make_store() as opened:
        yield opened
