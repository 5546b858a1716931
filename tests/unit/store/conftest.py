"""The store suite runs once per backend: every test taking `store` or `make_store` does.

A backend is an async context manager factory, tmp_path -> DSN of a fresh, empty database:
a SQLite file in tmp_path, or a new PostgreSQL schema (tests/support/postgres.py; skipped when
no server is reachable, failed instead when TASKPASS_REQUIRE_PG is set, as in CI).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from taskpass.server.store.base import Store
from taskpass.server.store.factory import open_store
from tests.support.postgres import fresh_schema, report_skips

Backend = Callable[[Path], AbstractAsyncContextManager[str]]


@contextlib.asynccontextmanager
async def _sqlite(tmp_path: Path) -> AsyncIterator[str]:
    yield f"sqlite:///{tmp_path / 'taskpass.db'}"


@contextlib.asynccontextmanager
async def _postgres(tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_schema() as dsn:
        yield dsn


BACKENDS = [
    pytest.param(_sqlite, id="sqlite"),
    pytest.param(_postgres, id="postgres", marks=pytest.mark.postgres),
]

StoreMaker = Callable[[], Store]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    report_skips(terminalreporter)


@pytest.fixture(params=BACKENDS)
async def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    backend: Backend = request.param
    async with backend(tmp_path) as value:
        yield value


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """For PostgreSQL-only tests: the DSN of a fresh schema (see tests/support/postgres.py)."""
    async with fresh_schema() as value:
        yield value


@pytest.fixture
def make_store(dsn: str) -> StoreMaker:
    """A new, unopened handle on the test's database (to close and reopen it)."""
    return lambda: open_store(dsn)


@pytest.fixture
async def store(make_store: StoreMaker) -> AsyncIterator[Store]:
    async with make_store() as opened:
        yield opened
