"""open_store: which backend a DSN selects, and the DSNs it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskpass.server.errors import ConfigError
from taskpass.server.store.factory import open_store
from taskpass.server.store.postgres import PostgresStore
from taskpass.server.store.sqlite import SqliteStore


@pytest.mark.parametrize(
    ("dsn", "path"),
    [
        pytest.param("sqlite:////var/lib/taskpass/t.db", Path("/var/lib/taskpass/t.db"), id="abs"),
        pytest.param("sqlite:///data/taskpass.db", Path("data/taskpass.db"), id="relative"),
        pytest.param("SQLite:///data/t.db", Path("data/t.db"), id="scheme-any-case"),
        pytest.param("/srv/taskpass.db", Path("/srv/taskpass.db"), id="bare-abs-path"),
        pytest.param("taskpass.db", Path("taskpass.db"), id="bare-relative-path"),
    ],
)
def test_sqlite_dsn_or_bare_path_selects_sqlite_at_that_path(dsn: str, path: Path) -> None:
    store = open_store(dsn)

    assert isinstance(store, SqliteStore)
    assert store.path == path


@pytest.mark.parametrize(
    "dsn",
    [
        pytest.param("postgresql://u:hunter2@db/taskpass", id="postgresql"),
        pytest.param("postgres://u:hunter2@db/taskpass", id="postgres"),
        pytest.param("PostgreSQL://db/taskpass?search_path=tp", id="scheme-any-case"),
    ],
)
def test_postgres_dsn_selects_postgres_without_connecting(dsn: str) -> None:
    store = open_store(dsn)

    assert isinstance(store, PostgresStore)


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        pytest.param("mysql://u:hunter2@db/taskpass", "unsupported store DSN scheme", id="mysql"),
        pytest.param("", "empty", id="empty"),
        pytest.param("sqlite://data/t.db", "three slashes", id="two-slashes"),
        pytest.param("sqlite:///", "needs a file path", id="no-path"),
        pytest.param("sqlite:///:memory:", "not in-memory", id="memory"),
        pytest.param(":memory:", "not in-memory", id="bare-memory"),
    ],
)
def test_unusable_dsn_is_a_config_error_that_never_echoes_credentials(
    dsn: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        open_store(dsn)

    assert "hunter2" not in str(caught.value)
